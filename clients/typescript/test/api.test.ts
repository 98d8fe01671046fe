// The client against the real suggestion API: `python -m app.api` (what the Modal function serves)
// in a child process on loopback, with the rule-based mock behind the custom column and a real key.
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, it } from "node:test";

import {
  BadRequestError,
  callLlamaAPI,
  callLlamaAPIStream,
  mockRevise,
  UnauthorizedError,
  type LlamaRequest,
  type LlamaResponse,
} from "../src/index.ts";
import { diffSuggestions } from "../src/mock.ts";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
const PYTHON =
  process.env["WRITING_PYTHON"] ??
  (existsSync(join(REPO, ".venv/bin/python")) ? join(REPO, ".venv/bin/python") : "python3");
const KEY = "api-test-key-4f2a9c";

let app: ChildProcess;
let url: string;
let output = "";

async function freePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, "127.0.0.1", resolve));
  const port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  return port;
}

before(async () => {
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  app = spawn(PYTHON, ["-m", "app.api", "--port", String(port)], {
    cwd: REPO,
    env: {
      ...process.env,
      APP_API_KEY: KEY,
      APP_ENV: "development",
      APP_COLUMNS: "custom,mock",
      MODAL_LLAMA_URL: "",
      SUGGESTIONS_HOME: mkdtempSync(join(tmpdir(), "modal-llama-")),
      GRADIO_ANALYTICS_ENABLED: "False",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  app.stdout?.on("data", (chunk) => (output += chunk));
  app.stderr?.on("data", (chunk) => (output += chunk));
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (app.exitCode !== null) throw new Error(`the app exited:\n${output}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`the app did not start:\n${output}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
});

after(() => {
  app.kill("SIGINT");
});

const options = { url: "", apiKey: KEY, environment: "production" as const };
const withUrl = (extra: object = {}) => ({ ...options, url, ...extra });

describe("against the suggestion API", () => {
  it("answers whole, with what logUsageEvent needs", async () => {
    const response = await callLlamaAPI(
      { text: "She go to school yesterday.", type: "grammar", manuscript_id: "m-1" },
      withUrl(),
    );
    assert.equal(response.revised_text, "She went to school yesterday.");
    assert.deepEqual(
      response.suggestions.map((s) => [s.original, s.replacement]),
      [["go", "went"]],
    );
    assert.equal(response.backend, "custom");
    assert.equal(typeof response.model_id, "string");
    assert.ok(response.usage.prompt_tokens > 0 && response.usage.completion_tokens > 0);
  });

  it("streams deltas that add up to the revised text", async () => {
    const items: (string | LlamaResponse)[] = [];
    for await (const item of callLlamaAPIStream({ text: "i cant go , due to the fact that it rains.", type: "clarity" }, withUrl({ backend: "mock" }))) {
      items.push(item);
    }
    const response = items.pop() as LlamaResponse;
    assert.ok(items.length > 1 && items.every((item) => typeof item === "string"));
    assert.equal(items.join(""), response.revised_text);
    assert.equal(response.backend, "mock");
  });

  it("is refused with a wrong key, and says so in words an editor can show", async () => {
    await assert.rejects(callLlamaAPI({ text: "Hello.", type: "grammar" }, withUrl({ apiKey: "wrong" })), (error) => {
      assert.ok(error instanceof UnauthorizedError);
      assert.match(error.userMessage, /not set up correctly/);
      return true;
    });
  });

  it("names the field the API refused", async () => {
    await assert.rejects(callLlamaAPI({ text: "", type: "grammar" }, withUrl()), (error) => {
      assert.ok(error instanceof BadRequestError);
      assert.equal(error.field, "text");
      return true;
    });
  });

  it("its mock answers as the Python mock does, on every passage of our eval set", async () => {
    const rows = readFileSync(join(REPO, "datasets/eval/writing-eval-v1.jsonl"), "utf8")
      .split("\n")
      .filter((line) => line.trim())
      .map((line) => JSON.parse(line) as { source: string; type: LlamaRequest["type"] });
    for (const row of rows) {
      const request: LlamaRequest = { text: row.source, type: row.type };
      const python = await callLlamaAPI(request, withUrl({ backend: "mock" }));
      assert.equal(mockRevise(row.source, row.type), python.revised_text, row.source);
      assert.deepEqual(diffSuggestions(row.source, python.revised_text, row.type), python.suggestions.map(({ explanation, ...rest }) => rest), row.source);
    }
  });
});
