"""A protocol-level fake of the Azure REST API for the real azure-ai-ml and azure-identity.

    server.py    AzureFake: TLS server + CONNECT proxy in a background thread, recording, faults
    routes.py    ARM routes (workspace, datastores, jobs, run history, models), identity
    serving.py   serverless endpoints, marketplace subscriptions, inference
    blobs.py     blob storage (content-addressed uploads)
    state.py     in-memory state and the job state machine
    faults.py    injectable faults (429 + Retry-After, 5xx, reset, 401/403, 404)
    tls.py       a throw-away CA and serving certificate
    fixtures.py  pytest fixtures: azure_fake, azure_fake_tls, workload_identity
    __main__.py  `python -m tests.azurefake`: run one by hand

See docs/foundry-fake.md.
"""

from tests.azurefake.faults import Fault
from tests.azurefake.server import SUFFIX, AzureFake, Recorded, running
from tests.azurefake.state import Workspace

__all__ = ["SUFFIX", "AzureFake", "Fault", "Recorded", "Workspace", "running"]
