"""Starts and stops the local control plane's processes, all on loopback with free ports.

`start()` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and
kwok in that order, each in its own process group with its log in the work
directory, and returns once the API server is ready, pods can be admitted (the
`default` ServiceAccount exists) and the simulated nodes are Ready. `stop()` ends
every process it started. The state is JSON-serialisable so that `kubetune dev
down` can stop what `kubetune dev up` started from another process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kubetune.localcluster.nodes import build_fake_nodes
from kubetune.localcluster.pki import Pki, make_pki, pki_in, write_kubeconfig

Log = Callable[[str], None]

KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node=fake"


class ControlPlaneError(RuntimeError):
    """A component did not start; the message names it and its log file."""


@dataclass
class ControlPlane:
    workdir: Path
    kubeconfig: Path
    server: str
    kubectl_path: Path
    pids: dict[str, int] = field(default_factory=dict)
    # Popen handles exist only in the process that started the components; they
    # let stop() reap its children instead of leaving zombies behind.
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane."""
        done = subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done

    def save(self, path: Path) -> None:
        state = {
            "workdir": str(self.workdir),
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "kubectl_path": str(self.kubectl_path),
            "pids": self.pids,
        }
        path.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, path: Path) -> ControlPlane:
        state = json.loads(path.read_text())
        return cls(
            workdir=Path(state["workdir"]),
            kubeconfig=Path(state["kubeconfig"]),
            server=state["server"],
            kubectl_path=Path(state["kubectl_path"]),
            pids={k: int(v) for k, v in state["pids"].items()},
        )

    def running(self) -> dict[str, bool]:
        """Component -> whether its process is alive."""
        return {name: is_alive(pid) for name, pid in self.pids.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes; /proc tells them apart on Linux.
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _ssl_context(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None) -> int:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=5) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def _wait(what: str, check: Callable[[], bool], timeout: float, cp: ControlPlane) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cp.procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"{name} exited with {proc.returncode} while waiting for {what}; "
                    f"see {cp.workdir / (name + '.log')}"
                )
        if check():
            return
        time.sleep(0.25)
    raise ControlPlaneError(
        f"timed out after {timeout:.0f}s waiting for {what} (logs in {cp.workdir})"
    )


def _spawn(cp: ControlPlane, name: str, argv: Sequence[str | Path]) -> None:
    with (cp.workdir / f"{name}.log").open("ab") as log:
        proc = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cp.workdir,
            start_new_session=True,
        )
    cp.procs[name] = proc
    cp.pids[name] = proc.pid


def start(
    workdir: Path,
    binaries: dict[str, Path],
    kwok_stages: Path,
    *,
    log: Log,
    crds: Path | None = None,
    apiserver_args: Sequence[str] = (),
) -> ControlPlane:
    """Start a control plane in `workdir` (created; existing state is reused only for certs).

    `crds` (a directory) are installed before the controllers start, so that the
    garbage collector watches those kinds from the first moment rather than after
    its periodic discovery resync (30 s). `apiserver_args` are added to
    kube-apiserver's command line (the scale benchmark turns on its audit log).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    pki = make_pki(workdir / "pki")
    etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
    server = f"https://127.0.0.1:{api_port}"
    cp = ControlPlane(
        workdir=workdir,
        kubeconfig=workdir / "kubeconfig",
        server=server,
        kubectl_path=binaries["kubectl"],
    )
    write_kubeconfig(cp.kubeconfig, server, pki)
    ctx = _ssl_context(pki)
    try:
        _start_components(
            cp,
            binaries,
            pki,
            kwok_stages,
            (etcd_port, peer_port, api_port),
            ctx,
            log,
            crds,
            apiserver_args,
        )
    except BaseException:
        stop(cp)
        raise
    return cp


def _start_components(
    cp: ControlPlane,
    binaries: dict[str, Path],
    pki: Pki,
    kwok_stages: Path,
    ports: tuple[int, int, int],
    ctx: ssl.SSLContext,
    log: Log,
    crds: Path | None,
    apiserver_args: Sequence[str],
) -> None:
    etcd_port, peer_port, api_port = ports
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    log("starting etcd")
    _spawn(
        cp,
        "etcd",
        [
            binaries["etcd"],
            "--name=kubetune",
            f"--data-dir={cp.workdir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=kubetune={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
    )
    _wait("etcd", lambda: _get(f"{etcd_url}/health") == 200, 60, cp)

    log("starting kube-apiserver")
    _spawn(
        cp,
        "kube-apiserver",
        [
            binaries["kube-apiserver"],
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={cp.workdir / 'pki'}",
            f"--tls-cert-file={pki.server_cert}",
            f"--tls-private-key-file={pki.server_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--authorization-mode=RBAC",
            "--endpoint-reconciler-type=none",
            "--profiling=false",
            # Room for benchmarks and many concurrent tests on one API server.
            "--max-requests-inflight=1000",
            "--max-mutating-requests-inflight=500",
            *apiserver_args,
        ],
    )
    _wait("kube-apiserver /readyz", lambda: _get(f"{cp.server}/readyz", ctx) == 200, 120, cp)

    if crds is not None:
        log("installing CRDs")
        cp.kubectl("apply", "--server-side", "-f", str(crds))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    common = [
        f"--kubeconfig={cp.kubeconfig}",
        f"--authentication-kubeconfig={cp.kubeconfig}",
        f"--authorization-kubeconfig={cp.kubeconfig}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
    ]
    log("starting kube-controller-manager, kube-scheduler and kwok")
    _spawn(
        cp,
        "kube-controller-manager",
        [
            binaries["kube-controller-manager"],
            *common,
            f"--secure-port={free_port()}",
            f"--root-ca-file={pki.ca_cert}",
            f"--service-account-private-key-file={pki.sa_key}",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-job-syncs=20",
        ],
    )
    _spawn(
        cp,
        "kube-scheduler",
        [binaries["kube-scheduler"], *common, f"--secure-port={free_port()}"],
    )
    _spawn(
        cp,
        "kwok",
        [
            binaries["kwok"],
            f"--kubeconfig={cp.kubeconfig}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}",
            f"--config={kwok_stages.resolve()}",
            "--node-lease-duration-seconds=40",
            "--node-ip=127.0.0.1",
            f"--server-address=127.0.0.1:{free_port()}",
        ],
    )
    default_sa = f"{cp.server}/api/v1/namespaces/default/serviceaccounts/default"
    _wait("the default ServiceAccount", lambda: _get(default_sa, ctx) == 200, 120, cp)

    log("creating simulated nodes")
    nodes = build_fake_nodes()
    cp.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
    )
    names = [n["metadata"]["name"] for n in nodes]
    _wait(
        "simulated nodes to be Ready",
        lambda: (
            cp.kubectl(
                "wait",
                "--for=condition=Ready",
                "--timeout=1s",
                *(f"node/{n}" for n in names),
                check=False,
            ).returncode
            == 0
        ),
        60,
        cp,
    )


def restart(cp: ControlPlane, name: str, *, timeout: float = 120) -> None:
    """Stop one component and start it again with the same command line (tests use it
    to restart the API server under a running operator)."""
    proc = cp.procs[name]
    argv = [str(a) for a in proc.args]  # type: ignore[union-attr]
    os.killpg(proc.pid, signal.SIGTERM)
    if not _exited(proc.pid, proc, timeout):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _spawn(cp, name, argv)
    if name == "kube-apiserver":
        ctx = _ssl_context(pki_in(cp.workdir / "pki"))
        _wait(
            "kube-apiserver /readyz", lambda: _get(f"{cp.server}/readyz", ctx) == 200, timeout, cp
        )


def _exited(pid: int, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (proc.poll() is not None) if proc else not is_alive(pid):
            return True
        time.sleep(0.1)
    return False


def stop(cp: ControlPlane, *, timeout: float = 15.0) -> None:
    """Stop every component, last started first: SIGTERM, then SIGKILL after `timeout`."""
    for name in reversed(list(cp.pids)):
        pid, proc = cp.pids[name], cp.procs.get(name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            if _exited(pid, proc, timeout):
                break
        if proc is not None:
            proc.wait()
