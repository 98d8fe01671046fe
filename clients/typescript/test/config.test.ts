// Configuration as the Python client reads it: explicit options, then MODAL_LLAMA_URL and
// MODAL_API_KEY; the mock only in development and test, never silently in production.
import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { callLlamaAPI, ConfigurationError, resolveConfig } from "../src/index.ts";

describe("configuration", () => {
  it("reads the URL and key from the environment, trimmed", () => {
    const config = resolveConfig({
      env: { MODAL_LLAMA_URL: " https://x--suggest.modal.run/ \n", MODAL_API_KEY: "sk-1\n" },
    });
    assert.equal(config.url, "https://x--suggest.modal.run");
    assert.equal(config.apiKey, "sk-1");
    assert.equal(config.environment, "development");
  });

  it("lets options win over the environment", () => {
    const config = resolveConfig({
      url: "http://127.0.0.1:9",
      apiKey: "given",
      env: { MODAL_LLAMA_URL: "https://elsewhere", MODAL_API_KEY: "env" },
    });
    assert.deepEqual([config.url, config.apiKey], ["http://127.0.0.1:9", "given"]);
  });

  it("answers with the mock in development and test when no URL is set", async () => {
    for (const NODE_ENV of ["development", "test"]) {
      const response = await callLlamaAPI(
        { text: "She go to school yesterday.", type: "grammar" },
        { env: { NODE_ENV } },
      );
      assert.equal(response.model_id, "mock");
      assert.equal(response.revised_text, "She went to school yesterday.");
      assert.equal(response.usage.estimated, true);
    }
  });

  it("never falls back to the mock in production", () => {
    for (const env of [{ NODE_ENV: "production" }, { APP_ENV: "production", NODE_ENV: "development" }]) {
      assert.throws(() => resolveConfig({ env }), (error) => {
        assert.ok(error instanceof ConfigurationError);
        assert.match(error.message, /MODAL_LLAMA_URL is not set/);
        return true;
      });
    }
  });

  it("refuses an environment name it does not know, rather than guess", () => {
    assert.throws(() => resolveConfig({ env: { APP_ENV: "staging" } }), /APP_ENV must be/);
  });

  it("refuses a key a header cannot carry without echoing it", () => {
    const key = "secret-part\u0000rest";
    assert.throws(
      () => resolveConfig({ url: "https://x", apiKey: key, env: {} }),
      (error) => error instanceof ConfigurationError && !error.message.includes("secret-part"),
    );
  });

  it("refuses a URL that is not http(s)", () => {
    assert.throws(() => resolveConfig({ url: "ftp://x", env: {} }), /must start with http/);
  });
});
