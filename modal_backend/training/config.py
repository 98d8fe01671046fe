"""`TrainConfig`: everything one training run depends on, in one typed, serialisable object.

The Modal entrypoint and the local command line both build one and pass it whole to `train`, and
the manifest records it, so a run can be repeated from its manifest alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE_MODEL = "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"
DEFAULT_TRAIN_SET = "datasets/train/writing-train-v1.jsonl"
AUGMENTED_TRAIN_SET = "datasets/train/writing-train-augmented-v1.jsonl"
V2_TRAIN_SET = "datasets/train/writing-train-v2.jsonl"
DEFAULT_TRAIN_SETS = (DEFAULT_TRAIN_SET, V2_TRAIN_SET)
"""Our hand-written examples and training data v2: learner errors injected into our own
passages of many registers, in keeping with each passage's tense, and passages that come back
unchanged (`python -m modal_backend.training.augment_v2`; its data card says how it was made).
The v1 augmented set stays in the repository for comparison; its tense rule taught "present ->
past" and it is no longer a default."""
DEFAULT_EVAL_SET = "datasets/eval/writing-eval-v1.jsonl"
COEDIT = "coedit"
"""A dataset name, not a path: CoEdIT (`grammarly/coedit`) fetched from the Hugging Face Hub."""

LORA_TARGET_MODULES: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Every attention and MLP projection of a Llama block."""

TrainerBackend = Literal["auto", "unsloth", "peft"]


class TrainConfig(BaseModel):
    """One run's inputs. Defaults are the production recipe (Llama 3.1 8B, 4-bit QLoRA, r=16)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str | None = Field(default=None, description="Reuse one to resume its checkpoints.")
    code_version: str | None = Field(
        default=None, description="The git commit; filled in where git is (not in a container)."
    )
    datasets: tuple[str, ...] = Field(
        default=DEFAULT_TRAIN_SETS,
        min_length=1,
        description="Our JSONL files, CoEdIT exports (JSONL or parquet), or 'coedit' (the Hub).",
    )
    eval_datasets: tuple[str, ...] = Field(
        default=(DEFAULT_EVAL_SET,),
        description="Held out of training (leakage check); the first also scores the run.",
    )

    # Base model
    base_model: str = DEFAULT_BASE_MODEL
    base_revision: str | None = Field(default=None, description="A Hub commit, to pin the base.")
    merge_check_base: str | None = Field(
        default=None,
        description="16-bit weights the adapter is checked on; by default the base model, "
        "or its 16-bit original for a pre-quantized '-bnb-4bit' base.",
    )
    load_in_4bit: bool = True
    max_seq_length: int = Field(default=2048, ge=32)
    trainer_backend: TrainerBackend = "auto"

    # LoRA
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=16, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: tuple[str, ...] = LORA_TARGET_MODULES

    # SFT
    learning_rate: float = Field(default=2e-4, gt=0)
    num_train_epochs: float = Field(default=2.0, gt=0)
    max_steps: int = Field(default=-1, description="Stop after this many steps; -1: epochs.")
    per_device_train_batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=2, ge=1)
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0)
    lr_scheduler_type: str = "cosine"
    weight_decay: float = Field(default=0.01, ge=0.0)
    optim: str = Field(default="adamw_8bit", description="On CPU, a plain AdamW is used instead.")
    seed: int = 3407
    logging_steps: int = Field(default=10, ge=1)
    eval_steps: int = Field(default=50, ge=1)
    save_steps: int = Field(default=50, ge=1)
    save_total_limit: int = Field(default=2, ge=1)
    keep_checkpoints: bool = Field(
        default=False, description="Keep checkpoints/ after a finished run (they are large)."
    )

    # Data
    eval_fraction: float = Field(
        default=0.05, ge=0.0, lt=0.5, description="Share of training examples held out for loss."
    )
    coedit_revision: str | None = None
    coedit_per_type: int | None = Field(
        default=1000,
        ge=1,
        description="CoEdIT examples kept per suggestion type (a seeded sample), so our own "
        "examples are not drowned out; None keeps all.",
    )
    jfleg_dir: str | None = Field(
        default=None,
        description="JFLEG's folder (dev/ and test/ in it): added to the leakage check, and the "
        "run is scored against its stock base on JFLEG dev after training (the promotion gate "
        "asks for it). On Modal, the JFLEG volume's mount.",
    )
    leakage_threshold: float = Field(default=90.0, gt=0.0, le=100.0)
    leak_check: bool = Field(
        default=True,
        description="Check training texts against the eval sets; off only on purpose "
        "(--no-leak-check), since a run trained on eval text scores meaninglessly well.",
    )

    # After training
    check_max_new_tokens: int = Field(default=64, ge=1)
    merge_check_tolerance: float = Field(
        default=0.5,
        ge=0.0,
        description="Logit gap within which the merged and adapter models may pick different "
        "tokens (a near-tie, from bf16 rounding) in the merge check.",
    )
    run_eval: bool = True
    eval_limit: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _steps_or_epochs(self) -> TrainConfig:
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("max_steps must be -1 (train for num_train_epochs) or at least 1")
        return self

    @property
    def scoring_dataset(self) -> str | None:
        """The eval set the run is scored on (the first of `eval_datasets`)."""
        return self.eval_datasets[0] if self.eval_datasets else None


def resolve_path(spec: str) -> Path:
    """A dataset path as given, or relative to the repository when it is not found as given
    (so the defaults work from any working directory)."""
    path = Path(spec).expanduser()
    if path.exists() or path.is_absolute():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path
