"""Data files that the operator did not mount: fetched once, before any worker starts.

The operator mounts ConfigMap and PVC sources and sets `trainingPath` /
`validationPath`. A `url` source is left to the trainer: `fetch_sources`
downloads it (http(s), 10 minutes at most) into a local directory and returns a
config whose paths point at the copies. Azure Blob sources are not fetched by
the local trainer (that needs the Azure SDK and the job's identity in the
pod): they are `Unsupported`. This is the only module of the trainer that
opens network connections besides the progress reporter.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

from kubetune.api.common import DataSource
from kubetune.api.trainerconfig import TrainerConfig
from kubetune.trainer.errors import Unsupported

TIMEOUT = 600


def fetch_sources(config: TrainerConfig, directory: Path) -> TrainerConfig:
    """`config` with local paths for every data file, downloading url sources."""
    dataset = config.spec.dataset
    update: dict[str, str] = {}
    if config.training_path is None:
        update["training_path"] = str(_fetch(dataset.training, directory / "training.jsonl"))
    if config.validation_path is None and dataset.validation is not None:
        update["validation_path"] = str(_fetch(dataset.validation, directory / "validation.jsonl"))
    return config.model_copy(update=update) if update else config


def _fetch(source: DataSource, target: Path) -> Path:
    if source.url is None:
        kind = "azureBlob" if source.azure_blob is not None else "this"
        raise Unsupported(
            f"the local trainer cannot read a {kind} data source itself; the operator must "
            "mount it (configMap or pvc) or give a url"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    try:
        with (
            urllib.request.urlopen(source.url, timeout=TIMEOUT) as response,
            partial.open("wb") as f,
        ):
            shutil.copyfileobj(response, f)
    except urllib.error.HTTPError as e:
        e.close()  # it holds the connection
        raise OSError(f"cannot download {_redact(source.url)}: HTTP {e.code}") from e
    except (urllib.error.URLError, OSError, ValueError) as e:
        # Transient (the server may come back): not an Unsupported, the pod is retried.
        raise OSError(f"cannot download {_redact(source.url)}: {e}") from e
    partial.replace(target)
    return target


def _redact(url: str) -> str:
    """The URL without its query (it may hold a SAS token or a signature)."""
    return url.split("?", 1)[0]
