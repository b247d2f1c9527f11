"""Pytest fixtures for the Azure fake. Load them in a test module (or the root conftest):

    pytest_plugins = ("tests.azurefake.fixtures",)

`azure_fake` is a fresh fake per test (fresh state, its own ports and cloud name) with
the process environment pointed at it for the test's duration: CA bundle, proxies (the
proxy refuses everything outside the fake's `.invalid` suffix), authority host and ARM
cloud metadata URL. Azure variables from the developer's shell are removed, so nothing
a test does can reach real Azure. `workload_identity` adds the variables the AKS
Workload Identity webhook injects, with a federated token file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.azurefake.server import SUFFIX, AzureFake, running
from tests.azurefake.tls import TlsFiles, make_tls

# Variables that would make the SDKs pick other credentials, clouds or endpoints.
AZURE_VARIABLES = (
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_USERNAME",
    "AZURE_PASSWORD",
    "AZUREML_CURRENT_CLOUD",  # the SDK sets this process-wide on every MLClient
    "AZUREML_DEV_URL_MFE",
    "IDENTITY_ENDPOINT",
    "MSI_ENDPOINT",
)


@dataclass(frozen=True)
class WorkloadIdentity:
    token_file: Path
    client_id: str = "00000000-0000-0000-0000-00000000c1d0"
    tenant_id: str = "00000000-0000-0000-0000-0000000074e7"


@pytest.fixture(scope="session")
def azure_fake_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """One CA and serving certificate for every fake in the session."""
    return make_tls(tmp_path_factory.mktemp("azure-fake-tls"), suffix=SUFFIX)


@pytest.fixture
def azure_fake(azure_fake_tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureFake]:
    for name in AZURE_VARIABLES:
        # setenv first, so that teardown removes a value the SDK sets during the test.
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    with running(azure_fake_tls) as fake:
        for name, value in fake.env().items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def workload_identity(
    azure_fake: AzureFake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> WorkloadIdentity:
    """The variables the Workload Identity webhook injects, with a federated token file."""
    wi = WorkloadIdentity(tmp_path / "azure-identity-token")
    wi.token_file.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3QifQ.")
    monkeypatch.setenv("AZURE_CLIENT_ID", wi.client_id)
    monkeypatch.setenv("AZURE_TENANT_ID", wi.tenant_id)
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(wi.token_file))
    return wi
