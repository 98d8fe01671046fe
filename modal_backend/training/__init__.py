"""Fine-tuning: training data, formatting, LoRA SFT, post-training checks and run evaluation.

One job a module: `config` (the run's inputs), `data` (datasets, dedupe, leakage check),
`formatting` (chat template, response-only labels), `trainer` (load, fit, save), `checks`
(merge and end-of-turn), `evaluation` (the eval harness on a run), `manifest`, `gate` (may a run
be promoted), `pipeline` (`train`, all of it in order), `runtime` (device, versions, an import
fix) and `cli`. The Modal GPU job is `modal_backend/deploy/train_app.py`; promotion is
`python -m modal_backend.training.promote`.

Importing this package is cheap: torch, transformers and Unsloth load only when a run starts.
"""

from .config import TrainConfig

__all__ = ["TrainConfig"]
