"""The trainer that runs in kubetune's training pods: LoRA/QLoRA on chat-completion JSONL.

Entry point: `python -m kubetune.trainer --config FILE` (`__main__`), documented in
docs/trainer.md. Modules, by what they do:

- `data`: validation (kubetune.datavalidation), the seeded split, chat template and
  assistant-only targets, length-grouped batches, padded and padding-free collation;
- `plan`: hyper-parameters resolved from the FineTuneJobSpec (Foundry's multipliers);
- `modeling`: base model, tokenizer and LoRA adapter, loaded without downloading;
- `loop`: the assistant-token loss, one optimizer step, evaluation, data parallelism;
- `run`: one run end to end: resume, train, checkpoint, report;
- `results`: metrics.json, the final adapter, the reports' Progress and Metrics;
- `checkpoints`: atomic, verified checkpoints; `progress`: reports to the operator;
- `sources`: url data sources; `errors`: exit codes; `tinymodel`: a tiny local Phi-3.

Why a lean loop of our own and not TRL's SFTTrainer (or transformers' Trainer):

- Speed. On this project's 2-core CPU machines (bench/train_throughput.py, TRL 1.16,
  fp32), SFTTrainer with assistant-only loss and its defaults runs at about 0.6x a
  plain transformers Trainer, 0.8x without its default gradient checkpointing (the
  research notes' 0.5x without packing did not reproduce in fp32; their 0.28x with
  packing, which flattens a whole batch into one 4k-token row, was not re-measured);
  this loop runs at about 1.25x the plain Trainer. What makes LoRA fast is small and
  explicit here: batches grouped by length (little padding, which also keeps CPU
  attention on short dense masks, where packing does not pay), padding-free rows when
  varlen flash-attention exists (the GPU case where packing does pay), the output
  projection and cross-entropy on assistant positions only (no batch x length x
  vocabulary logits: 2 GB in fp32 for one 8 x 2048 batch of Phi-3's 32k vocabulary;
  TRL 1.x avoids them too, with a chunked head), cheaper dropout masks on the CPU
  (`loop.CpuDropout`), and a loss normalised per optimizer step so that accumulation
  and data parallelism cost no extra passes.
- Control. A pod must resume exactly after a kill, never read a half-written
  checkpoint, push throttled progress to the operator without ever blocking, and exit
  with codes the operator maps to "retry" or "fail". With Trainer these live in
  callbacks around a loop we do not own (its checkpoint-N directories are written in
  place and not verified when resuming); here they are plain code, and dropout masks
  seeded per (seed, step, rank) make a resumed run follow the uninterrupted
  trajectory, which the tests assert.
- Footprint. torch, transformers, peft and accelerate (pulled in by peft) only: no TRL,
  datasets or their transitive dependencies in the training image.

What we give up: TRL's ready-made DPO/GRPO trainers and some Trainer integrations
(DeepSpeed/FSDP configs, loggers). Multi-GPU here is DDP within one node, which is what
LoRA on Phi-3-class models needs.
"""
