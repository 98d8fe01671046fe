"""The suggestion contract: what every caller sends and gets back.

These models are frozen once landed. `tests/suggestions/snapshots/contract.schema.json` pins
their JSON Schema, so a change here is a deliberate act (regenerate it with
`python -m suggestions schema`).

Offsets are indices into `LlamaRequest.text` counted in Unicode code points (Python `str` indices).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

SuggestionType = Literal["grammar", "clarity", "style"]
SUGGESTION_TYPES: tuple[SuggestionType, ...] = get_args(SuggestionType)

DEFAULT_MAX_TEXT_CHARS = 8_000
MAX_TEXT_CHARS_KEY = "max_text_chars"  # validation-context key that overrides the default limit


class LlamaRequest(BaseModel):
    """A passage to improve, and which kind of improvement is wanted."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    text: str = Field(description="The passage to improve.")
    type: SuggestionType = Field(description="Which kind of suggestions to make.")
    context: str | None = Field(
        default=None,
        description="Surrounding text that informs the edit but is not edited.",
    )
    manuscript_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._:-]{1,128}$",
        description="The manuscript the passage belongs to, for tracking.",
    )

    @field_validator("text", "context", "manuscript_id", mode="before")
    @classmethod
    def _encodable(cls, value: Any, info: ValidationInfo) -> Any:
        """Text that cannot be written as UTF-8 (a lone surrogate, from a broken client or a
        mis-decoded file) would fail later in the cache key, the usage log or the HTTP body;
        refused here, naming the field, it fails once and clearly."""
        if isinstance(value, str):
            _check_encodable(value, info.field_name or "text")
        return value

    @field_validator("text")
    @classmethod
    def _text_present_and_bounded(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise PydanticCustomError("text_empty", "text is empty; send the passage to improve")
        return _check_length(value, info)

    @field_validator("context")
    @classmethod
    def _context_bounded(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else _check_length(value, info)


def _check_encodable(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PydanticCustomError(
            "text_not_unicode",
            "{field} has a character that is not valid Unicode text ({code} at position "
            "{position}); send the text as UTF-8",
            {"field": field, "code": f"U+{ord(value[exc.start]):04X}", "position": exc.start},
        ) from None


def _check_length(value: str, info: ValidationInfo) -> str:
    limit = (info.context or {}).get(MAX_TEXT_CHARS_KEY, DEFAULT_MAX_TEXT_CHARS)
    if len(value) > limit:
        raise PydanticCustomError(
            "text_too_long",
            "{field} is {length} characters; the limit is {limit}. Send a shorter passage",
            {
                "field": info.field_name,
                "length": f"{len(value):,}",
                "limit": f"{limit:,}",
            },
        )
    return value


def parse_request(data: Any, *, max_text_chars: int = DEFAULT_MAX_TEXT_CHARS) -> LlamaRequest:
    """Validate untrusted input (a dict or JSON text) against the contract with a chosen limit."""
    context = {MAX_TEXT_CHARS_KEY: max_text_chars}
    if isinstance(data, str | bytes):
        return LlamaRequest.model_validate_json(data, context=context)
    return LlamaRequest.model_validate(data, context=context)


def describe_validation_error(error: ValidationError) -> str:
    """One line per problem, each naming its field, in words a user can act on."""
    lines = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"]) or "request"
        lines.append(f"{field}: {problem['msg']}")
    return "\n".join(lines)


class LlamaSuggestion(BaseModel):
    """One edit: replace `original` (at `start:end` of the request text) with `replacement`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    original: str = Field(description="The span of the request text to replace (may be empty).")
    replacement: str = Field(description="The text to put in its place (may be empty).")
    start: int = Field(ge=0, description="Start offset in the request text (code points).")
    end: int = Field(ge=0, description="End offset in the request text, exclusive.")
    type: SuggestionType
    explanation: str | None = None

    @model_validator(mode="after")
    def _span_matches_offsets(self) -> LlamaSuggestion:
        if self.end - self.start != len(self.original):
            raise ValueError("end - start must equal the length of original")
        return self


class TokenUsage(BaseModel):
    """Token counts for one call; `estimated` is true when the server did not report them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(
        default=0, ge=0, description="prompt_tokens + completion_tokens; filled in when omitted"
    )
    estimated: bool = False

    @model_validator(mode="before")
    @classmethod
    def _fill_total(cls, data: Any) -> Any:
        if isinstance(data, dict) and "total_tokens" not in data:
            prompt, completion = data.get("prompt_tokens"), data.get("completion_tokens")
            if isinstance(prompt, int) and isinstance(completion, int):
                return {**data, "total_tokens": prompt + completion}
        return data

    @model_validator(mode="after")
    def _total_adds_up(self) -> TokenUsage:
        if self.total_tokens != self.prompt_tokens + self.completion_tokens:
            raise ValueError("total_tokens must equal prompt_tokens + completion_tokens")
        return self


class LlamaResponse(BaseModel):
    """The outcome of one suggestion call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    suggestions: list[LlamaSuggestion]
    revised_text: str = Field(description="The full passage as the model would write it.")
    model_id: str
    backend: str = Field(description="Which configured backend answered (custom, baseline, mock).")
    usage: TokenUsage
    latency_ms: float = Field(ge=0, description="Total time for the call.")
    time_to_first_token_ms: float | None = Field(
        default=None,
        ge=0,
        description="Time until the first text arrived; none for cache hits.",
    )
    cached: bool = False


CONTRACT_MODELS: tuple[type[BaseModel], ...] = (
    LlamaRequest,
    LlamaSuggestion,
    TokenUsage,
    LlamaResponse,
)


def contract_json_schema() -> dict[str, Any]:
    """The JSON Schema of every contract model, both as accepted and as produced."""
    return {
        model.__name__: {
            "validation": model.model_json_schema(mode="validation"),
            "serialization": model.model_json_schema(mode="serialization"),
        }
        for model in CONTRACT_MODELS
    }
