"""Operator scale: kubetune's operator against the Kubeflow training-operator, side by side.

    .venv/bin/python bench/operator_scale.py --n 100 1000 [5000] [--peer-config equal defaults]

Starts one test control plane (tests/cluster: etcd, kube-apiserver with an audit log,
kube-controller-manager, kube-scheduler, kwok with GPU nodes big enough for every
job), then for each N and each controller, in its own namespace and with the
controller as its own process watching only that namespace:

- kubetune: N local FineTuneJobs (tests/factories' job: 1 GPU, ConfigMap data, PVC
  output) created as fast as the client goes (`--concurrency` requests in flight);
- training-operator: N single-replica PyTorchJobs (Master: 1) whose pod template is
  the one kubetune puts in its training Job, for the same N. The peer is built from
  its Go module by `tests/cluster/build.sh trainingoperator`; its CRD is the one
  its module ships.

The benchmark plays the trainer: every training pod that runs is ended with exit
code 0 (the kwok annotation `kwok.kubetune.io/exit-code`), so each job goes through
its whole successful lifecycle. Figures per controller:

- time from the first create until every training pod exists, and jobs/s over it;
- create -> child latency p50/p99 (clock read just before each create, first sight
  on a watch): the child is the batch Job for kubetune and the pod for the peer
  (which makes pods itself); create -> pod is given for both;
- time until every job reports success (FineTuneJob Succeeded with its model
  registered; PyTorchJob condition Succeeded);
- the controller's CPU-seconds (utime + stime, /proc) and peak RSS (VmHWM) over
  the lifecycle, and RSS per 1,000 objects ((RSS when settled - RSS idle) / N);
- API requests per job lifecycle by verb, from the API server's audit log: each
  controller runs under its own ServiceAccount and the audit policy records only
  those, so no other client is counted. `apiserver_request_total` has no client
  label; its delta (all clients: controller-manager, scheduler, kwok, this script)
  per job is printed beside it as the whole control plane's cost of one job;
- restart: SIGTERM, start again with the N finished jobs present, time from the
  spawn until the process is idle (under 2% of a core for 3 s), and the writes it
  made meanwhile (an idempotent controller makes none), plus RSS once idle.

Client limits: neither Kopf's client nor ours (k8s.py) has a client-side rate
limiter, so "equal" runs the peer with client-go's limiter off (`--kube-api-qps=-1`)
and `--peer-threads` reconcile workers (kubetune handles up to `--workers`, 20,
objects of each kind at once, over at most 20 connections of its own); "defaults"
runs it as upstream ships it (20 QPS, burst 30, 1 worker). Wall-clock figures are
noisy on a shared 2-core machine: compare the ratios of one run. Every process this
script starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from kubetune.api.finetunejob import FineTuneJobSpec
from kubetune.backends.local.manifests import FINETUNEJOB_LABEL, build_training_job
from kubetune.localcluster import controlplane
from kubetune.localcluster.binaries import find_binaries
from kubetune.localcluster.controlplane import ControlPlane, free_port
from kubetune.localcluster.nodes import build_node
from kubetune.localcluster.operatorproc import start_operator
from kubetune.localcluster.pki import pki_in
from kubetune.localcluster.storage import build_static_pv
from kubetune.settings import LocalSettings

ROOT = Path(__file__).resolve().parent.parent
KWOK_STAGES = ROOT / "tests" / "cluster" / "kwok" / "stages.yaml"
PEER_MODULE = ROOT / "tests" / "cluster" / "trainingoperator"
PEER_GO_MODULE = "github.com/kubeflow/training-operator"
PEER_CRD = "crd/pytorchjobs.kubeflow.org"
DATA = ROOT / "examples" / "00-xbox-data.yaml"
PVC = ROOT / "examples" / "01-output-pvc.yaml"
OUTPUT_CLAIM = "kubetune-models"
ACCOUNTS_NS = "bench-controllers"
PEER_JOB_LABEL = "training.kubeflow.org/job-name"
EXIT_ANNOTATION = "kwok.kubetune.io/exit-code"
WRITES = frozenset({"create", "update", "patch", "delete", "deletecollection"})
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
PODS_PER_NODE = 1000
IDLE_WINDOW = 3.0
IDLE_SHARE = 0.02
AUDIT_POLICY = f"""apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: ["system:serviceaccounts:{ACCOUNTS_NS}"]
- level: None
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# The controllers: how to start each, what it reconciles, how its jobs look.


@dataclass(frozen=True)
class Controller:
    key: str
    """Column name and namespace prefix."""
    peer_args: tuple[str, ...] = ()
    """Empty for kubetune; the training-operator's flags otherwise."""

    @property
    def is_peer(self) -> bool:
        return bool(self.peer_args)

    @property
    def collection(self) -> tuple[str, str]:
        return (
            ("kubeflow.org/v1", "pytorchjobs")
            if self.is_peer
            else (
                "kubetune.io/v1alpha1",
                "finetunejobs",
            )
        )


def ftj_spec() -> dict[str, Any]:
    """tests/factories.make_finetunejob's spec."""
    data = yaml.safe_load(DATA.read_text())
    return {
        "backend": "local",
        "baseModel": "microsoft/Phi-3-mini-4k-instruct",
        "dataset": {
            "training": {"configMap": {"name": data["metadata"]["name"], "key": "train.jsonl"}},
            "validationSplit": 0.1,
        },
        "resources": {"gpus": 1},
        "output": {"pvc": {"claimName": OUTPUT_CLAIM, "path": "adapters"}},
    }


def build_manifest(ctl: Controller, name: str, namespace: str, spec: dict[str, Any]) -> Any:
    if not ctl.is_peer:
        return {
            "apiVersion": "kubetune.io/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": name},
            "spec": spec,
        }
    job = build_training_job(
        name=name,
        namespace=namespace,
        uid="",
        labels={},
        spec=FineTuneJobSpec.model_validate(spec),
        settings=LocalSettings(),
    )
    template = job["spec"]["template"]
    template["metadata"]["labels"] = {}
    template["spec"]["containers"][0]["name"] = "pytorch"  # the PyTorchJob's container
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "restartPolicy": "Never", "template": template}
            }
        },
    }


def succeeded(ctl: Controller, obj: dict[str, Any]) -> bool | None:
    """True when the job succeeded, False when it failed, None while it runs."""
    status = obj.get("status") or {}
    if not ctl.is_peer:
        phase = status.get("phase")
        if phase == "Succeeded" and status.get("model"):
            return True
        return False if phase in ("Failed", "Cancelled") else None
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Succeeded") == "True":
        return True
    return False if conditions.get("Failed") == "True" else None


# The process under test: CPU time and memory from /proc, idleness.


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    spawned: float

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def memory(self, key: str) -> float:
        """VmRSS or VmHWM, in MB."""
        for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(key)

    async def idle(self, timeout: float) -> float:
        """Wait until the process used under IDLE_SHARE of a core for IDLE_WINDOW seconds;
        returns the monotonic time at which that quiet window began."""
        samples: list[tuple[float, float]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"controller exited with {self.popen.returncode}")
            now = time.monotonic()
            samples.append((now, self.cpu()))
            old = [s for s in samples if s[0] <= now - IDLE_WINDOW]
            if old and samples[-1][1] - old[-1][1] <= IDLE_WINDOW * IDLE_SHARE:
                # The last sample before the quiet stretch began.
                quiet = [s for s in samples if s[1] < samples[-1][1]]
                return quiet[-1][0] if quiet else old[-1][0]
            await asyncio.sleep(0.2)
        raise TimeoutError(f"controller not idle after {timeout:.0f}s")

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()


# The cluster: control plane, nodes, identities, per-run namespaces.


@dataclass
class Bench:
    cp: ControlPlane
    peer_binary: Path
    audit_log: Path
    workdir: Path
    ssl: ssl.SSLContext
    session: aiohttp.ClientSession = field(init=False)

    async def request(self, method: str, url: str, body: Any = None, **kw: Any) -> Any:
        headers = {"Content-Type": kw.pop("content_type", "application/json")}
        async with self.session.request(
            method, self.cp.server + url, json=body, headers=headers, **kw
        ) as r:
            if r.status >= 400:
                raise RuntimeError(f"{method} {url}: {r.status} {await r.text()}")
            return await r.json(content_type=None)

    def kubeconfig_for(self, account: str) -> Path:
        """A kubeconfig with a token of ServiceAccount `account` (cluster-admin)."""
        self.cp.kubectl("create", "serviceaccount", account, "-n", ACCOUNTS_NS)
        token = self.cp.kubectl(
            "create", "token", account, "-n", ACCOUNTS_NS, "--duration=24h"
        ).stdout.strip()
        path = self.workdir / f"{account}.kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "bench",
                    "cluster": {
                        "server": self.cp.server,
                        "certificate-authority": str(pki_in(self.cp.workdir / "pki").ca_cert),
                    },
                }
            ],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": account}}],
            "current-context": "bench",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def prepare_namespace(self, namespace: str, dataset_kib: int) -> None:
        """The namespace with the training data ConfigMap (`dataset_kib` KiB bigger, in a
        key no job reads) and a bound output PVC."""
        self.cp.kubectl("create", "namespace", namespace)
        data = yaml.safe_load(DATA.read_text())
        data["data"]["padding.txt"] = "x" * (dataset_kib * 1024)
        self.cp.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(data))
        pv = build_static_pv(namespace, OUTPUT_CLAIM)
        self.cp.kubectl("apply", "-f", "-", input=json.dumps(pv))
        self.cp.kubectl("apply", "-n", namespace, "-f", str(PVC))
        self.cp.kubectl(
            "wait",
            "-n",
            namespace,
            "--for=jsonpath={.status.phase}=Bound",
            "--timeout=60s",
            f"pvc/{OUTPUT_CLAIM}",
        )
        sa = f"serviceaccount/default -n {namespace}".split()
        deadline = time.monotonic() + 60
        while self.cp.kubectl("get", *sa, check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no default ServiceAccount in {namespace}")
            time.sleep(0.2)

    def start_controller(self, ctl: Controller, kubeconfig: Path, namespace: str) -> Proc:
        log_path = self.workdir / f"{namespace}.log"
        spawned = time.monotonic()
        if not ctl.is_peer:
            popen = start_operator(
                kubeconfig,
                http_port=free_port(),
                log_path=log_path,
                args=("--namespace", namespace),
            )
            return Proc(popen, spawned)
        port = free_port()
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                [
                    str(self.peer_binary),
                    f"--namespace={namespace}",
                    f"--health-probe-bind-address=127.0.0.1:{port}",
                    *ctl.peer_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "KUBECONFIG": str(kubeconfig)},
                start_new_session=True,
            )
        proc = Proc(popen, spawned)
        deadline = time.monotonic() + 60
        while True:
            if popen.poll() is not None:
                raise RuntimeError(f"training-operator exited; see {log_path}")
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2),
            ):
                return proc
            if time.monotonic() > deadline:
                proc.stop()
                raise RuntimeError(f"training-operator not ready; see {log_path}")
            time.sleep(0.2)

    async def request_totals(self) -> Counter[str]:
        """apiserver_request_total summed by verb, all clients."""
        async with self.session.get(self.cp.server + "/metrics") as r:
            text = await r.text()
        totals: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("apiserver_request_total{"):
                labels, value = line.rsplit(" ", 1)
                verb = labels.split('verb="', 1)[1].split('"', 1)[0].lower()
                totals[verb] += int(float(value))
        return totals


def start_cluster(workdir: Path, max_n: int) -> Bench:
    binaries = find_binaries()
    built = subprocess.run(
        ["bash", str(ROOT / "tests" / "cluster" / "build.sh"), "trainingoperator"],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    peer_binary = Path(built.stdout.strip().splitlines()[-1]) / "training-operator"
    policy = workdir / "audit-policy.yaml"
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(AUDIT_POLICY)
    audit_log = workdir / "audit.log"
    cp = controlplane.start(
        workdir / "control-plane",
        binaries,
        KWOK_STAGES,
        log=log,
        crds=ROOT / "crds",
        apiserver_args=(f"--audit-policy-file={policy}", f"--audit-log-path={audit_log}"),
    )
    try:
        crd_dir = subprocess.run(
            ["go", "list", "-m", "-f", "{{.Dir}}", PEER_GO_MODULE],
            cwd=PEER_MODULE,
            env={**os.environ, "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"},
            stdout=subprocess.PIPE,
            text=True,
            check=True,
        ).stdout.strip()
        crd = Path(crd_dir) / "manifests" / "base" / "crds" / "kubeflow.org_pytorchjobs.yaml"
        cp.kubectl("apply", "--server-side", "-f", str(crd))
        deadline = time.monotonic() + 60
        # `kubectl wait` fails at once while the new CRD has no conditions yet.
        while cp.kubectl(
            "wait", "--for=condition=Established", "--timeout=5s", PEER_CRD, check=False
        ).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{PEER_CRD} did not become Established")
            time.sleep(0.5)
        nodes = []
        for i in range(math.ceil(max_n / PODS_PER_NODE)):
            node = build_node(f"kwok-bench-{i}", cpu="100000", memory="100Ti", gpus=PODS_PER_NODE)
            node["status"]["capacity"]["pods"] = str(PODS_PER_NODE)
            nodes.append(node)
        cp.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps({"kind": "List", "apiVersion": "v1", "items": nodes}),
        )
        cp.kubectl("create", "namespace", ACCOUNTS_NS)
        cp.kubectl(
            "create",
            "clusterrolebinding",
            "bench-controllers",
            "--clusterrole=cluster-admin",
            f"--group=system:serviceaccounts:{ACCOUNTS_NS}",
        )
        pki = pki_in(cp.workdir / "pki")
        ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
        ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    except BaseException:
        controlplane.stop(cp)
        raise
    return Bench(cp, peer_binary, audit_log, workdir, ctx)


# One run: N jobs through one controller.


@dataclass
class Run:
    ctl: Controller
    n: int
    namespace: str
    created: dict[str, float] = field(default_factory=dict)
    child_seen: dict[str, float] = field(default_factory=dict)
    pod_seen: dict[str, float] = field(default_factory=dict)
    done: dict[str, float] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)
    finishing: set[str] = field(default_factory=set)
    figures: dict[str, float] = field(default_factory=dict)
    all_pods: asyncio.Event = field(default_factory=asyncio.Event)
    all_done: asyncio.Event = field(default_factory=asyncio.Event)


async def watch(
    bench: Bench, url: str, on_event: Callable[[dict[str, Any]], None], stop: asyncio.Event
) -> None:
    """List, then watch from that resourceVersion (again after a break) until `stop`."""
    listed = await bench.request("GET", url)
    for obj in listed["items"]:
        on_event(obj)
    version = listed["metadata"]["resourceVersion"]
    while not stop.is_set():
        params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true"}
        async with bench.session.get(bench.cp.server + url, params=params) as r:
            async for line in r.content:
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch {url}: {obj}")
                version = obj["metadata"]["resourceVersion"]
                if event["type"] in ("ADDED", "MODIFIED"):
                    on_event(obj)
                if stop.is_set():
                    return


async def drive(bench: Bench, run: Run, concurrency: int, timeout: float) -> None:
    """Create the N jobs, end each training pod with exit code 0, until every job is done."""
    ctl, ns = run.ctl, run.namespace
    api_version, plural = ctl.collection
    collection = f"/apis/{api_version}/namespaces/{ns}/{plural}"
    label = PEER_JOB_LABEL if ctl.is_peer else FINETUNEJOB_LABEL
    limit = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()

    async def finish(pod: str) -> None:
        async with limit:
            await bench.request(
                "PATCH",
                f"/api/v1/namespaces/{ns}/pods/{pod}",
                {"metadata": {"annotations": {EXIT_ANNOTATION: "0"}}},
                content_type="application/merge-patch+json",
            )

    def on_pod(pod: dict[str, Any]) -> None:
        job = (pod["metadata"].get("labels") or {}).get(label)
        if job is None:
            return
        run.pod_seen.setdefault(job, time.monotonic())
        if ctl.is_peer:
            run.child_seen.setdefault(job, run.pod_seen[job])
        if len(run.pod_seen) == run.n:
            run.all_pods.set()
        name = pod["metadata"]["name"]
        if (pod.get("status") or {}).get("phase") == "Running" and name not in run.finishing:
            run.finishing.add(name)
            task = asyncio.create_task(finish(name))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def on_job(job: dict[str, Any]) -> None:
        run.child_seen.setdefault(job["metadata"]["name"], time.monotonic())

    def on_cr(obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        verdict = succeeded(ctl, obj)
        if verdict is True:
            run.done.setdefault(name, time.monotonic())
        elif verdict is False:
            run.failed.add(name)
        if len(run.done) + len(run.failed) == run.n:
            run.all_done.set()

    stop = asyncio.Event()
    watches = [
        asyncio.create_task(watch(bench, f"/api/v1/namespaces/{ns}/pods", on_pod, stop)),
        asyncio.create_task(watch(bench, collection, on_cr, stop)),
    ]
    if not ctl.is_peer:
        watches.append(
            asyncio.create_task(watch(bench, f"/apis/batch/v1/namespaces/{ns}/jobs", on_job, stop))
        )
    spec = ftj_spec()
    manifests = [build_manifest(ctl, f"job-{i:05d}", ns, spec) for i in range(run.n)]
    await asyncio.sleep(0.5)  # the watches are open

    async def create(manifest: dict[str, Any]) -> None:
        async with limit:
            run.created[manifest["metadata"]["name"]] = time.monotonic()
            await bench.request("POST", collection, manifest)

    await asyncio.gather(*(create(m) for m in manifests))
    log(f"{ns}: {run.n} created in {max(run.created.values()) - min(run.created.values()):.1f}s")
    try:
        await asyncio.wait_for(run.all_pods.wait(), timeout)
        log(f"{ns}: every training pod exists")
        await asyncio.wait_for(run.all_done.wait(), timeout)
        log(f"{ns}: every job done ({len(run.failed)} failed)")
    except TimeoutError:
        log(f"{ns}: timed out: {len(run.pod_seen)} pods, {len(run.done)} succeeded")
    finally:
        stop.set()
        pending = [*watches, *tasks]  # after a timeout or Ctrl-C, pods may still be ending
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Audit:
    path: Path
    offset: int = 0

    def read(self, user: str) -> list[tuple[float, str, str]]:
        """(request time, verb, resource) of each request by `user` logged since the last
        read."""
        seen: dict[str, tuple[float, str, str]] = {}
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].splitlines():
            event = json.loads(line)
            if event["user"]["username"] != user:
                continue
            stamp = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            resource = (event.get("objectRef") or {}).get("resource", "")
            seen.setdefault(event["auditID"], (stamp.timestamp(), event["verb"], resource))
        return list(seen.values())


def by_verb(requests: list[tuple[float, str, str]], per: int) -> dict[str, float]:
    counts = Counter(verb for _, verb, _ in requests)
    out = {verb: counts.get(verb, 0) / per for verb in VERBS}
    out["total"] = len(requests) / per
    out["writes"] = sum(c for v, c in counts.items() if v in WRITES) / per
    out["event writes"] = sum(1 for _, v, r in requests if v in WRITES and r == "events") / per
    return out


async def measure(bench: Bench, ctl: Controller, n: int, args: argparse.Namespace) -> Run:
    namespace = f"{ctl.key}-{n}"
    run = Run(ctl, n, namespace)
    bench.prepare_namespace(namespace, args.dataset_kib)
    account = f"{ctl.key}-{n}"
    user = f"system:serviceaccount:{ACCOUNTS_NS}:{account}"
    kubeconfig = bench.kubeconfig_for(account)
    audit = Audit(bench.audit_log, bench.audit_log.stat().st_size)
    proc = bench.start_controller(ctl, kubeconfig, namespace)
    f = run.figures
    try:
        await proc.idle(120)
        cpu0, rss_idle = proc.cpu(), proc.memory("VmRSS")
        totals0 = await bench.request_totals()
        await drive(bench, run, args.concurrency, args.timeout)
        await proc.idle(args.timeout)
        totals1 = await bench.request_totals()
        t0 = min(run.created.values())
        f["create s"] = max(run.created.values()) - t0
        f["all pods s"] = max(run.pod_seen.values()) - t0 if run.all_pods.is_set() else math.nan
        f["jobs/s to pods"] = n / f["all pods s"]
        child = [run.child_seen[k] - run.created[k] for k in run.child_seen]
        pods = [run.pod_seen[k] - run.created[k] for k in run.pod_seen]
        f["child p50 ms"] = 1000 * percentile(child, 0.5)
        f["child p99 ms"] = 1000 * percentile(child, 0.99)
        f["pod p50 ms"] = 1000 * percentile(pods, 0.5)
        f["pod p99 ms"] = 1000 * percentile(pods, 0.99)
        f["all done s"] = max(run.done.values()) - t0 if run.all_done.is_set() else math.nan
        f["succeeded"] = len(run.done)
        f["cpu s"] = proc.cpu() - cpu0
        f["cpu ms/job"] = 1000 * f["cpu s"] / n
        f["rss idle MB"] = rss_idle
        f["rss settled MB"] = proc.memory("VmRSS")
        f["peak rss MB"] = proc.memory("VmHWM")
        f["rss MB/1k obj"] = 1000 * (f["rss settled MB"] - rss_idle) / n
        for verb, value in by_verb(audit.read(user), n).items():
            f[f"api {verb}/job"] = value
        f["apiserver_request_total/job"] = sum((totals1 - totals0).values()) / n
        # Restart with the N finished jobs present.
        proc.stop()
        restart = bench.start_controller(ctl, kubeconfig, namespace)
        proc = restart
        quiet = await restart.idle(args.timeout)
        f["restart to idle s"] = quiet - restart.spawned
        relist = audit.read(user)
        f["restart requests"] = len(relist)
        f["restart writes"] = sum(1 for _, verb, _ in relist if verb in WRITES)
        f["restart rss MB"] = restart.memory("VmRSS")
    finally:
        proc.stop()
    return run


ROWS = (
    ("create s", "{:.1f}", "creating the N objects (client side)"),
    ("all pods s", "{:.1f}", "first create -> every training pod exists"),
    ("jobs/s to pods", "{:.1f}", "N / that"),
    ("child p50 ms", "{:.0f}", "create -> Job (kubetune) / pod (peer), p50"),
    ("child p99 ms", "{:.0f}", "same, p99"),
    ("pod p50 ms", "{:.0f}", "create -> training pod, p50"),
    ("pod p99 ms", "{:.0f}", "create -> training pod, p99"),
    ("all done s", "{:.1f}", "first create -> every job succeeded"),
    ("succeeded", "{:.0f}", "jobs that succeeded"),
    ("cpu s", "{:.1f}", "controller CPU-seconds, whole lifecycle"),
    ("cpu ms/job", "{:.1f}", "same per job"),
    ("rss idle MB", "{:.0f}", "RSS before the first create"),
    ("peak rss MB", "{:.0f}", "peak RSS (VmHWM)"),
    ("rss MB/1k obj", "{:.1f}", "(settled RSS - idle RSS) per 1,000 jobs"),
    ("api total/job", "{:.2f}", "controller's API requests per job (audit log)"),
    ("api writes/job", "{:.2f}", "of which writes (create/update/patch/delete)"),
    ("api event writes/job", "{:.2f}", "of the writes, Events posted"),
    *((f"api {v}/job", "{:.2f}", f"  {v}") for v in VERBS),
    ("apiserver_request_total/job", "{:.1f}", "all clients' requests per job (metric delta)"),
    ("restart to idle s", "{:.1f}", "restart with N done jobs: spawn -> idle"),
    ("restart requests", "{:.0f}", "its API requests"),
    ("restart writes", "{:.0f}", "of which writes"),
    ("restart rss MB", "{:.0f}", "RSS once idle after the restart"),
)


def table(runs: list[Run]) -> str:
    lines: list[str] = []
    for n in sorted({r.n for r in runs}):
        group = [r for r in runs if r.n == n]
        ours = next(r for r in group if not r.ctl.is_peer)
        peers = [r for r in group if r.ctl.is_peer]
        head = ["N=" + f"{n:,}", "kubetune"]
        for p in peers:
            head += [p.ctl.key, "ratio"]
        lines.append(" | ".join(head))
        lines.append(" | ".join(["---"] * len(head)))
        for key, fmt, label in ROWS:
            row = [label, fmt.format(ours.figures.get(key, math.nan))]
            for p in peers:
                theirs = p.figures.get(key, math.nan)
                mine = ours.figures.get(key, math.nan)
                ratio = mine / theirs if theirs else math.nan
                row += [fmt.format(theirs), f"{ratio:.2f}"]
            lines.append(" | ".join(row))
        lines.append("")
    return "\n".join(lines)


PEER_CONFIGS = ("equal", "defaults")


def peer_args(config: str, threads: int) -> tuple[str, ...]:
    """The peer's flags: "equal" turns client-go's rate limiter off, as Kopf has none,
    with `threads` workers; "defaults" is upstream's (20 QPS, burst 30, 1 worker)."""
    if config == "equal":
        return ("--kube-api-qps=-1", "--kube-api-burst=0", f"--controller-threads={threads}")
    return ("--kube-api-qps=20", "--kube-api-burst=30", "--controller-threads=1")


async def bench_all(args: argparse.Namespace, workdir: Path) -> list[Run]:
    bench = start_cluster(workdir, max(args.n))
    runs: list[Run] = []
    connector = aiohttp.TCPConnector(ssl=bench.ssl, limit=args.concurrency + 10)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    try:
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, read_bufsize=2**20
        ) as session:
            bench.session = session
            controllers = [Controller("kubetune")] + [
                Controller(f"peer-{c}", peer_args(c, args.peer_threads)) for c in args.peer_config
            ]
            for n in args.n:
                for ctl in controllers:
                    log(f"{ctl.key}: N={n}")
                    runs.append(await measure(bench, ctl, n, args))
                    print(
                        json.dumps({"controller": ctl.key, "n": n, **runs[-1].figures}), flush=True
                    )
    finally:
        controlplane.stop(bench.cp)
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--peer-config", nargs="*", choices=PEER_CONFIGS, default=["equal"])
    parser.add_argument("--peer-threads", type=int, default=16, help="peer workers when equal")
    parser.add_argument("--concurrency", type=int, default=100, help="requests in flight")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per wait")
    parser.add_argument("--workdir", type=Path, help="keep logs here (default: a temp dir)")
    parser.add_argument(
        "--dataset-kib", type=int, default=0, help="make the data ConfigMap this much bigger"
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        runs = asyncio.run(bench_all(args, workdir))
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
