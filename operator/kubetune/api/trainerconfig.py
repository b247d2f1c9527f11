"""TrainerConfig: what a training pod is told to do.

The operator writes it as JSON into the pod (a downward-API file from a pod
annotation); `python -m kubetune.trainer --config FILE` parses it with this same
model. It is the FineTuneJob's spec plus where things are inside the pod.
"""

from __future__ import annotations

from pydantic import Field

from kubetune.api.common import KubeModel
from kubetune.api.finetunejob import FineTuneJobSpec


class TrainerConfig(KubeModel):
    name: str = Field(description="The FineTuneJob's name.")
    namespace: str = Field(description="The FineTuneJob's namespace.")
    spec: FineTuneJobSpec = Field(description="The FineTuneJob's spec.")
    training_path: str | None = Field(
        default=None,
        description="Mounted training file; None: fetch spec.dataset.training (url, azureBlob).",
    )
    validation_path: str | None = Field(
        default=None,
        description="Mounted validation file; None: fetch spec.dataset.validation, or split.",
    )
    base_model_path: str | None = Field(
        default=None, description="Mounted base model directory; None: the base model is an id."
    )
    base_model_id: str | None = Field(
        default=None,
        description=(
            "Hugging Face id of the base model when spec.baseModel is model://<FineTunedModel> "
            "(that model's base); None: spec.baseModel."
        ),
    )
    adapter_path: str | None = Field(
        default=None,
        description=(
            "Mounted LoRA adapter to train further (spec.baseModel model://<FineTunedModel>); "
            "None: a new adapter."
        ),
    )
    output_dir: str = Field(description="Directory for the adapter, checkpoints and metrics.")
    processes: int = Field(default=1, ge=1, description="Data-parallel processes (one per GPU).")
    progress_url: str | None = Field(
        default=None, description="Operator endpoint that receives progress and metrics."
    )
    token_path: str | None = Field(
        default=None, description="Projected service-account token that authenticates reports."
    )
