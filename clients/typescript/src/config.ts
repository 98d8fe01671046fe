// Where the suggestion API is and how to call it: explicit options first, then the environment
// (`MODAL_LLAMA_URL`, `MODAL_API_KEY`, `APP_ENV` or `NODE_ENV`), chosen as the Python client
// chooses: with no URL, development and test get the rule-based mock, production an error.
import { ConfigurationError } from "./errors.ts";

export type AppEnvironment = "production" | "development" | "test";

export interface ClientOptions {
  /** The suggestion API's URL (the Modal function's), default `$MODAL_LLAMA_URL`. */
  url?: string | undefined;
  /** Its bearer key, default `$MODAL_API_KEY`; trimmed, never printed. */
  apiKey?: string | undefined;
  /** Which configured backend answers (`custom`, our model, by default). */
  backend?: string | undefined;
  /** Total time for one call, retries included (default 30 s). */
  timeoutMs?: number | undefined;
  /** Retries of a refused or failed call before anything streamed (default 2). */
  maxRetries?: number | undefined;
  /** The caller's own cancellation. */
  signal?: AbortSignal | undefined;
  /** `production` never falls back to the mock; default `$APP_ENV`, else `$NODE_ENV`. */
  environment?: AppEnvironment | undefined;
  /** Another `fetch` (tests, instrumented runtimes). */
  fetch?: typeof fetch | undefined;
  /** Variables to read instead of `process.env` (edge runtimes pass their own). */
  env?: Record<string, string | undefined> | undefined;
}

export interface ResolvedConfig {
  /** null: answer with the mock (development and test only). */
  url: string | null;
  apiKey: string | null;
  backend: string;
  timeoutMs: number;
  maxRetries: number;
  environment: AppEnvironment;
}

export const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_RETRIES = 2;

export function resolveConfig(options: ClientOptions = {}): ResolvedConfig {
  const env = options.env ?? processEnv();
  const environment = options.environment ?? environmentFrom(env);
  const url = blankToNull(options.url ?? env["MODAL_LLAMA_URL"]);
  const apiKey = blankToNull(options.apiKey ?? env["MODAL_API_KEY"]);
  if (url === null && environment === "production") {
    throw new ConfigurationError(
      "MODAL_LLAMA_URL is not set. In production the suggestions need it: set it to the " +
        "suggestion API's URL (and MODAL_API_KEY to its key).",
    );
  }
  if (url !== null && !/^https?:\/\//i.test(url)) {
    throw new ConfigurationError("MODAL_LLAMA_URL must start with http:// or https://.");
  }
  if (apiKey !== null && /[\r\n\0]/.test(apiKey)) {
    // A header cannot carry it; say so without echoing any of it.
    throw new ConfigurationError("MODAL_API_KEY holds a character a header cannot carry.");
  }
  return {
    url: url === null ? null : url.replace(/\/+$/, ""),
    apiKey,
    backend: options.backend ?? "custom",
    timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    maxRetries: options.maxRetries ?? DEFAULT_MAX_RETRIES,
    environment,
  };
}

function environmentFrom(env: Record<string, string | undefined>): AppEnvironment {
  const name = blankToNull(env["APP_ENV"]) !== null ? "APP_ENV" : "NODE_ENV";
  const given = (blankToNull(env[name]) ?? "development").toLowerCase();
  if (given === "production" || given === "development" || given === "test") return given;
  // An unknown name could be a production deployment: never guess it is not.
  throw new ConfigurationError(`${name} must be production, development or test.`);
}

function blankToNull(value: string | undefined): string | null {
  const trimmed = value?.trim();
  return trimmed ? trimmed : null;
}

function processEnv(): Record<string, string | undefined> {
  const holder = globalThis as { process?: { env?: Record<string, string | undefined> } };
  return holder.process?.env ?? {};
}
