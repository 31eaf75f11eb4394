"""Fine-tuning a base model on labelled items (QLoRA on CUDA, plain LoRA on CPU).

GPU-box side of the project: needs the `[train]` extra (torch, transformers, peft, accelerate,
bitsandbytes). Entry point: `annotator train` -> `train.cli.main`. Nothing here uses the
network: the hub is switched off before transformers is imported by any train module, and
every load passes `local_files_only=True` as well (the variable only counts if it is set
before huggingface_hub is first imported).
"""

import os

# Busy-waiting OpenMP threads collapse when the CPUs are shared (a 2-core box running other
# work was 15x slower with 2 spinning threads); passive waiting costs almost nothing when idle.
# Only effective when set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
