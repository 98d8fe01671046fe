"""A tiny Llama-3-shaped model built from nothing: for tests and CPU smoke runs, never for quality.

Random weights, a byte-level BPE tokenizer trained on a few sentences with `tokenizers`, Llama-3's
special tokens and a Llama-3-style chat template, saved as an ordinary Hugging Face folder so it
goes through exactly the loading code a real model does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .engines.base import Message

Lesson = tuple[list[Message], str]
"""A conversation and the answer the tiny model is taught to give to it."""

LLAMA3_SPECIAL_TOKENS = (
    "<|eot_id|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
)

LLAMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n"
    "{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

_CORPUS = (
    "She goes to school every day and buys two books.",
    "The committee reviewed the proposal, and its members agreed to fund it.",
    "Rain fell softly on the old stone bridge while the river ran high.",
    "Please correct the grammar, spelling and punctuation of this passage.",
    "You are a careful editor for authors. Keep the author's voice and meaning.",
    "Clear, direct sentences help readers follow an argument from start to finish.",
)


def build_tiny_llama(
    folder: Path,
    *,
    seed: int = 0,
    vocab_size: int = 384,
    hidden_size: int = 32,
    intermediate_size: int = 64,
    mute: bool = False,
    trainable_scale: float | None = None,
    lessons: Sequence[Lesson] = (),
) -> Path:
    """Write a tiny Llama model folder and return it.

    `lessons` are learned by heart (a few dozen optimizer steps, under a second on CPU), each
    answer followed by `<|eot_id|>`: the model then answers those prompts exactly and stops,
    like a real instruction-tuned model, which end-to-end tests of suggestions need.

    With `mute`, every logit is zero, so greedy decoding picks token 0, which is `<|eot_id|>`:
    the model ends its turn at once (for testing the stop on end-of-turn). Otherwise the
    end-of-turn and end-of-text logits are pinned at zero while others are random, so greedy
    decoding runs to `max_tokens`, which is what timing and cancellation tests need.

    With `trainable_scale` (for fine-tuning tests) the output rows are scaled by it, since a
    LoRA on the projections cannot move the final norm, and the end-of-turn rows stay random
    like any token's, so a LoRA can learn both the answers and when to stop.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(LLAMA3_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
    )
    tokenizer.chat_template = LLAMA3_CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        if mute:
            model.lm_head.weight.zero_()
        elif trainable_scale is not None:
            model.lm_head.weight.mul_(trainable_scale)
        else:
            for token in ("<|eot_id|>", "<|end_of_text|>"):
                model.lm_head.weight[tokenizer.convert_tokens_to_ids(token)] = 0.0
    if lessons:
        _learn(model, tokenizer, lessons)
    model.generation_config.eos_token_id = [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<|eot_id|>"),
    ]
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _learn(model: Any, tokenizer: Any, lessons: Sequence[Lesson], steps: int = 120) -> None:
    """Overfit on the lessons, with the loss on the answers only (as in fine-tuning)."""
    import torch

    end_of_turn = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    batch = []
    for messages, answer in lessons:
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        if isinstance(prompt, dict) or hasattr(prompt, "keys"):
            prompt = prompt["input_ids"]
        target = [*tokenizer(answer, add_special_tokens=False)["input_ids"], end_of_turn]
        ids = torch.tensor([[*prompt, *target]])
        labels = ids.clone()
        labels[0, : len(prompt)] = -100
        batch.append((ids, labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)  # 3e-2 diverges on some builds
    model.train()
    for _ in range(steps):
        for ids, labels in batch:
            model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
