// @writing-suggestions/modal-llama: the writing platform's client for our suggestion API.
export { callLlamaAPI, callLlamaAPIStream, parseRetryAfter, UNSAVED_MANUSCRIPT } from "./client.ts";
export {
  DEFAULT_MAX_RETRIES,
  DEFAULT_TIMEOUT_MS,
  resolveConfig,
  type AppEnvironment,
  type ClientOptions,
  type ResolvedConfig,
} from "./config.ts";
export type { LlamaRequest, LlamaResponse, LlamaSuggestion, TokenUsage } from "./contract.ts";
export {
  BadRequestError,
  BadResponseError,
  ConfigurationError,
  InternalError,
  ModalLlamaError,
  OutputTruncatedError,
  RateLimitedError,
  RequestTimeoutError,
  StreamInterruptedError,
  UnauthorizedError,
  UnavailableError,
  type ErrorKind,
} from "./errors.ts";
export { revise as mockRevise } from "./mock.ts";
