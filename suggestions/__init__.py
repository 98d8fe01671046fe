"""Grammar, clarity and style suggestions from any model backend, through one service."""

from .backends import Backend, ChatBackend, MockBackend, StreamEnd, TextDelta, build_backend
from .cache import SessionCache, cache_key
from .config import Settings
from .contract import (
    SUGGESTION_TYPES,
    LlamaRequest,
    LlamaResponse,
    LlamaSuggestion,
    SuggestionType,
    TokenUsage,
    describe_validation_error,
    parse_request,
)
from .diff import apply_suggestions, diff_suggestions
from .errors import BackendError, ConfigurationError, SuggestionError
from .extract import extract_revised_text
from .prompts import build_baseline_messages, build_messages
from .retry import RetryPolicy
from .service import SuggestionService
from .usage import UsageEvent, UsageStore

__all__ = [
    "SUGGESTION_TYPES",
    "Backend",
    "BackendError",
    "ChatBackend",
    "ConfigurationError",
    "LlamaRequest",
    "LlamaResponse",
    "LlamaSuggestion",
    "MockBackend",
    "RetryPolicy",
    "SessionCache",
    "Settings",
    "StreamEnd",
    "SuggestionError",
    "SuggestionService",
    "SuggestionType",
    "TextDelta",
    "TokenUsage",
    "UsageEvent",
    "UsageStore",
    "apply_suggestions",
    "build_backend",
    "build_baseline_messages",
    "build_messages",
    "cache_key",
    "describe_validation_error",
    "diff_suggestions",
    "extract_revised_text",
    "parse_request",
]
