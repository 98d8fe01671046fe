"""The backend seam: one async streaming method, everything else built on it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..contract import LlamaRequest, TokenUsage


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of the model's answer, in arrival order."""

    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of a successful stream."""

    model_id: str
    finish_reason: str | None
    usage: TokenUsage | None  # None when the server reported no usage
    attempts: int = 1


BackendEvent = TextDelta | StreamEnd


@runtime_checkable
class Backend(Protocol):
    """Something that turns a request into a stream of text, ending with one `StreamEnd`.

    `name` is the slot it fills (custom, baseline, mock); `model_id` the model it asks for;
    `label` says in words what it really is, for the UI and reports. Failures raise `BackendError`.
    """

    name: str
    model_id: str
    label: str

    def stream(self, request: LlamaRequest) -> AsyncGenerator[BackendEvent, None]: ...


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer gathered from a stream."""

    text: str
    end: StreamEnd


async def complete(backend: Backend, request: LlamaRequest) -> Completion:
    """The non-streaming call, built on `stream`."""
    parts: list[str] = []
    async for event in backend.stream(request):
        if isinstance(event, TextDelta):
            parts.append(event.text)
        else:
            return Completion("".join(parts), event)
    raise RuntimeError(f"backend {backend.name} ended its stream without a StreamEnd")
