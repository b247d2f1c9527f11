"""The README keeps up with the code: every phase and condition reason is listed under
"Reading status", and every command it shows is run by a test (or by .ci/run), or is
named here as one that cannot run, with the reason.

Reasons are collected from the code, not copied: string literals in the reason argument
of the calls that set conditions, phases and Warning events (`set_condition`,
`Observed`, `with_phase`, `fail`, ...), the trainer's not-retried exit codes, and what
the pure Foundry status code answers for every Azure job status.

Commands are the lines of the README's ```sh blocks and the inline code spans of its
prose that start with a command word. COVERED maps each to where it runs: a function
(or file) whose source must still contain the command's essential parts, so the
mapping cannot rot silently.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubetune.api.finetunedmodel import FineTunedModelPhase
from kubetune.api.finetunejob import FineTuneJobPhase, FineTuneJobStatus
from kubetune.api.modeldeployment import ModelDeploymentPhase
from kubetune.backends import foundry
from kubetune.backends.foundry import JobInfo
from kubetune.errors import BackendRejected
from kubetune.reconcile.finetunejob import NOT_RETRIED
from kubetune.reconcile.foundry import AZURE_PHASES, observe_azure_job

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PACKAGE = ROOT / "operator" / "kubetune"
SOURCES = sorted(
    [*(PACKAGE / "reconcile").glob("*.py"), *(PACKAGE / "handlers").glob("*.py")],
)


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


STATUS = section("Reading status")

# --- reasons --------------------------------------------------------------------------

# Callee name -> index of its positional `reason` argument (a `reason=` keyword counts
# too). `warn` is events.warn: a Warning event.
REASON_ARGUMENT = {
    "set_condition": 3,
    "Observed": 1,
    "with_phase": 4,
    "set_job_condition": 5,
    "fail": 3,
    "blocked_status": 1,
    "post_transition": 1,
    "Waiting": 0,
    "Unusable": 0,
    "warn": None,
}
# Observed reasons of `Pending`, a phase without a condition of its own, entered only by
# acceptance: no condition, event or log line ever shows them.
NEVER_SHOWN = {"Creating", "Starting"}
# Reasons the extraction must find, so that a change in how the code is written cannot
# make it quietly find nothing.
MUST_FIND = {
    "Accepted",
    "InvalidSpec",
    "InvalidInput",
    "Unsupported",
    "JobRejected",
    "DatasetNotFound",
    "WorkspaceReachable",
    "AzureAuthFailed",
    "DataNotFound",
    "Validated",
    "DeploymentsExist",
    "TrainingJobsExist",
    "AzureDeploymentsExist",
    "ModelNotReady",
    "MinimumReplicasAvailable",
    "EndpointMissing",
    "Unschedulable",
    "Cancelling",
    "ModelNameTaken",
}


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _constants(tree: ast.Module) -> dict[str, str]:
    return {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        for target in node.targets
        if isinstance(target, ast.Name) and isinstance(node.value.value, str)
    }


def _literals(node: ast.expr, constants: dict[str, str]) -> set[str]:
    """The reason strings an argument can evaluate to, as far as literals tell."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    if isinstance(node, ast.BoolOp):
        return set().union(*(_literals(v, constants) for v in node.values))
    if isinstance(node, ast.IfExp):
        return _literals(node.body, constants) | _literals(node.orelse, constants)
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return {f"{first.value}<Phase>"}  # f"Now{phase}"
    return set()


def reasons_in_code() -> set[str]:
    trees = {path: ast.parse(path.read_text()) for path in SOURCES}
    constants: dict[str, str] = {}
    for tree in trees.values():
        constants.update(_constants(tree))
    found: set[str] = set()
    for tree in trees.values():
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            name = _callee(call)
            if name not in REASON_ARGUMENT:
                continue
            index = REASON_ARGUMENT[name]
            args = [k.value for k in call.keywords if k.arg == "reason"]
            if index is not None and len(call.args) > index:
                args.append(call.args[index])
            for arg in args:
                found |= _literals(arg, constants)
    found |= set(NOT_RETRIED.values())
    # An Azure job's status becomes the reason, or a reason of its own.
    found |= {
        observe_azure_job(JobInfo(name="j", status=status), FineTuneJobStatus()).reason
        for status in AZURE_PHASES
    }
    # A refusal at submission fails the job with the error's class name (handlers/foundry.py).
    found |= {
        name
        for name, value in vars(foundry).items()
        if isinstance(value, type)
        and issubclass(value, BackendRejected)
        and value.__module__ == foundry.__name__
    }
    return found


def test_the_reason_extraction_finds_the_known_reasons() -> None:
    found = reasons_in_code()
    assert found >= MUST_FIND
    assert found >= NEVER_SHOWN, "NEVER_SHOWN names a reason the code no longer has"


def test_every_reason_is_listed_under_reading_status() -> None:
    missing = sorted(r for r in reasons_in_code() - NEVER_SHOWN if f"`{r}`" not in STATUS)
    assert not missing, f'README "Reading status" does not list: {", ".join(missing)}'


@pytest.mark.parametrize(
    "phase",
    [*FineTuneJobPhase, *FineTunedModelPhase, *ModelDeploymentPhase],
    ids=str,
)
def test_every_phase_is_listed_under_reading_status(phase: str) -> None:
    assert f"`{phase}`" in STATUS


# --- commands -------------------------------------------------------------------------

COMMAND_WORDS = ("kubectl", "helm", "kubetune", "make", "docker", "az", "pytest")
# Inline code that names a tool or a subcommand in prose, not a command to run.
MENTIONS = {"kubectl apply", "helm install", "kubectl describe", "kubetune validate-data"}


@dataclass(frozen=True)
class Runs:
    """`path` (a test, or a file such as .ci/run) runs the command: the source of its
    function `function` (the whole file when None) contains every fragment."""

    path: str
    function: str | None
    fragments: tuple[str, ...]


DEV = "tests/e2e/test_dev.py"
DEV_TEST = "test_dev_up_status_down"
CHART = "tests/e2e/test_chart.py"
README_CLUSTER = "tests/cluster/test_readme.py"
MAKE_TEST = (
    Runs("Makefile", None, ("test: $(STAMP) binaries lint typecheck",)),
    Runs(".ci/run", None, ("exec make test",)),
)

COVERED: dict[str, tuple[Runs, ...]] = {
    "make dev": (
        Runs("Makefile", None, ("dev: $(STAMP)\n\t$(BIN)/kubetune dev up",)),
        Runs(DEV, DEV_TEST, ('kubetune("dev", "up"',)),
    ),
    "make dev-status": (
        Runs("Makefile", None, ("dev-status: $(STAMP)\n\t$(BIN)/kubetune dev status",)),
        Runs(DEV, DEV_TEST, ('kubetune("dev", "status"',)),
    ),
    "make dev-down": (
        Runs("Makefile", None, ("dev-down: $(STAMP)\n\t$(BIN)/kubetune dev down",)),
        Runs(DEV, DEV_TEST, ('kubetune("dev", "down"',)),
    ),
    "make test": MAKE_TEST,
    "make lint typecheck": MAKE_TEST,
    "make crds": (
        Runs("Makefile", None, ("crds: $(STAMP)\n\t$(BIN)/kubetune crds",)),
        Runs(
            "tests/unit/test_crdgen.py",
            "test_check_fails_after_a_field_is_added",
            ('cli.main(["crds", "--root"',),
        ),
    ),
    "export KUBECONFIG=~/.cache/kubetune/dev/kubeconfig": (
        Runs(
            "operator/kubetune/dev.py", "dev_home", ('Path.home() / ".cache" / "kubetune" / "dev"',)
        ),
        Runs(DEV, DEV_TEST, ("f\"export KUBECONFIG={home / 'kubeconfig'}\"",)),
    ),
    "kubectl get kubetune": (
        Runs(
            "tests/cluster/test_crds.py",
            "test_get_kubetune_lists_all_three_kinds",
            ('"get", "kubetune"',),
        ),
    ),
    "kubectl get ftj": (Runs(DEV, DEV_TEST, ('[kubectl, "get", "ftj", "-o", "json"]',)),),
    "kubectl explain ftj.spec.hyperparameters": (
        Runs(
            "tests/cluster/test_crds.py",
            "test_explain_shows_descriptions",
            ('"explain", "ftj.spec.hyperparameters"',),
        ),
    ),
    "helm install kubetune charts/kubetune --namespace kubetune-system --create-namespace"
    " --set local.trainerImage=REGISTRY/kubetune-trainer:0.1.0"
    " --set image.repository=REGISTRY/kubetune-operator --set image.tag=0.1.0": (
        Runs(
            CHART, "test_helm_install_creates_the_operator", ('"install"', '"--create-namespace"')
        ),
        Runs(
            CHART,
            "test_readme_install_values_set_the_images",
            (
                '"local.trainerImage=REGISTRY/kubetune-trainer:0.1.0"',
                '"image.repository=REGISTRY/kubetune-operator"',
                '"image.tag=0.1.0"',
            ),
        ),
    ),
    "kubectl apply -f examples/00-xbox-data.yaml -f examples/01-output-pvc.yaml"
    " -f examples/10-finetunejob-lora.yaml": (
        Runs(README_CLUSTER, "test_first_job_with_kubectl", ("FIRST_JOB",)),
    ),
    "kubectl get ftj xbox-support": (
        Runs(README_CLUSTER, "test_first_job_with_kubectl", ("FIRST_JOB",)),
    ),
    "kubectl describe ftj xbox-support": (
        Runs(README_CLUSTER, "test_first_job_with_kubectl", ("FIRST_JOB",)),
    ),
    "kubectl delete ftm NAME": (
        Runs(
            "tests/cluster/test_models_and_deployments.py",
            "test_model_deleted_first_is_blocked_until_the_deployment_goes",
            ('delete(cluster, namespace, f"ftm/{model}")',),
        ),
    ),
    "kubectl annotate ftm NAME kubetune.io/force-delete=true": (
        Runs(
            "tests/cluster/test_models_and_deployments.py",
            "test_force_delete_annotation_releases_a_blocked_model",
            ('"annotate", "ftm", model', '"kubetune.io/force-delete=true"'),
        ),
    ),
    "helm upgrade kubetune charts/kubetune --namespace kubetune-system --reuse-values"
    " --set foundry.workloadIdentity.clientId=CLIENT_ID"
    " --set foundry.workloadIdentity.tenantId=TENANT_ID": (
        Runs(
            CHART,
            "test_workload_identity_values",
            (
                '"foundry.workloadIdentity.clientId=CLIENT_ID"',
                '"foundry.workloadIdentity.tenantId=TENANT_ID"',
            ),
        ),
    ),
    "kubectl create secret generic azure-sp --from-literal=AZURE_TENANT_ID=TENANT_ID"
    " --from-literal=AZURE_CLIENT_ID=CLIENT_ID --from-literal=AZURE_CLIENT_SECRET=SECRET": (
        Runs(
            "tests/cluster/test_foundry.py",
            "test_service_principal_secret_never_shows",
            (
                '"create",\n        "secret",\n        "generic",\n        "azure-sp",',
                '"--from-literal=AZURE_TENANT_ID=',
                '"--from-literal=AZURE_CLIENT_ID=',
                '"--from-literal=AZURE_CLIENT_SECRET=',
                '"secretRef": {"name": "azure-sp"}',
            ),
        ),
    ),
    "kubetune validate-data train.jsonl": (
        Runs(
            "tests/unit/test_datavalidation.py",
            "test_cli_clean",
            ('cli.main(["validate-data", str(train)])',),
        ),
    ),
    "kubectl get ftm NAME -o jsonpath='{.status.deployments}'": (
        Runs(
            README_CLUSTER, "test_deployments_of_a_model_and_a_finalizer_by_hand", ("DEPLOYMENTS",)
        ),
    ),
    "helm uninstall kubetune --namespace kubetune-system": (
        Runs(CHART, "test_helm_install_creates_the_operator", ('helm("uninstall"',)),
    ),
    'kubectl patch ftm NAME --type=merge -p \'{"metadata":{"finalizers":null}}\'': (
        Runs(
            README_CLUSTER, "test_deployments_of_a_model_and_a_finalizer_by_hand", ("UNFINALIZE",)
        ),
    ),
}
# Literal command lines that the README cluster test must hold, checked by source text.
LITERAL_IN = {
    README_CLUSTER: (
        "kubectl apply -f examples/00-xbox-data.yaml -f examples/01-output-pvc.yaml"
        " -f examples/10-finetunejob-lora.yaml",
        "kubectl get ftj xbox-support",
        "kubectl describe ftj xbox-support",
        "kubectl get ftm NAME -o jsonpath='{.status.deployments}'",
        'kubectl patch ftm NAME --type=merge -p \'{"metadata":{"finalizers":null}}\'',
    ),
}
NOT_RUN: dict[str, str] = {
    "kubectl delete crd finetunejobs.kubetune.io finetunedmodels.kubetune.io"
    " modeldeployments.kubetune.io": "it would delete the CRDs of the test session's one "
    "control plane, which every cluster test shares",
    "make unit": "it runs the test suite from inside the test suite; `make test` (.ci/run) "
    "runs the same pytest without the marker filter",
    "docker build --target operator -t REGISTRY/kubetune-operator:0.1.0 .": "no Docker "
    "engine here; tests/unit/test_dockerfile.py checks the targets and what they copy",
    "docker build --target trainer -t REGISTRY/kubetune-trainer:0.1.0 .": "no Docker "
    "engine here; tests/unit/test_dockerfile.py checks the targets and what they copy",
    "docker push REGISTRY/kubetune-operator:0.1.0 && docker push "
    "REGISTRY/kubetune-trainer:0.1.0": "no registry here",
}


def readme_commands() -> set[str]:
    """Commands of ```sh blocks (continuations joined, comments dropped) and of inline code
    in prose (not in tables) that starts with a command word."""
    commands: set[str] = set()
    lines = README.splitlines()
    fence: str | None = None
    pending = ""
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("```"):
            fence = None if fence is not None else stripped[3:].strip()
            continue
        if fence is not None:
            if fence in ("sh", "bash", "shell"):
                text = re.sub(r"\s+#\s.*$", "", stripped)
                if text.endswith("\\"):
                    pending += text[:-1].strip() + " "
                    continue
                text = pending + text
                pending = ""
                if text:
                    commands.add(" ".join(text.split()))
            continue
        if stripped.startswith("|"):
            continue
        for span in re.findall(r"`([^`]+)`", line):
            words = span.split()
            if words[0] in COMMAND_WORDS and len(words) > 1 and span not in MENTIONS:
                commands.add(" ".join(words))
    return commands


def source_of(runs: Runs) -> str:
    path = ROOT / runs.path
    assert path.is_file(), f"{runs.path} does not exist"
    text = path.read_text()
    if runs.function is None:
        return text
    tree = ast.parse(text)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == (
            runs.function
        ):
            return ast.get_source_segment(text, node) or ""
    raise AssertionError(f"{runs.path} has no function {runs.function}")


def test_the_command_parser_finds_the_quick_start() -> None:
    commands = readme_commands()
    assert {"make dev", "make test", "kubectl get kubetune"} <= commands


def test_every_readme_command_is_run_or_explained() -> None:
    unmapped = sorted(readme_commands() - COVERED.keys() - NOT_RUN.keys())
    assert not unmapped, "README commands no test runs (add them to COVERED):\n" + "\n".join(
        unmapped
    )


def test_the_mapping_has_no_stale_commands() -> None:
    stale = sorted((COVERED.keys() | NOT_RUN.keys()) - readme_commands())
    assert not stale, "commands no longer in the README:\n" + "\n".join(stale)


def test_commands_that_cannot_run_here_are_few() -> None:
    assert len(NOT_RUN) <= 5
    assert not COVERED.keys() & NOT_RUN.keys()


@pytest.mark.parametrize(
    ("command", "runs"),
    [pytest.param(c, r, id=f"{c[:50]}@{r.path}") for c, rs in COVERED.items() for r in rs],
)
def test_the_mapped_test_runs_the_command(command: str, runs: Runs) -> None:
    source = source_of(runs)
    for fragment in runs.fragments:
        assert fragment in source, f"{runs.path}:{runs.function} lost {fragment!r} ({command})"


@pytest.mark.parametrize("path", list(LITERAL_IN))
def test_literal_commands_are_in_the_readme_test(path: str) -> None:
    text = (ROOT / path).read_text()
    tree = ast.parse(text)
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    for command in LITERAL_IN[path]:
        assert command in strings, f"{path} does not run {command!r} literally"
