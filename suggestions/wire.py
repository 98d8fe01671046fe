"""The OpenAI chat-completions wire format, in one place for the client and any server.

Requests: `ChatMessage` (the message type everything passes around) and `ChatCompletionRequest`,
which the client builds its payload with and the server validates bodies with. Responses:
servers build bodies and SSE frames with the `*_chunk`, `completion_body`, `error_body` and
`sse_frame` helpers; the client reads them back with `read_chunk` and `read_completion`.

A stream is `role_chunk`, then `delta_chunk`s, then one `final_chunk` (finish reason and usage),
then `data: [DONE]`: the order OpenAI and vLLM send, which the official SDKs' stream helpers
(Python `chat.completions.stream(...)`, Node `finalChatCompletion()`) rely on.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

DONE = "[DONE]"
logger = logging.getLogger(__name__)


Role = Literal["system", "user", "assistant"]


class ChatMessage(TypedDict):
    """One chat message as prompts, engines and the client pass it around."""

    role: Role
    content: str


# --- Requests (the client builds with these; servers validate with them) ---------------------
#
# Lenient where OpenAI clients differ (unknown fields are ignored, content may be a list of text
# parts, `developer` is a system message), strict where a silent misreading would cost the
# caller (wrong roles, out-of-range numbers, features no server of ours implements).


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    """A message as a request carries it."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_message(self) -> ChatMessage:
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """`POST /v1/chat/completions`, as far as a writing suggestion needs it."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None
    """A 64-bit integer, as in OpenAI's API; engines cannot take a larger one (torch raised
    an overflow mid-request, a 500)."""
    n: Literal[1] = 1
    stop: str | list[str] | None = None
    tools: list[Any] | None = None

    @field_validator("stop")
    @classmethod
    def _no_stop_sequences(cls, value: str | list[str] | None) -> None:
        if value:
            raise ValueError("stop sequences are not supported by this server")
        return None

    @field_validator("tools")
    @classmethod
    def _no_tools(cls, value: list[Any] | None) -> None:
        if value:
            raise ValueError("tools are not supported by this server")
        return None

    def chat_messages(self) -> list[ChatMessage]:
        return [message.as_message() for message in self.messages]

    def input_chars(self) -> int:
        return sum(len(message["content"]) for message in self.chat_messages())

    def body(self) -> dict[str, Any]:
        """The JSON body, with only the fields that were set."""
        return self.model_dump(mode="json", exclude_unset=True)


# --- Reading responses (the client) -----------------------------------------------------------


class WireFormatError(ValueError):
    """A body or chunk that does not have the chat-completions shape."""


class ServerReportedError(WireFormatError):
    """A well-formed `{"error": ...}` object sent in place of a chunk."""


@dataclass(frozen=True, slots=True)
class ChunkFields:
    """What one streamed chunk carries that the client cares about."""

    content: str
    finish_reason: str | None
    usage: dict[str, int] | None
    model: str | None


def read_chunk(data: str) -> ChunkFields:
    """Parse one SSE `data:` payload. Raises WireFormatError on anything unreadable."""
    payload = _json_object(data, "chunk")
    _raise_for_error(payload)
    choice = _first_choice(payload, "chunk")
    delta = choice.get("delta") if choice else None
    if delta is not None and not isinstance(delta, dict):
        raise WireFormatError("chunk delta is not an object")
    return _fields(payload, choice, (delta or {}).get("content"), "chunk")


def read_completion(body: bytes) -> ChunkFields:
    """Parse a non-streaming chat completion into the same fields as a chunk."""
    payload = _json_object(body, "completion")
    _raise_for_error(payload)
    choice = _first_choice(payload, "completion")
    message = choice.get("message") if choice else None
    if not isinstance(message, dict):
        raise WireFormatError("completion has no choices[0].message object")
    return _fields(payload, choice, message.get("content"), "completion")


def read_error_message(body: bytes) -> str:
    """The server's error message from an `{"error": {...}}` body, or the body itself."""
    try:
        payload = json.loads(body)
        return str(payload["error"]["message"])
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError, KeyError, TypeError):
        return body.decode("utf-8", "replace")


def _json_object(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise WireFormatError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise WireFormatError(f"{what} is not a JSON object")
    return payload


def _first_choice(payload: dict[str, Any], what: str) -> dict[str, Any] | None:
    choices = payload.get("choices")
    if choices is None or choices == []:
        return None
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise WireFormatError(f"{what} choices is not a list of objects")
    return choices[0]


def _fields(
    payload: dict[str, Any], choice: dict[str, Any] | None, content: Any, what: str
) -> ChunkFields:
    if content is not None and not isinstance(content, str):
        raise WireFormatError(f"{what} content is not a string")
    if content and not content.isascii():
        try:
            content.encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate escape: no text can hold it
            raise WireFormatError(f"{what} content is not valid Unicode: {exc.reason}") from None
    finish_reason = choice.get("finish_reason") if choice else None
    if finish_reason is not None and not isinstance(finish_reason, str):
        raise WireFormatError(f"{what} finish_reason is not a string")
    model = payload.get("model")
    return ChunkFields(
        content or "",
        finish_reason,
        _read_usage(payload),
        model if isinstance(model, str) and model else None,
    )


def _raise_for_error(payload: dict[str, Any]) -> None:
    error = payload.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise ServerReportedError(f"server sent an error: {message}")


def _read_usage(payload: dict[str, Any]) -> dict[str, int] | None:
    """Token counts, or None when absent or malformed: usage is bookkeeping, and a bad count
    must not throw away a good answer (the caller then estimates and says so)."""
    usage = payload.get("usage")
    if usage is None:
        return None
    counts = usage if isinstance(usage, dict) else {}
    checked: dict[str, int] = {}
    for name in ("prompt_tokens", "completion_tokens"):
        count = counts.get(name)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            logger.warning("ignoring malformed usage from the server: %.200s", usage)
            return None
        checked[name] = count
    return checked


# --- Building (servers) -----------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def role_chunk(*, model: str, chunk_id: str, created: int | None = None) -> dict[str, Any]:
    """The first chunk of every stream: it says who speaks, and SDKs that rebuild the whole
    message from a stream refuse one without it ("missing role for choice 0")."""
    return _chunk(
        {"role": "assistant", "content": ""}, model=model, chunk_id=chunk_id, created=created
    )


def delta_chunk(
    content: str, *, model: str, chunk_id: str, created: int | None = None
) -> dict[str, Any]:
    return _chunk({"content": content}, model=model, chunk_id=chunk_id, created=created)


def _chunk(
    delta: dict[str, str], *, model: str, chunk_id: str, created: int | None
) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
    }


def final_chunk(
    finish_reason: str,
    *,
    model: str,
    chunk_id: str,
    prompt_tokens: int,
    completion_tokens: int,
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}],
        "usage": usage_body(prompt_tokens, completion_tokens),
    }


def completion_body(
    content: str,
    finish_reason: str,
    *,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_body(prompt_tokens, completion_tokens),
    }


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def error_body(message: str, *, type: str, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "code": code}}


def sse_frame(data: dict[str, Any] | str) -> bytes:
    """One SSE event: `data: <json>` and the blank line that ends it."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()
