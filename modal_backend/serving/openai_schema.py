"""The chat-completions request this server accepts, and its errors in OpenAI's shape.

Lenient where OpenAI clients differ (unknown fields are ignored, content may be a list of text
parts, `developer` is a system message), strict where a silent misreading would cost the caller
(wrong roles, out-of-range numbers, features this server does not implement).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from suggestions.contract import describe_validation_error

from .engines.base import Message, SamplingParams

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


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_message(self) -> Message:
        text = (
            self.content
            if isinstance(self.content, str)
            else "".join(part.text for part in self.content)
        )
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    messages: Annotated[list[ChatMessageIn], Field(min_length=1)]
    stream: bool = False
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

    def messages_for_engine(self) -> list[Message]:
        return [message.as_message() for message in self.messages]

    def input_chars(self) -> int:
        return sum(len(message["content"]) for message in self.messages_for_engine())

    def sampling(self, *, default_max_tokens: int, max_tokens_limit: int) -> SamplingParams:
        max_tokens = self.max_completion_tokens or self.max_tokens or default_max_tokens
        if max_tokens > max_tokens_limit:
            raise ApiError(
                400,
                f"max_tokens is {max_tokens:,}; this server allows at most {max_tokens_limit:,}",
                code="invalid_value",
            )
        temperature = self.temperature or 0.0
        if temperature < MIN_SAMPLING_TEMPERATURE:
            temperature = 0.0
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=self.top_p if self.top_p is not None else 1.0,
            seed=self.seed,
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
