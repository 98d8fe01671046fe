"""Reading a chat-completions request (`suggestions.wire.ChatCompletionRequest`) the way this
server must: errors in OpenAI's shape, and sampling settings within the server's limits."""

from __future__ import annotations

from pydantic import ValidationError

from suggestions.contract import describe_validation_error
from suggestions.wire import ChatCompletionRequest

from .engines.base import SamplingParams

MIN_SAMPLING_TEMPERATURE = 1e-5
"""Below this a temperature means greedy decoding (vLLM's threshold too): sampling divides the
logits by it, and a vanishing one (1e-300 is valid JSON and within 0..2) overflowed them to inf,
so the engine failed on the request (a 500)."""


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "code"}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.headers = headers or {}


def sampling_params(
    chat: ChatCompletionRequest, *, default_max_tokens: int, max_tokens_limit: int
) -> SamplingParams:
    """The engine's sampling settings for a request, within this server's limits."""
    max_tokens = chat.max_completion_tokens or chat.max_tokens or default_max_tokens
    if max_tokens > max_tokens_limit:
        raise ApiError(
            400,
            f"max_tokens is {max_tokens:,}; this server allows at most {max_tokens_limit:,}",
            code="invalid_value",
        )
    temperature = chat.temperature or 0.0
    if temperature < MIN_SAMPLING_TEMPERATURE:
        temperature = 0.0
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=chat.top_p if chat.top_p is not None else 1.0,
        seed=chat.seed,
    )


def parse_chat_request(body: bytes) -> ChatCompletionRequest:
    """Parse and validate a request body, or raise a 400 ApiError naming each bad field."""
    try:
        return ChatCompletionRequest.model_validate_json(body)
    except ValidationError as exc:
        for problem in exc.errors(include_url=False, include_input=False):
            if problem["type"] == "json_invalid":  # e.g. nested too deeply, a lone surrogate
                reason = problem["msg"].removeprefix("Invalid JSON: ")
                raise ApiError(
                    400, f"the request body is not valid JSON: {reason}", code="invalid_json"
                ) from exc
        raise ApiError(400, describe_validation_error(exc), code="invalid_value") from exc
