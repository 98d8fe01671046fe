"""The model side of a run: load the base with LoRA, fine-tune it on our labels, save it.

Two ways to get the model, one way to train it:

- `unsloth`: Unsloth's `FastLanguageModel` (4-bit QLoRA and its kernels on a GPU; on a machine
  without one, Unsloth's own CPU fallback, which is stock transformers + PEFT underneath);
- `peft`: plain transformers + PEFT, for where Unsloth cannot be imported.

Either way the examples are the same pre-tokenized rows (`formatting`), trained by the same
`Trainer` configuration, with checkpoints in the run folder and resume from the latest one.
Heavy libraries are imported inside the functions: Unsloth must be imported before transformers,
TRL and PEFT to patch them, and only training processes should pay for any of it.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modal_backend.serving.end_of_turn import end_of_turn_id

from .config import TrainConfig
from .formatting import IGNORE_INDEX, TokenizedExample
from .runtime import TrainingEnvironmentError

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"


@dataclass
class LoadedModel:
    """A base model with fresh LoRA adapters, and how it was loaded."""

    model: Any
    tokenizer: Any
    backend: str
    """`unsloth` (GPU), `unsloth-cpu` (Unsloth's CPU fallback) or `peft`."""
    device: str
    quantized: bool = False
    """Whether the base weights are 4-bit (QLoRA); only on a GPU."""
    fallback_reason: str | None = None


@dataclass(frozen=True)
class FitResult:
    steps: int
    train_loss: float | None
    eval_loss: float | None
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: str | None = None
    train_seconds: float = 0.0
    settings: dict[str, str] = field(default_factory=dict)
    """What the hardware made of the config: the optimizer and precision actually used."""


def load_for_training(config: TrainConfig, device: str) -> LoadedModel:
    """The base model with LoRA on every projection in `config.target_modules`."""
    reason = None
    if config.trainer_backend in ("auto", "unsloth"):
        try:
            import unsloth  # noqa: F401  first, so that it patches what follows
        except Exception as exc:  # Unsloth raises more than ImportError on an unusable setup
            if config.trainer_backend == "unsloth":
                raise TrainingEnvironmentError(f"Unsloth cannot be imported: {exc}") from exc
            reason = f"{type(exc).__name__}: {exc}"
            logger.warning("Unsloth is unavailable (%s); training with transformers + PEFT", reason)
        else:
            return _load_with_unsloth(config, device)
    loaded = _load_with_peft(config, device)
    loaded.fallback_reason = reason
    return loaded


def _load_with_unsloth(config: TrainConfig, device: str) -> LoadedModel:
    import torch
    import unsloth
    from unsloth import FastLanguageModel

    on_gpu = device == "cuda"
    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=config.base_model,
        revision=config.base_revision,
        max_seq_length=config.max_seq_length,
        dtype=None if on_gpu else torch.float32,  # bf16 where supported; fp32 is exact on CPU
        load_in_4bit=config.load_in_4bit and on_gpu,
    )
    model = FastLanguageModel.get_peft_model(
        model,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        use_gradient_checkpointing="unsloth" if on_gpu else False,
        random_state=config.seed,
        max_seq_length=config.max_seq_length,
    )
    backend = "unsloth-cpu" if getattr(unsloth, "DEVICE_TYPE", "") == "cpu" else "unsloth"
    return LoadedModel(model, tokenizer, backend, device, quantized=config.load_in_4bit and on_gpu)


def _load_with_peft(config: TrainConfig, device: str) -> LoadedModel:
    """16-bit weights and PEFT's LoRA: the CPU path, and a GPU without Unsloth (which is what
    brings 4-bit QLoRA and a merge into the 16-bit original)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if config.load_in_4bit and device == "cuda":
        logger.warning("4-bit training needs Unsloth here; training the 16-bit weights instead")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(config.base_model, revision=config.base_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model: Any = AutoModelForCausalLM.from_pretrained(
        config.base_model, revision=config.base_revision, dtype=dtype
    )
    model.to(device)
    torch.manual_seed(config.seed)  # the adapters' random initialisation, as Unsloth seeds it
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return LoadedModel(get_peft_model(model, lora), tokenizer, "peft", device)


def fit(
    loaded: LoadedModel,
    config: TrainConfig,
    train_rows: Sequence[TokenizedExample],
    eval_rows: Sequence[TokenizedExample],
    run_dir: Path,
    *,
    on_checkpoint: Callable[[], None] | None = None,
) -> FitResult:
    """Supervised fine-tuning on the pre-tokenized rows; resumes from the newest checkpoint in
    `run_dir`.

    The loop is transformers' `Trainer` on every path: the rows already carry the response-only
    labels, so the loss is the model's own cross-entropy over them (Unsloth's fused kernel on a
    GPU). TRL's SFTTrainer adds dataset preparation we do not want here, and in TRL 1.15 its loss
    needs Triton kernels that have no CPU build, so the CPU path could not run it.
    """
    from transformers import Trainer, TrainingArguments

    output_dir = run_dir / CHECKPOINTS_DIR
    output_dir.mkdir(parents=True, exist_ok=True)
    on_gpu = loaded.device == "cuda"
    bf16 = on_gpu and _bf16_supported()
    optimizer, optimizer_note = choose_optimizer(config.optim, on_gpu)
    if optimizer_note:
        logger.warning("%s", optimizer_note)
    precision = "bf16" if bf16 else "fp16" if on_gpu else "fp32"
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a ratio of the total steps
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        optim=optimizer,
        seed=config.seed,
        logging_steps=config.logging_steps,
        eval_strategy="steps" if eval_rows else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        bf16=bf16,
        fp16=on_gpu and not bf16,
        use_cpu=not on_gpu,
        remove_unused_columns=False,  # the rows are plain dicts of exactly what the model takes
        report_to="none",
        disable_tqdm=not on_gpu,
    )
    pad_id = loaded.tokenizer.pad_token_id
    trainer = Trainer(
        model=loaded.model,
        args=args,
        train_dataset=[row.as_row() for row in train_rows],
        eval_dataset=[row.as_row() for row in eval_rows] if eval_rows else None,
        data_collator=PaddingCollator(pad_id if pad_id is not None else 0),
        processing_class=loaded.tokenizer,
        callbacks=[_checkpoint_callback(on_checkpoint)] if on_checkpoint else None,
    )
    resume = latest_checkpoint(output_dir)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    eval_loss = None
    if eval_rows:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    history = [
        {key: float(entry[key]) for key in _HISTORY_KEYS if key in entry}
        for entry in trainer.state.log_history
        if "loss" in entry or "eval_loss" in entry
    ]
    train_loss = train_loss_from_history(history)
    if train_loss is None and resume is None and output.training_loss is not None:
        train_loss = float(output.training_loss)  # fewer steps than one logging interval
    return FitResult(
        steps=int(trainer.state.global_step),
        train_loss=train_loss,
        eval_loss=eval_loss,
        history=history,
        resumed_from=resume.name if resume else None,
        train_seconds=round(seconds, 3),
        settings={
            "optimizer": optimizer,
            "precision": precision,
            **({"optimizer_note": optimizer_note} if optimizer_note else {}),
        },
    )


def choose_optimizer(wanted: str, on_gpu: bool) -> tuple[str, str | None]:
    """The optimizer this machine can run, and why it differs from `wanted` when it does:
    8-bit optimizers need a GPU and bitsandbytes, which only Unsloth's install brings."""
    if "8bit" not in wanted:
        return wanted, None
    if not on_gpu:
        return "adamw_torch", None  # the CPU path: plain AdamW, as documented
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return "adamw_torch", (
            f"optim={wanted} needs bitsandbytes, which is not installed: training with "
            "adamw_torch instead (more optimizer memory, the same updates)"
        )
    return wanted, None


_HISTORY_KEYS: tuple[str, ...] = ("step", "epoch", "loss", "eval_loss")


def train_loss_from_history(history: Sequence[dict[str, float]]) -> float | None:
    """The mean training loss over every logged step of the run, each logged value weighted by
    the steps it covers.

    The log history is restored from the checkpoint on a resume, so this covers all attempts.
    transformers' own `training_loss` does not: after a resume it divides only this attempt's
    summed loss by the global step count, which understates the loss.
    """
    total = 0.0
    steps = 0.0
    last_step = 0.0
    for entry in history:
        if "loss" not in entry or "step" not in entry:
            continue
        covered = entry["step"] - last_step
        if covered > 0:
            total += entry["loss"] * covered
            steps += covered
            last_step = entry["step"]
    return round(total / steps, 6) if steps else None


CHECKPOINT_WEIGHTS: tuple[str, ...] = (
    "adapter_model.safetensors",
    "adapter_model.bin",
    "model.safetensors",
    "model.safetensors.index.json",
)
"""Any one of these makes a checkpoint's model part complete (a LoRA run saves the first)."""


def latest_checkpoint(folder: Path) -> Path | None:
    """The `checkpoint-<step>` folder with the highest step that was completely written: it has
    the model weights and a readable `trainer_state.json`, which the Trainer writes last. A
    folder left half-written by a preempted container is skipped for the one before it, so it
    cannot block every retry."""
    steps = sorted(
        (
            (int(path.name.split("-")[-1]), path)
            for path in folder.glob("checkpoint-*")
            if path.is_dir() and path.name.split("-")[-1].isdigit()
        ),
        reverse=True,
    )
    for _, path in steps:
        if _checkpoint_complete(path):
            return path
        logger.warning("skipping the incomplete checkpoint %s", path)
    return None


def _checkpoint_complete(path: Path) -> bool:
    state = path / "trainer_state.json"
    try:
        json.loads(state.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return any((path / name).is_file() for name in CHECKPOINT_WEIGHTS)


@dataclass(frozen=True)
class PaddingCollator:
    """A batch of rows padded on the right: pad ids in `input_ids`, -100 in `labels` (no loss on
    padding), zeros in `attention_mask`."""

    pad_token_id: int

    def __call__(self, rows: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(row["input_ids"]) for row in rows)

        def padded(values: list[int], fill: int) -> list[int]:
            return values + [fill] * (width - len(values))

        return {
            "input_ids": torch.tensor([padded(r["input_ids"], self.pad_token_id) for r in rows]),
            "labels": torch.tensor([padded(r["labels"], IGNORE_INDEX) for r in rows]),
            "attention_mask": torch.tensor([padded([1] * len(r["input_ids"]), 0) for r in rows]),
        }


def save_adapter_and_merged(loaded: LoadedModel, adapter_dir: Path, merged_dir: Path) -> None:
    """The LoRA adapter (PEFT format) and merged 16-bit weights, each with the tokenizer, and
    the end-of-turn token among the merged model's stop tokens."""
    loaded.model.save_pretrained(str(adapter_dir))
    loaded.tokenizer.save_pretrained(str(adapter_dir))
    if hasattr(loaded.model, "save_pretrained_merged"):
        loaded.model.save_pretrained_merged(
            str(merged_dir), loaded.tokenizer, save_method="merged_16bit"
        )
    else:
        _merge_with_peft(loaded, merged_dir)
    stop_at_end_of_turn(merged_dir, loaded.tokenizer)


def _merge_with_peft(loaded: LoadedModel, merged_dir: Path) -> None:
    """PEFT's merge on a copy (the adapter stays saveable), written in bfloat16."""
    import copy

    import torch

    merged = copy.deepcopy(loaded.model).merge_and_unload()
    merged.to(torch.bfloat16).save_pretrained(str(merged_dir))
    loaded.tokenizer.save_pretrained(str(merged_dir))


def stop_at_end_of_turn(model_dir: Path, tokenizer: Any) -> None:
    """Make generation stop at the template's end-of-turn token for anything that loads the
    folder with its generation config (a chat model ends its turn with it, not end-of-text)."""
    end_of_turn = end_of_turn_id(tokenizer)
    if end_of_turn is None:
        return
    path = model_dir / "generation_config.json"
    generation: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    configured = generation.get("eos_token_id")
    stops = configured if isinstance(configured, list) else [configured]
    stops = [token for token in stops if isinstance(token, int)]
    if end_of_turn not in stops:
        generation["eos_token_id"] = [*stops, end_of_turn]
        path.write_text(json.dumps(generation, indent=2) + "\n")


def release(loaded: LoadedModel) -> None:
    """Free the training model's memory before the checks load two more copies."""
    loaded.model = None
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def remove_checkpoints(run_dir: Path) -> None:
    shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)


def _checkpoint_callback(on_checkpoint: Callable[[], None]) -> Any:
    from transformers import TrainerCallback

    class CommitOnSave(TrainerCallback):
        """Persist each checkpoint at once (a Modal Volume commit), so a preempted run resumes."""

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            on_checkpoint()

    return CommitOnSave()


def _bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
