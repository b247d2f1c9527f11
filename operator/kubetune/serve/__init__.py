"""kubetune's OpenAI-compatible server for a base model plus a LoRA adapter.

`python -m kubetune.serve` runs in the CPU/dev serving pods the operator creates for a
ModelDeployment with runtime `kubetune` (GPU deployments use vLLM instead). Modules:

- `protocol`: the OpenAI request/response shapes and error bodies (pure, no torch).
- `textstream`: incremental detokenisation and stop strings (pure, no torch).
- `engine`: what the HTTP layer needs from a model (a Protocol and plain data).
- `transformers_engine`: generation with transformers (+ peft); `loading` builds it.
- `server`: the aiohttp application; generation runs on one worker thread.
- `__main__`: the command line.

It imports `kubetune.api` at most, never kopf (see STYLE.md).
"""
