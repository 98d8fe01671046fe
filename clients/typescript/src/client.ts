// `callLlamaAPI` and `callLlamaAPIStream`: the platform's two calls, against the suggestion API
// (`POST /api/manuscripts/{id}/suggest`, JSON or SSE with `delta` / `response` / `error` events).
//
// A call is retried with backoff (honouring Retry-After) after a 429, a 5xx or a refused
// connection, but only before anything has streamed, as the Python client does: a stream that
// has shown text is never started again. One total timeout bounds the call, retries included.
import { createParser, type EventSourceMessage } from "eventsource-parser";

import { resolveConfig, type ClientOptions, type ResolvedConfig } from "./config.ts";
import type { LlamaRequest, LlamaResponse } from "./contract.ts";
import {
  BadRequestError,
  BadResponseError,
  InternalError,
  ModalLlamaError,
  OutputTruncatedError,
  RateLimitedError,
  RequestTimeoutError,
  StreamInterruptedError,
  UnauthorizedError,
  UnavailableError,
} from "./errors.ts";
import { mockAnswer } from "./mock.ts";

export const UNSAVED_MANUSCRIPT = "unsaved";
const MAX_RETRY_AFTER_S = 20; // a server asking for a longer pause gets no retry from us
const RETRIED_STATUSES = new Set([429, 502, 503, 504]); // as the Python client (suggestions/retry.py)

/** One suggestion, whole. */
export async function callLlamaAPI(
  request: LlamaRequest,
  options: ClientOptions = {},
): Promise<LlamaResponse> {
  let final: LlamaResponse | undefined;
  for await (const item of callLlamaAPIStream(request, options, false)) {
    if (typeof item !== "string") final = item;
  }
  if (final === undefined) throw new BadResponseError("the call ended without a response");
  return final;
}

/** Text deltas as they arrive, then the final `LlamaResponse` as the last item. */
export async function* callLlamaAPIStream(
  request: LlamaRequest,
  options: ClientOptions = {},
  streaming = true,
): AsyncGenerator<string | LlamaResponse, void, undefined> {
  const config = resolveConfig(options);
  const started = Date.now();
  if (config.url === null) {
    yield* mockStream(request, config, started);
    return;
  }
  const deadline = AbortSignal.timeout(config.timeoutMs);
  const signal = options.signal ? eitherSignal(options.signal, deadline) : deadline;
  const doFetch = options.fetch ?? fetch;
  try {
    const response = await sendWithRetries(request, config, signal, doFetch, streaming, started);
    if (!streaming || !isEventStream(response)) {
      yield await readJson(response);
      return;
    }
    yield* readEvents(response);
  } catch (error) {
    if (options.signal?.aborted) throw options.signal.reason; // the caller's own cancellation
    if (deadline.aborted) {
      throw new RequestTimeoutError(`no complete answer within ${config.timeoutMs} ms`);
    }
    if (error instanceof ModalLlamaError) throw error;
    throw new UnavailableError(`the call failed: ${describe(error)}`);
  }
}

async function* mockStream(
  request: LlamaRequest,
  config: ResolvedConfig,
  started: number,
): AsyncGenerator<string | LlamaResponse> {
  const { words, response } = mockAnswer(request, config.backend);
  let firstAt: number | null = null;
  for (const word of words) {
    firstAt ??= Date.now();
    yield word;
  }
  yield {
    ...response,
    latency_ms: Date.now() - started,
    time_to_first_token_ms: firstAt === null ? null : firstAt - started,
  };
}

async function sendWithRetries(
  request: LlamaRequest,
  config: ResolvedConfig,
  signal: AbortSignal,
  doFetch: typeof fetch,
  streaming: boolean,
  started: number,
): Promise<Response> {
  const manuscript = request.manuscript_id ?? UNSAVED_MANUSCRIPT;
  const url =
    `${config.url}/api/manuscripts/${encodeURIComponent(manuscript)}/suggest` +
    `?backend=${encodeURIComponent(config.backend)}`;
  const headers: Record<string, string> = {
    "Content-Type": "application/json",
    Accept: streaming ? "text/event-stream" : "application/json",
  };
  if (config.apiKey !== null) headers["Authorization"] = `Bearer ${config.apiKey}`;
  const body = JSON.stringify(request);
  for (let attempt = 1; ; attempt += 1) {
    let failure: ModalLlamaError;
    let retryAfterS: number | null = null;
    try {
      const response = await doFetch(url, { method: "POST", headers, body, signal, redirect: "manual" });
      if (response.ok) return response;
      retryAfterS = parseRetryAfter(response.headers.get("retry-after"));
      failure = await errorFrom(response, attempt, retryAfterS);
      if (!RETRIED_STATUSES.has(response.status)) throw failure;
    } catch (error) {
      if (error instanceof ModalLlamaError || signal.aborted) throw error;
      failure = new UnavailableError(`could not reach the suggestion API: ${describe(error)}`, {
        attempts: attempt,
      });
    }
    const delay = delayBeforeRetry(attempt, retryAfterS, config.maxRetries);
    const left = config.timeoutMs - (Date.now() - started);
    if (delay === null || delay * 1000 >= left) throw failure; // the real failure, not a timeout
    await sleep(delay * 1000, signal);
  }
}

function delayBeforeRetry(retry: number, retryAfterS: number | null, maxRetries: number): number | null {
  if (retry > maxRetries) return null;
  if (retryAfterS !== null) return retryAfterS > MAX_RETRY_AFTER_S ? null : retryAfterS;
  const ceiling = Math.min(8, 0.5 * 2 ** (retry - 1));
  return ceiling / 2 + Math.random() * (ceiling / 2);
}

export function parseRetryAfter(value: string | null): number | null {
  if (!value?.trim()) return null;
  const seconds = Number(value.trim());
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

/** The error for a refused call, from its status and the API's `{"error": {kind, message}}`. */
async function errorFrom(
  response: Response,
  attempts: number,
  retryAfterS: number | null,
): Promise<ModalLlamaError> {
  const facts = { status: response.status, attempts };
  let kind: string | null = null;
  let message: string | null = null;
  try {
    const parsed: unknown = JSON.parse(await response.text());
    const error = (parsed as { error?: { kind?: unknown; message?: unknown } } | null)?.error;
    kind = typeof error?.kind === "string" ? error.kind : null;
    message = typeof error?.message === "string" ? error.message : null;
  } catch {
    // not our JSON (a proxy's page): the status alone says what happened
  }
  const detail = `the suggestion API answered ${response.status}${kind ? ` (${kind})` : ""}`;
  return errorForKind(kind, message, detail, response.status, facts, retryAfterS);
}

function errorForKind(
  kind: string | null,
  message: string | null,
  detail: string,
  status: number | null,
  facts: { status?: number; attempts?: number },
  retryAfterS: number | null = null,
): ModalLlamaError {
  if (status === 401 || status === 403 || kind === "unauthorized" || kind === "auth") {
    return new UnauthorizedError(detail, facts);
  }
  if (status === 429 || kind === "rate_limited") {
    return new RateLimitedError(detail, retryAfterS, facts);
  }
  if (kind === "truncated") return new OutputTruncatedError(detail, facts);
  if (status === 400 || status === 413 || status === 422 || kind === "rejected") {
    const field = message?.match(/^([A-Za-z_][\w.]*): /)?.[1] ?? null;
    const named = field ? `${detail}: the field ${field} was refused` : detail;
    return new BadRequestError(message ? `${named} (${message.split("\n")[0]})` : named, field, facts);
  }
  if (status === 504 || kind === "timeout") return new RequestTimeoutError(detail, facts);
  if (kind === "interrupted") return new StreamInterruptedError(detail, facts);
  if (kind === "bad_response") return new BadResponseError(detail, facts);
  if (kind === "internal") return new InternalError(detail, facts);
  return new UnavailableError(detail, facts);
}

function isEventStream(response: Response): boolean {
  return (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
}

async function readJson(response: Response): Promise<LlamaResponse> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(await response.text());
  } catch {
    throw new BadResponseError("the answer is not JSON", { status: response.status });
  }
  return checkedResponse(parsed);
}

/** Deltas, then the response; an `error` event or a stream that ends early is an error. */
async function* readEvents(response: Response): AsyncGenerator<string | LlamaResponse> {
  if (response.body === null) throw new BadResponseError("the event stream has no body");
  const events: EventSourceMessage[] = [];
  const parser = createParser({ onEvent: (event) => events.push(event) });
  const decoder = new TextDecoder("utf-8"); // `stream: true` keeps a character split across chunks
  const reader = response.body.getReader();
  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (error) {
        throw new StreamInterruptedError(`the stream broke off: ${describe(error)}`);
      }
      parser.feed(chunk.done ? decoder.decode() : decoder.decode(chunk.value, { stream: true }));
      for (const event of events.splice(0)) {
        const data = parseEventData(event);
        if (event.event === "delta") {
          const text = (data as { text?: unknown }).text;
          if (typeof text !== "string") throw new BadResponseError("a delta event has no text");
          if (text) yield text;
        } else if (event.event === "response") {
          yield checkedResponse(data);
          return;
        } else if (event.event === "error") {
          const { kind, message } = data as { kind?: unknown; message?: unknown };
          const named = typeof kind === "string" ? kind : null;
          throw errorForKind(named, typeof message === "string" ? message : null,
            `the suggestion API reported ${named ?? "an error"} mid-stream`, null, {});
        }
      }
      if (chunk.done) throw new StreamInterruptedError("the stream ended before its response event");
    }
  } finally {
    reader.cancel().catch(() => undefined); // a consumer that stops early closes the stream
  }
}

function parseEventData(event: EventSourceMessage): unknown {
  try {
    return JSON.parse(event.data);
  } catch {
    throw new BadResponseError(`a ${event.event ?? "message"} event is not JSON`);
  }
}

/** The response, once it has the fields the contract requires. */
function checkedResponse(value: unknown): LlamaResponse {
  const r = value as Partial<LlamaResponse> | null;
  const ok =
    r !== null &&
    typeof r === "object" &&
    typeof r.revised_text === "string" &&
    typeof r.model_id === "string" &&
    typeof r.backend === "string" &&
    typeof r.latency_ms === "number" &&
    Array.isArray(r.suggestions) &&
    typeof r.usage === "object" &&
    r.usage !== null &&
    typeof r.usage.prompt_tokens === "number" &&
    typeof r.usage.completion_tokens === "number";
  if (!ok) throw new BadResponseError("the answer is not a LlamaResponse");
  return r as LlamaResponse;
}

/** Aborted when either is (`AbortSignal.any` where the runtime has it). */
function eitherSignal(a: AbortSignal, b: AbortSignal): AbortSignal {
  if (typeof AbortSignal.any === "function") return AbortSignal.any([a, b]);
  const controller = new AbortController();
  for (const signal of [a, b]) {
    if (signal.aborted) controller.abort(signal.reason);
    else signal.addEventListener("abort", () => controller.abort(signal.reason), { once: true });
  }
  return controller.signal;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(signal.reason);
      },
      { once: true },
    );
  });
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = (error as { cause?: unknown }).cause;
    return cause instanceof Error ? `${error.name}: ${cause.message}` : error.name;
  }
  return "unknown error";
}
