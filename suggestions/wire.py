"""The OpenAI chat-completions wire format, in one place for the client and any server.

Servers build bodies and SSE frames with the `*_chunk`, `completion_body`, `error_body` and
`sse_frame` helpers; the client reads them back with `read_chunk` and `read_completion`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

DONE = "[DONE]"


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
    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise WireFormatError(f"chunk is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(payload, dict):
        raise WireFormatError("chunk is not a JSON object")
    _raise_for_error(payload)
    content, finish_reason = "", None
    choices = payload.get("choices") or []
    if choices:
        choice = choices[0]
        if not isinstance(choice, dict):
            raise WireFormatError("chunk choice is not an object")
        delta = choice.get("delta") or {}
        content = (delta.get("content") or "") if isinstance(delta, dict) else ""
        if not isinstance(content, str):
            raise WireFormatError("chunk content is not a string")
        finish_reason = choice.get("finish_reason")
    return ChunkFields(content, finish_reason, _read_usage(payload), payload.get("model"))


def read_completion(body: bytes) -> ChunkFields:
    """Parse a non-streaming chat completion into the same fields as a chunk."""
    try:
        payload = json.loads(body)
        message = payload["choices"][0]["message"]
        content = message.get("content") or ""
        finish_reason = payload["choices"][0].get("finish_reason")
    except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise WireFormatError(f"completion has no choices[0].message: {exc!r}") from exc
    if not isinstance(content, str):
        raise WireFormatError("completion content is not a string")
    return ChunkFields(content, finish_reason, _read_usage(payload), payload.get("model"))


def read_error_message(body: bytes) -> str:
    """The server's error message from an `{"error": {...}}` body, or a short excerpt."""
    try:
        payload = json.loads(body)
        return str(payload["error"]["message"])[:300]
    except (json.JSONDecodeError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")


def _raise_for_error(payload: dict[str, Any]) -> None:
    error = payload.get("error")
    if error:
        message = error.get("message") if isinstance(error, dict) else error
        raise ServerReportedError(f"server sent an error in the stream: {str(message)[:300]}")


def _read_usage(payload: dict[str, Any]) -> dict[str, int] | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict):
        return None
    try:
        return {
            "prompt_tokens": int(usage["prompt_tokens"]),
            "completion_tokens": int(usage["completion_tokens"]),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise WireFormatError(f"usage is malformed: {exc!r}") from exc


# --- Building (servers) -----------------------------------------------------------------------


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex[:24]}"


def delta_chunk(
    content: str, *, model: str, chunk_id: str, created: int | None = None
) -> dict[str, Any]:
    return {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": created or int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}],
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
