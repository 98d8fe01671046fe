"""A tiny Llama-3-shaped model built from nothing: for tests and CPU smoke runs, never for quality.

Random weights, a byte-level BPE tokenizer trained on a few sentences with `tokenizers`, Llama-3's
special tokens and a Llama-3-style chat template, saved as an ordinary Hugging Face folder so it
goes through exactly the loading code a real model does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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

CHATML_SPECIAL_TOKENS = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")

CHATML_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""SmolLM2's and Qwen's turn format: the turn ends with `<|im_end|>`, then a newline."""


@dataclass(frozen=True)
class ChatFormat:
    """A chat template and its special tokens; the end-of-turn token is the first (id 0)."""

    special_tokens: tuple[str, ...]
    template: str
    end_of_turn: str
    eos: str
    bos: str | None
    eos_stops_turn: bool
    """Whether the model's generation config lists the end-of-turn token (Llama 3's does;
    SmolLM2's converted folder does not, so only the template says where a turn ends)."""


CHAT_FORMATS = {
    "llama3": ChatFormat(
        LLAMA3_SPECIAL_TOKENS,
        LLAMA3_CHAT_TEMPLATE,
        "<|eot_id|>",
        "<|end_of_text|>",
        "<|begin_of_text|>",
        eos_stops_turn=True,
    ),
    "chatml": ChatFormat(
        CHATML_SPECIAL_TOKENS,
        CHATML_CHAT_TEMPLATE,
        "<|im_end|>",
        "<|endoftext|>",
        None,
        eos_stops_turn=False,
    ),
}

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
    chat_format: Literal["llama3", "chatml"] = "llama3",
) -> Path:
    """Write a tiny Llama model folder and return it.

    `chat_format` is Llama 3's (`<|eot_id|>` ends a turn, and the generation config says so)
    or ChatML's (`<|im_end|>` and a newline, with only end-of-text in the generation config,
    as SmolLM2's converted folder has it): only the template tells where such a turn ends.

    `lessons` are learned by heart (a hundred optimizer steps, about a second on CPU), each
    answer followed by the end-of-turn token: the model then answers those prompts exactly and
    stops, like a real instruction-tuned model, which end-to-end tests of suggestions need.

    With `mute`, every logit is zero, so greedy decoding picks token 0, the end-of-turn token:
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

    turns = CHAT_FORMATS[chat_format]

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(turns.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=turns.bos,
        eos_token=turns.eos,
        pad_token=turns.eos,
    )
    tokenizer.chat_template = turns.template

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
            for token in (turns.end_of_turn, turns.eos):
                model.lm_head.weight[tokenizer.convert_tokens_to_ids(token)] = 0.0
    if lessons:
        _learn(model, tokenizer, lessons, turns.end_of_turn)
    end_of_turn = tokenizer.convert_tokens_to_ids(turns.end_of_turn)
    model.generation_config.eos_token_id = (
        [tokenizer.eos_token_id, end_of_turn] if turns.eos_stops_turn else [tokenizer.eos_token_id]
    )
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _learn(
    model: Any, tokenizer: Any, lessons: Sequence[Lesson], end_of_turn_token: str, steps: int = 120
) -> None:
    """Overfit on the lessons, with the loss on the answers only (as in fine-tuning)."""
    import torch

    end_of_turn = tokenizer.convert_tokens_to_ids(end_of_turn_token)
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
