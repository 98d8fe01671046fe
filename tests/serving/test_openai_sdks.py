"""The official OpenAI SDKs against our model service: their own stream helpers, model lookup and
error classes, over real HTTP to a real tiny model. "Any OpenAI client works" is tested here, not
assumed: the Python package always, the Node package where `node` and `npm` exist."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from suggestions.prompts import build_messages
from tests.app_support import TINY_MODEL_ID
from tests.model_service_support import API_KEY, GRAMMAR_ANSWER, GRAMMAR_REQUEST

MESSAGES: list[Any] = list(build_messages(GRAMMAR_REQUEST))
NODE_SDK = "openai@7"  # the SDK's current major version; its stream helper is what we test


@pytest.fixture(scope="module")
def client(taught_model_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{taught_model_url}/v1", api_key=API_KEY, max_retries=0) as sdk:
        yield sdk


def test_python_stream_helper_rebuilds_the_whole_assistant_message(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model=TINY_MODEL_ID, messages=MESSAGES, max_tokens=40
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.role == "assistant"
    assert (message.content or "").strip() == GRAMMAR_ANSWER
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens > 0
    assert "content.done" in kinds


def test_python_raw_stream_starts_with_the_role(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=TINY_MODEL_ID, messages=MESSAGES, max_tokens=40, stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].delta.role for c in chunks[1:] if c.choices] == [None] * (len(chunks) - 1)
    assert len({chunk.id for chunk in chunks}) == 1


def test_python_models_retrieve_and_list_agree(client: openai.OpenAI) -> None:
    model = client.models.retrieve(TINY_MODEL_ID)
    assert model.id == TINY_MODEL_ID and model.object == "model"
    assert [m.id for m in client.models.list()] == [model.id]
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.models.retrieve("no-such-model")


def test_python_error_classes_match_our_statuses(
    client: openai.OpenAI, taught_model_url: str
) -> None:
    bad = openai.OpenAI(base_url=f"{taught_model_url}/v1", api_key="wrong", max_retries=0)
    with bad, pytest.raises(openai.AuthenticationError) as refused:
        bad.models.list()
    assert refused.value.status_code == 401 and API_KEY not in str(refused.value)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.chat.completions.create(model=TINY_MODEL_ID, messages=MESSAGES, temperature=5)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


NODE_SCRIPT = r"""
import OpenAI from "openai";
import { readFileSync } from "node:fs";

const [baseURL, apiKey, model, messagesFile] = process.argv.slice(2);
const messages = JSON.parse(readFileSync(messagesFile, "utf8"));
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const out = {};

const final = await client.chat.completions
  .stream({ model, messages, max_tokens: 40 })
  .finalChatCompletion();
out.role = final.choices[0].message.role;
out.content = final.choices[0].message.content;
out.finish_reason = final.choices[0].finish_reason;
out.completion_tokens = final.usage?.completion_tokens ?? null;

out.retrieved = (await client.models.retrieve(model)).id;
try {
  await client.models.retrieve("no-such-model");
  out.missing = "no error";
} catch (error) {
  out.missing = error instanceof OpenAI.NotFoundError ? "NotFoundError" : String(error);
}
try {
  await new OpenAI({ baseURL, apiKey: "wrong", maxRetries: 0 }).models.list();
  out.wrong_key = "no error";
} catch (error) {
  const refused = error instanceof OpenAI.AuthenticationError;
  out.wrong_key = refused ? `AuthenticationError ${error.status}` : String(error);
}
console.log(JSON.stringify(out));
"""


@pytest.fixture(scope="module")
def node_sdk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the Node SDK installed from npm, made once per run."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed: the Node SDK test needs them")
    folder = tmp_path_factory.mktemp("node-sdk")
    (folder / "package.json").write_text('{"type": "module", "private": true}')
    installed = subprocess.run(
        ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", NODE_SDK],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert installed.returncode == 0, f"npm install {NODE_SDK} failed:\n{installed.stderr}"
    (folder / "check.mjs").write_text(NODE_SCRIPT)
    return folder


@pytest.mark.timeout(240)
def test_node_sdk_final_chat_completion_models_and_errors(
    node_sdk: Path, taught_model_url: str
) -> None:
    messages_file = node_sdk / "messages.json"
    messages_file.write_text(json.dumps(MESSAGES))
    run = subprocess.run(
        ["node", "check.mjs", f"{taught_model_url}/v1", API_KEY, TINY_MODEL_ID, str(messages_file)],
        cwd=node_sdk,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["role"] == "assistant"
    assert out["content"].strip() == GRAMMAR_ANSWER
    assert out["finish_reason"] == "stop" and out["completion_tokens"] > 0
    assert out["retrieved"] == TINY_MODEL_ID
    assert out["missing"] == "NotFoundError"
    assert out["wrong_key"] == "AuthenticationError 401"
