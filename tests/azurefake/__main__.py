"""Run the Azure fake by hand: `python -m tests.azurefake [DIR]`.

Prints the environment a process needs to reach it (as `export` lines, plus Workload
Identity variables with a federated token file in DIR) and serves until interrupted.
Handy for running `kubetune run` against it outside the test suite.
"""

from __future__ import annotations

import contextlib
import shlex
import sys
import tempfile
import threading
from pathlib import Path

from tests.azurefake.server import SUFFIX, running
from tests.azurefake.tls import make_tls


def main() -> None:
    directory = Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="azurefake-"))
    tls = make_tls(directory / "tls", suffix=SUFFIX)
    token_file = directory / "azure-identity-token"
    token_file.write_text("eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYW51YWwifQ.")
    with running(tls) as fake:
        ws = fake.state.workspace
        env = {
            **fake.env(),
            "AZURE_TENANT_ID": "00000000-0000-0000-0000-0000000074e7",
            "AZURE_CLIENT_ID": "00000000-0000-0000-0000-00000000c1d0",
            "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        }
        for name, value in env.items():
            print(f"export {name}={shlex.quote(value)}")
        print(f"# workspace: {ws.subscription_id} / {ws.resource_group} / {ws.name}")
        print("# serving; Ctrl-C stops", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
