// Every way a suggestion can fail, as the Python client names them (`suggestions/errors.py`):
// the same `kind`, the same `userMessage` an editor can show, and a `detail` for the log. A detail
// is built from status codes, URLs and error names, never from the key.

export type ErrorKind =
  | "unavailable"
  | "rate_limited"
  | "timeout"
  | "interrupted"
  | "bad_response"
  | "auth"
  | "rejected"
  | "truncated"
  | "internal";

export interface ErrorFacts {
  status?: number | undefined;
  attempts?: number | undefined;
}

/** A setting is missing or wrong; the message says which variable to set. */
export class ConfigurationError extends Error {
  override name = "ConfigurationError";
}

/** The suggestion API could not give a suggestion; `kind` says why. */
export class ModalLlamaError extends Error {
  readonly kind: ErrorKind = "unavailable";
  readonly userMessage: string =
    "Writing suggestions are temporarily unavailable. Please try again in a moment.";
  readonly detail: string;
  readonly status: number | undefined;
  readonly attempts: number;

  constructor(detail: string, facts: ErrorFacts = {}) {
    super(detail);
    this.name = new.target.name;
    this.detail = detail;
    this.status = facts.status;
    this.attempts = facts.attempts ?? 1;
  }

  /** The line for logs: kind, status, attempts and the detail. Never a key. */
  logLine(): string {
    const status = this.status === undefined ? "" : ` status=${this.status}`;
    return `kind=${this.kind}${status} attempts=${this.attempts}: ${this.detail}`;
  }
}

/** Connection refused, a 5xx, or retries spent. */
export class UnavailableError extends ModalLlamaError {}

/** 429 from the suggestion API; `retryAfter` is its Retry-After in seconds, when it sent one. */
export class RateLimitedError extends ModalLlamaError {
  override readonly kind = "rate_limited";
  override readonly userMessage =
    "Writing suggestions are busy right now. Please try again in a moment.";
  readonly retryAfter: number | null;

  constructor(detail: string, retryAfter: number | null, facts: ErrorFacts = {}) {
    super(detail, facts);
    this.retryAfter = retryAfter;
  }
}

/** No answer within the total timeout, or the caller's signal aborted the call. */
export class RequestTimeoutError extends ModalLlamaError {
  override readonly kind = "timeout";
  override readonly userMessage = "Writing suggestions took too long to respond. Please try again.";
}

/** The stream stopped before its final `response` event. */
export class StreamInterruptedError extends ModalLlamaError {
  override readonly kind = "interrupted";
  override readonly userMessage =
    "The suggestion was interrupted before it finished. Please try again.";
}

/** The API answered something that is not the contract. */
export class BadResponseError extends ModalLlamaError {
  override readonly kind = "bad_response";
  override readonly userMessage =
    "Writing suggestions sent an answer we could not read. Please try again.";
}

/** 401/403: the key was refused (or none was sent). */
export class UnauthorizedError extends ModalLlamaError {
  override readonly kind = "auth";
  override readonly userMessage =
    "Writing suggestions are unavailable because the service is not set up correctly. " +
    "Please contact support.";
}

/** 400/413/422: the API refused this input; `field` names the field it objected to. */
export class BadRequestError extends ModalLlamaError {
  override readonly kind = "rejected";
  override readonly userMessage =
    "Writing suggestions could not handle this text. Try a shorter or simpler passage.";
  readonly field: string | null;

  constructor(detail: string, field: string | null, facts: ErrorFacts = {}) {
    super(detail, facts);
    this.field = field;
  }
}

/** The model reached its token limit before it finished the passage. */
export class OutputTruncatedError extends ModalLlamaError {
  override readonly kind = "truncated";
  override readonly userMessage =
    "This passage is too long to revise in one go. Try a shorter selection.";
}

/** A failure on the API's side it could not name. */
export class InternalError extends ModalLlamaError {
  override readonly kind = "internal";
}
