"""Every way a suggestion can fail, as one hierarchy.

    SuggestionError                 anything this package raises on purpose
    ├── ConfigurationError          settings missing or wrong; says which variable to set
    └── BackendError                the model could not give a suggestion (kind says why)
        ├── BackendUnavailable      connection refused, 5xx, retries spent
        ├── RateLimited             429 from the model service
        ├── BackendTimeout          no answer within the read timeout
        ├── StreamInterrupted       the stream stopped before it finished
        ├── BadBackendResponse      the service answered something we cannot read
        ├── AuthenticationFailed    401/403: our key was refused
        ├── RequestRejected         400/413/422: the service refused this input
        ├── OutputTruncated         the model hit its token limit before finishing the text
        └── UnexpectedFailure       a bug on our side while handling the answer (logged in full)

Request validation errors are pydantic's `ValidationError` (see `contract.parse_request`).

A `BackendError` carries two texts: `user_message`, safe to show anyone, and `detail`, for logs and
developers. Neither ever holds a key: details are built from status codes, URLs and error names.
"""

from __future__ import annotations


class SuggestionError(Exception):
    """Base class of every error raised on purpose by this package."""


class ConfigurationError(SuggestionError):
    """A setting is missing or invalid; the message says how to fix it."""


class BackendError(SuggestionError):
    """A backend failed; `user_message` is for people, `detail` for logs."""

    kind = "unavailable"
    user_message = "Writing suggestions are temporarily unavailable. Please try again in a moment."

    def __init__(
        self,
        detail: str,
        *,
        backend: str = "",
        status_code: int | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.backend = backend
        self.status_code = status_code
        self.attempts = attempts

    def __str__(self) -> str:
        return self.user_message

    def log_line(self) -> str:
        """The detail for logs: kind, backend, status, attempts. Never a key."""
        status = f" status={self.status_code}" if self.status_code is not None else ""
        return (
            f"kind={self.kind} backend={self.backend or '-'}{status} attempts={self.attempts}: "
            f"{self.detail}"
        )


class BackendUnavailable(BackendError):
    kind = "unavailable"


class RateLimited(BackendError):
    kind = "rate_limited"
    user_message = "Writing suggestions are busy right now. Please try again in a moment."


class BackendTimeout(BackendError):
    kind = "timeout"
    user_message = "Writing suggestions took too long to respond. Please try again."


class StreamInterrupted(BackendError):
    kind = "interrupted"
    user_message = "The suggestion was interrupted before it finished. Please try again."


class BadBackendResponse(BackendError):
    kind = "bad_response"
    user_message = "Writing suggestions sent an answer we could not read. Please try again."


class AuthenticationFailed(BackendError):
    kind = "auth"
    user_message = (
        "Writing suggestions are unavailable because the service is not set up correctly. "
        "Please contact support."
    )


class RequestRejected(BackendError):
    kind = "rejected"
    user_message = (
        "Writing suggestions could not handle this text. Try a shorter or simpler passage."
    )


class OutputTruncated(BackendError):
    kind = "truncated"
    user_message = "This passage is too long to revise in one go. Try a shorter selection."


class UnexpectedFailure(BackendError):
    kind = "internal"
