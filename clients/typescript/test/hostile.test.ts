// The client against a scripted hostile server on loopback: every failure the Python client's
// tests cover (tests/suggestions/test_chat_backend.py) gives the same error kind here.
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";

import {
  callLlamaAPI,
  callLlamaAPIStream,
  ModalLlamaError,
  RateLimitedError,
  type LlamaRequest,
  type LlamaResponse,
} from "../src/index.ts";
import HOSTILE_KINDS from "../../../tests/hostile_kinds.json" with { type: "json" };

type Handler = (req: IncomingMessage, res: ServerResponse, attempt: number) => void;

const KEY = "test-key-0123456789";
const REQUEST: LlamaRequest = { text: "She go to school yesterday.", type: "grammar" };
const RESPONSE: LlamaResponse = {
  backend: "custom",
  model_id: "writing-llama",
  revised_text: "She went to school yesterday.",
  suggestions: [{ original: "go", replacement: "went", start: 4, end: 6, type: "grammar" }],
  usage: { prompt_tokens: 120, completion_tokens: 8, total_tokens: 128, estimated: false },
  latency_ms: 410,
  time_to_first_token_ms: 120,
  cached: false,
};

let server: Server;
let url: string;
let handler: Handler = () => undefined;
let attempts = 0;

before(async () => {
  server = createServer((req, res) => {
    attempts += 1;
    req.resume();
    req.on("end", () => handler(req, res, attempts));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

after(() => {
  server.closeAllConnections();
  server.close();
});

function script(next: Handler): void {
  attempts = 0;
  handler = next;
}

const options = (extra: object = {}) => ({ url, apiKey: KEY, environment: "test" as const, ...extra });

function sse(res: ServerResponse, frames: (string | Uint8Array)[], end = true): void {
  res.writeHead(200, { "Content-Type": "text/event-stream" });
  for (const frame of frames) res.write(frame);
  if (end) res.end();
}

const event = (name: string, data: unknown): string => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;

function json(res: ServerResponse, status: number, body: unknown, headers: object = {}): void {
  res.writeHead(status, { "Content-Type": "application/json", ...headers });
  res.end(JSON.stringify(body));
}

async function collect(stream: AsyncIterable<string | LlamaResponse>): Promise<(string | LlamaResponse)[]> {
  const items: (string | LlamaResponse)[] = [];
  for await (const item of stream) items.push(item);
  return items;
}

async function failure(work: Promise<unknown>): Promise<ModalLlamaError> {
  try {
    await work;
  } catch (error) {
    assert.ok(error instanceof ModalLlamaError, `expected a ModalLlamaError, got ${String(error)}`);
    assert.ok(!error.message.includes(KEY) && !error.logLine().includes(KEY), "the key leaked");
    return error;
  }
  assert.fail("the call succeeded");
}

describe("against a hostile server", () => {
  it("streams deltas and ends with the response", async () => {
    script((_, res) => sse(res, [event("delta", { text: "She went" }), event("delta", { text: " to school yesterday." }), event("response", RESPONSE)]));
    const items = await collect(callLlamaAPIStream(REQUEST, options()));
    assert.deepEqual(items, ["She went", " to school yesterday.", RESPONSE]);
  });

  it("survives frames split inside a multibyte character, comments and keep-alives", async () => {
    const text = "Ça va — très bien 👍";
    const bytes = new TextEncoder().encode(`: keep-alive\n\n${event("delta", { text })}:\n\n${event("response", { ...RESPONSE, revised_text: text })}`);
    const pieces = Array.from(bytes, (byte) => Uint8Array.of(byte)); // one byte a write
    script((_, res) => {
      res.writeHead(200, { "Content-Type": "text/event-stream" });
      const write = (i: number): void => {
        if (i === pieces.length) return void res.end();
        res.write(pieces[i], () => setImmediate(() => write(i + 1)));
      };
      write(0);
    });
    const items = await collect(callLlamaAPIStream(REQUEST, options()));
    assert.equal(items[0], text);
    assert.equal((items[1] as LlamaResponse).revised_text, text);
  });

  it("honours 429 + Retry-After, then succeeds", async () => {
    script((_, res, n) => (n === 1 ? json(res, 429, { error: { kind: "rate_limited", message: "busy" } }, { "Retry-After": "1" }) : json(res, 200, RESPONSE)));
    const started = Date.now();
    const response = await callLlamaAPI(REQUEST, options());
    assert.equal(response.revised_text, RESPONSE.revised_text);
    assert.equal(attempts, 2);
    assert.ok(Date.now() - started >= 950, "it waited the second the server asked for");
  });

  it("gives up at once on a Retry-After longer than it waits, with retryAfter", async () => {
    script((_, res) => json(res, 429, { error: { kind: "rate_limited", message: "busy" } }, { "Retry-After": "120" }));
    const error = await failure(callLlamaAPI(REQUEST, options()));
    assert.equal(error.kind, HOSTILE_KINDS.rate_limited);
    assert.ok(error instanceof RateLimitedError && error.retryAfter === 120);
    assert.equal(attempts, 1);
  });

  it("reports 5xx as unavailable once the retries are spent", async () => {
    script((_, res) => json(res, 503, { error: { kind: "unavailable", message: "down" } }));
    const error = await failure(callLlamaAPI(REQUEST, options({ maxRetries: 2 })));
    assert.equal(error.kind, HOSTILE_KINDS.server_error);
    assert.equal(attempts, 3);
    assert.equal(error.attempts, 3);
  });

  it("times out a server that stalls before its headers, without a retry", async () => {
    script(() => undefined); // never answers
    const started = Date.now();
    const error = await failure(callLlamaAPI(REQUEST, options({ timeoutMs: 400 })));
    assert.equal(error.kind, HOSTILE_KINDS.stall_before_headers);
    assert.ok(Date.now() - started < 2000);
    assert.equal(attempts, 1);
  });

  it("times out a stream that stalls mid-way", async () => {
    script((_, res) => sse(res, [event("delta", { text: "She" })], false));
    const error = await failure(collect(callLlamaAPIStream(REQUEST, options({ timeoutMs: 400 }))));
    assert.equal(error.kind, HOSTILE_KINDS.stall_mid_stream);
  });

  it("reports a stream dropped mid-way as interrupted, never retried", async () => {
    script((_, res) => {
      sse(res, [event("delta", { text: "She went" })], false);
      setTimeout(() => res.socket?.destroy(), 50);
    });
    const seen: string[] = [];
    const error = await failure(
      (async () => {
        for await (const item of callLlamaAPIStream(REQUEST, options())) if (typeof item === "string") seen.push(item);
      })(),
    );
    assert.equal(error.kind, HOSTILE_KINDS.drop_mid_stream);
    assert.deepEqual(seen, ["She went"]);
    assert.equal(attempts, 1);
  });

  it("reports a clean end without a response event as interrupted", async () => {
    script((_, res) => sse(res, [event("delta", { text: "She" })]));
    const error = await failure(collect(callLlamaAPIStream(REQUEST, options())));
    assert.equal(error.kind, HOSTILE_KINDS.drop_mid_stream);
  });

  it("passes on an error event with its kind", async () => {
    script((_, res) => sse(res, [event("delta", { text: "She" }), event("error", { kind: "truncated", message: "too long" })]));
    const error = await failure(collect(callLlamaAPIStream(REQUEST, options())));
    assert.equal(error.kind, "truncated");
  });

  it("calls a malformed event a bad response", async () => {
    script((_, res) => sse(res, ["event: delta\ndata: {not json\n\n"]));
    const error = await failure(collect(callLlamaAPIStream(REQUEST, options())));
    assert.equal(error.kind, HOSTILE_KINDS.malformed_chunk);
  });

  it("calls an answer that is not a LlamaResponse a bad response", async () => {
    script((_, res) => json(res, 200, { revised_text: 3 }));
    const error = await failure(callLlamaAPI(REQUEST, options()));
    assert.equal(error.kind, HOSTILE_KINDS.malformed_chunk);
  });

  it("does not retry a 401, and never shows the key", async () => {
    script((_, res) => json(res, 401, { error: { kind: "unauthorized", message: `bad key ${KEY}` } }));
    const error = await failure(callLlamaAPI(REQUEST, options()));
    assert.equal(error.kind, HOSTILE_KINDS.unauthorized);
    assert.equal(attempts, 1);
  });

  it("names the refused field of a 422", async () => {
    script((_, res) => json(res, 422, { error: { kind: "invalid_request", message: "text: String should have at least 1 character" } }));
    const error = await failure(callLlamaAPI(REQUEST, options()));
    assert.equal(error.kind, HOSTILE_KINDS.rejected);
    assert.equal((error as { field?: string | null }).field, "text");
    assert.match(error.detail, /the field text was refused/);
    assert.equal(attempts, 1);
  });

  it("retries a refused connection, then reports it unavailable", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise((resolve) => closed.close(resolve));
    const error = await failure(callLlamaAPI(REQUEST, options({ url: `http://127.0.0.1:${port}`, maxRetries: 1 })));
    assert.equal(error.kind, HOSTILE_KINDS.connection_refused);
    assert.equal(error.attempts, 2);
  });

  it("stops when the caller aborts, as a cancellation and not a timeout", async () => {
    script((_, res) => sse(res, [event("delta", { text: "She" })], false));
    const controller = new AbortController();
    const stream = callLlamaAPIStream(REQUEST, options({ signal: controller.signal }));
    const first = await stream.next();
    assert.equal(first.value, "She");
    controller.abort(new Error("the author closed the panel"));
    await assert.rejects(stream.next(), /the author closed the panel/);
  });
});
