"""Property tests over every input a caller controls: the reviewer app's REST route, the model
service's chat-completions route (both served for real over loopback) and the CLI.

Whatever arrives (arbitrary JSON, broken bytes, lone surrogates, NUL, combining marks, RTL,
emoji, passages at and over the length limit), the only acceptable answers are a valid one or a
clear client error: a JSON 4xx with a message, or exit status 2 with an `error:` line. Never a
5xx, a non-JSON error page, a traceback or exit status 1 from the mock.

Examples are derandomized so that CI runs the same ones every time; the servers are shared per
module so that the whole file runs in well under a minute.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any
from unittest import mock

import httpx
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from modal_backend.serving.engines.transformers_engine import TransformersEngine
from modal_backend.serving.server import ServiceLimits
from suggestions import cli
from suggestions.backends import MockBackend
from suggestions.contract import SUGGESTION_TYPES, LlamaResponse
from suggestions.wire import read_chunk, read_completion
from tests.app_support import TINY_MODEL_ID, app_config, running_app
from tests.model_service_support import API_KEY, running_service, tiny_model_dir

APP_KEY = "fuzz-app-key-3e1d"
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    # the autouse `isolated_env` fixture is function-scoped; every example here only reads
    # module-scoped servers, or sets up what it needs itself
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --- Strategies -------------------------------------------------------------------------------

SPECIALS = (
    "\ud800",  # lone high surrogate
    "\udfff",  # lone low surrogate
    "\udbff\udc00",  # a pair written as two code points: JSON escapes rejoin it
    "\x00",
    "\u0301",  # a combining mark with nothing to combine with
    "e\u0301\u0302\u0323",
    "\u202e",  # right-to-left override
    "\u200f\u05e9\u05dc\u05d5\u05dd",  # RTL mark and Hebrew
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "\U0001f600",
    "\U0001f469\u200d\U0001f469\u200d\U0001f467",  # a ZWJ family
    "\ufeff",
    "\ufffe\uffff",
    "\U0010ffff",
    "\r\n",
    "\u2028\u2029",
    "\x1b[31m",
    "\x7f\x85",
    "   ",
    "She go to school yesterday and buyed a books.",
    "In order to win, we ran very fast.",
)
SENTENCES = ("She go to school yesterday.", "i dont know alot.", "It was very big.", "x")

any_char = st.characters(exclude_categories=())  # surrogates included
short_text = st.one_of(
    st.text(any_char, max_size=24),
    st.sampled_from(SPECIALS),
    st.lists(st.one_of(st.text(any_char, max_size=8), st.sampled_from(SPECIALS)), max_size=5).map(
        "".join
    ),
)


def _long(size: int, fill: str, tail: str) -> str:
    return (fill * size)[:size] + tail


# near and over the 8,000-character limit, in fills that are one, two or four UTF-8 bytes
long_text = st.builds(
    _long,
    st.integers(7_990, 8_010),
    st.sampled_from(["a", "word ", "\u00e9", "\U0001f600", "\u0301", " ", "\x00", "e\u0301"]),
    st.sampled_from(["", "\ud800", ".", "\U0001f600"]),
)
texts = st.one_of(st.sampled_from(SENTENCES), short_text, short_text, long_text)

# text that is valid Unicode (no lone surrogates) but odd in every other way: what gets past the
# contract and on to the backend, the cache, the usage log and the response encoder
utf8_char = st.characters(codec="utf-8")
clean_specials = tuple(
    special for special in SPECIALS if not any(0xD800 <= ord(c) <= 0xDFFF for c in special)
)
clean_text = st.one_of(
    st.sampled_from(SENTENCES),
    st.text(utf8_char, min_size=1, max_size=40),
    st.lists(
        st.one_of(st.text(utf8_char, max_size=8), st.sampled_from(clean_specials)),
        min_size=1,
        max_size=6,
    ).map("".join),
    long_text.filter(lambda text: "\ud800" not in text),
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), short_text, st.sampled_from(SENTENCES)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(short_text, children, max_size=4)
    ),
    max_leaves=10,
)
unknown_keys = st.one_of(st.just({}), st.dictionaries(short_text, json_values, max_size=3))


def _nested(depth: int, inner: bytes = b"") -> bytes:
    return b"[" * depth + inner + b"]" * depth


HUGE_INT_BODY = b'{"text": "x", "type": "grammar", "context": ' + b"9" * 5_000 + b"}"
"""Valid JSON that Python will not read: an integer past `sys.get_int_max_str_digits()`."""

RAW_REST_BODIES = (
    b"",
    b"null",
    b"{",
    b'{"text": "She go home.", "type": "grammar"',  # truncated
    b'{"text": "She go \xff\xfe home.", "type": "grammar"}',  # invalid UTF-8
    b'{"text": "\xed\xa0\x80", "type": "grammar"}',  # a surrogate written as raw bytes
    b'{"text": "a\\ud800b", "type": "grammar"}',  # and as a JSON escape
    b'{"text": "x", "type": "grammar", "context": "\\udfff"}',
    b'{"text": "x", "type": "grammar", "manuscript_id": "\\ud800"}',
    b'{"text": "x", "type": "\\ud800"}',
    b'{"\\ud800": 1, "text": "x", "type": "grammar"}',
    b'{"text": "x\\u0000y", "type": "grammar"}',
    b'{"text": NaN, "type": "grammar"}',
    b'{"text": "x", "type": "grammar", "context": Infinity}',
    HUGE_INT_BODY,
    b'{"text": "x", "type": "grammar", "text": "She go home."}',  # a duplicate key
    b'\xef\xbb\xbf{"text": "She go home.", "type": "grammar"}',  # a BOM
    '{"text": "She go home.", "type": "grammar"}'.encode("utf-16"),
    _nested(100_000),
    b'{"text": "x", "type": "grammar", "context": ' + _nested(900) + b"}",
    b'{"text": "x", "type": "grammar", "context": ' + _nested(5_000) + b"}",
)


def _as_read(body: bytes) -> Any:
    """The body as the server's JSON reader sees it (escaped surrogate pairs rejoined), or None
    where it cannot read it."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _truncated(data: bytes, cut: int) -> bytes:
    return data[: cut % (len(data) + 1)]


def _json_bytes(value: Any, ascii_only: bool) -> bytes:
    """JSON as a client might send it: escaped (lone surrogates as `\\udXXX`) or raw UTF-8 (lone
    surrogates as the invalid bytes a broken encoder writes)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    return text.encode("utf-8", "surrogatepass")


def _percent(text: str) -> str:
    """Every character but ASCII letters and digits percent-encoded, surrogates included, so
    the URL reaches the server exactly as drawn (no dot-segment or slash handling here)."""
    return "".join(
        char
        if char.isascii() and char.isalnum()
        else "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        for char in text
    )


# header values as bytes: non-ASCII ones arrive as Latin-1 text, which must not break the
# constant-time comparison
BAD_AUTHORIZATIONS: tuple[str | bytes, ...] = (
    "",
    "Bearer",
    "Bearer  two-spaces",
    "Basic Zm9v",
    b"Bearer \xff\xfe\xe9",
    b"Bearer \x80" * 40,
)

# --- The REST route ---------------------------------------------------------------------------

valid_manuscript_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)
manuscript_ids = st.one_of(
    valid_manuscript_ids,
    st.sampled_from(["ms-1", "", ".", "..", "a/b", "a/suggest", "x" * 128, "x" * 129, "%2F"]),
    st.text(any_char, max_size=40),  # longer URLs meet the HTTP parser's line limit first
    st.sampled_from(SPECIALS),
)


@st.composite
def rest_bodies(draw: st.DrawFn, manuscript_id: str, plausible: bool) -> bytes:
    """A body: the contract's shape, any JSON object or value, or raw bytes."""
    kind = "plausible" if plausible else draw(st.sampled_from(["object"] * 3 + ["value", "raw"]))
    if kind == "plausible":  # the contract's shape, with odd text in it
        value = draw(
            st.fixed_dictionaries(
                {"text": clean_text, "type": st.sampled_from(SUGGESTION_TYPES)},
                optional={
                    "context": st.one_of(st.none(), clean_text),
                    "manuscript_id": st.just(manuscript_id),
                },
            )
        )
        return _json_bytes(value, draw(st.booleans()))
    if kind == "raw":
        raw = draw(
            st.one_of(
                st.sampled_from(RAW_REST_BODIES),
                st.binary(max_size=64),
                st.builds(
                    _truncated,
                    st.sampled_from(RAW_REST_BODIES[3:12]),
                    st.integers(0, 80),
                ),
            )
        )
        return raw
    if kind == "value":
        value = draw(json_values)
    else:
        body_id = st.one_of(st.just(manuscript_id), json_values)
        value = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "text": st.one_of(texts, texts, json_values),
                    "type": st.one_of(st.sampled_from(SUGGESTION_TYPES), json_values),
                    "context": st.one_of(st.none(), texts, json_values),
                    "manuscript_id": body_id,
                },
            )
        )
        if draw(st.booleans()):
            value.setdefault("text", draw(st.sampled_from(SENTENCES)))
            value.setdefault("type", draw(st.sampled_from(SUGGESTION_TYPES)))
        value = {**draw(unknown_keys), **value}
    return _json_bytes(value, draw(st.booleans()))


@st.composite
def rest_requests(draw: st.DrawFn) -> dict[str, Any]:
    """Half plausible (the contract's shape, a valid id and key: odd text reaches the backend
    and the response encoder), half wild (anything anywhere: the error paths)."""
    plausible = draw(st.booleans())
    manuscript_id = draw(valid_manuscript_ids if plausible else manuscript_ids)
    body = draw(rest_bodies(manuscript_id, plausible))
    backend = draw(
        st.one_of(st.none(), st.sampled_from(["custom", "mock"]))
        if plausible
        else st.one_of(
            st.none(), st.sampled_from(["custom", "mock", "baseline", "", "CUSTOM"]), short_text
        )
    )
    query = "" if backend is None else f"?backend={_percent(backend)}"
    keys = [f"Bearer {APP_KEY}"] * 16 + list(BAD_AUTHORIZATIONS)
    headers = {"Authorization": f"Bearer {APP_KEY}" if plausible else draw(st.sampled_from(keys))}
    content_type = draw(
        st.sampled_from(
            [
                None,
                "application/json",
                "application/json; charset=latin-1",
                "text/plain",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "*/*",
            ]
        )
    )
    if content_type:
        headers["Content-Type"] = content_type
    return {
        "path": f"/api/manuscripts/{_percent(manuscript_id)}/suggest{query}",
        "body": body,
        "value": _as_read(body),
        "headers": headers,
        "backend": backend,
    }


@pytest.fixture(scope="module")
def rest_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real app, route and contract; the mock is the only stand-in (it is the fast edge)."""
    config = app_config(tmp_path_factory.mktemp("fuzz-app"), ("custom", "mock"), api_key=APP_KEY)
    backends = {"custom": MockBackend(name="custom"), "mock": MockBackend()}
    with running_app(config, backends) as url:
        yield url


@pytest.fixture(scope="module")
def rest_client(rest_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest_url, timeout=60) as client:
        yield client


def assert_rest_error(response: httpx.Response) -> None:
    """A 4xx whose body is `{"error": {"kind": ..., "message": ...}}`."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.text[:500]
    error = response.json()["error"]
    assert isinstance(error["kind"], str) and error["kind"], error
    assert isinstance(error["message"], str) and error["message"].strip(), error


def assert_valid_answer(answer: LlamaResponse, request: dict[str, Any]) -> None:
    value = request["value"]
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        text = value["text"]
        for suggestion in answer.suggestions:
            assert text[suggestion.start : suggestion.end] == suggestion.original
    assert answer.backend == (request["backend"] or "custom")


def sse_events(body: str) -> list[tuple[str, Any]]:
    events = []
    for block in body.split("\n\n"):
        if not block:
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        assert set(fields) == {"event", "data"}, block[:300]
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def assert_rest_stream(response: httpx.Response, request: dict[str, Any]) -> None:
    """`delta`*, then exactly one `response` (a valid LlamaResponse) or one `error`."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events, "an empty stream"
    *deltas, (last, data) = events
    assert all(name == "delta" and isinstance(d["text"], str) for name, d in deltas), deltas[:3]
    if last == "response":
        answer = LlamaResponse.model_validate(data)
        assert answer.revised_text == "".join(d["text"] for _, d in deltas)
        assert_valid_answer(answer, request)
    else:
        assert last == "error", last
        assert isinstance(data["kind"], str) and data["kind"]
        assert isinstance(data["message"], str) and data["message"].strip()


def check_rest(client: httpx.Client, request: dict[str, Any], accept: str) -> None:
    headers = {**request["headers"], "Accept": accept}
    response = client.post(request["path"], content=request["body"], headers=headers)
    event(f"status {response.status_code}")
    if response.status_code != 200:
        assert_rest_error(response)
    elif accept == "text/event-stream":
        assert_rest_stream(response, request)
    else:
        assert response.headers["content-type"].startswith("application/json")
        assert_valid_answer(LlamaResponse.model_validate_json(response.content), request)


def _rest_case(body: bytes, manuscript_id: str = "ms-1") -> dict[str, Any]:
    return {
        "path": f"/api/manuscripts/{_percent(manuscript_id)}/suggest",
        "body": body,
        "value": None,
        "headers": {"Authorization": f"Bearer {APP_KEY}"},
        "backend": None,
    }


@pytest.mark.parametrize("accept", ["application/json", "text/event-stream"])
@settings(FUZZ, max_examples=300)
@given(request=rest_requests())
@example(request=_rest_case(HUGE_INT_BODY))  # was a 500
@example(request=_rest_case(b'{"text": "x", "type": "grammar"}', manuscript_id=""))  # was a 404
@example(request=_rest_case(b'{"text": "x", "type": "grammar"}', manuscript_id="a/b"))
def test_rest_route_answers_valid_or_a_json_4xx(
    rest_client: httpx.Client, request: dict[str, Any], accept: str
) -> None:
    check_rest(rest_client, request, accept)


def test_a_huge_integer_is_a_400_not_a_500(rest_client: httpx.Client) -> None:
    """Python refuses to read integers past 4,300 digits with a plain ValueError (not a
    JSONDecodeError); the route once let it through as a 500."""
    response = rest_client.post(
        "/api/manuscripts/ms-1/suggest",
        content=HUGE_INT_BODY,
        headers={"Authorization": f"Bearer {APP_KEY}"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["kind"] == "invalid_json"


@pytest.mark.parametrize("manuscript_id", ["", "a%2Fb", "a/b", "%2F"])
def test_a_manuscript_id_with_a_slash_or_none_gets_the_routes_error(
    rest_client: httpx.Client, manuscript_id: str
) -> None:
    """These once missed the route and got the page mount's `{"detail": "Not Found"}`."""
    response = rest_client.post(
        f"/api/manuscripts/{manuscript_id}/suggest",
        json={"text": "She go home.", "type": "grammar"},
        headers={"Authorization": f"Bearer {APP_KEY}"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("manuscript_id:")


def test_a_body_over_the_size_cap_is_a_413(rest_client: httpx.Client) -> None:
    body = json.dumps({"text": "a" * 300_000, "type": "grammar"}).encode()
    response = rest_client.post(
        "/api/manuscripts/ms-1/suggest",
        content=body,
        headers={"Authorization": f"Bearer {APP_KEY}"},
    )
    assert response.status_code == 413
    assert_rest_error(response)


# --- The model service ------------------------------------------------------------------------

FUZZ_MAX_TOKENS = 48
roles = st.one_of(
    st.sampled_from(["system", "developer", "user", "user", "assistant"]),
    st.sampled_from(["tool", "function", "", "USER", "user "]),
    json_values,
)
content_parts = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(st.just("text"), st.sampled_from(["image_url", ""]), json_values),
            "text": st.one_of(short_text, json_values),
            "image_url": json_values,
        },
    ),
    max_size=3,
)
valid_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": short_text}), min_size=1, max_size=3
)
clean_parts = st.lists(
    st.fixed_dictionaries({"type": st.just("text"), "text": clean_text}), min_size=1, max_size=3
)
chat_message = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user", "assistant"]),
            "content": st.one_of(texts, valid_parts),
        }
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "role": roles,
            "content": st.one_of(texts, content_parts, json_values),
            "name": json_values,
            "tool_calls": json_values,
        },
    ),
    json_values,
)
small_tokens = st.one_of(
    st.integers(1, 6),
    st.integers(1, 6),
    st.sampled_from([0, -1, FUZZ_MAX_TOKENS, FUZZ_MAX_TOKENS + 1, 2**31, 2**63, 10**30, 1.0, 2.5]),
    json_values,
)
temperatures = st.one_of(
    st.none(),
    st.just(0),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e-40, 1e-6, 0.7, 2, 2.0000001, -1, 3]),
    st.floats(),
    json_values,
)
chat_fields: dict[str, st.SearchStrategy[Any]] = {
    "model": st.one_of(st.none(), st.just(TINY_MODEL_ID), short_text, json_values),
    "stream": st.one_of(st.booleans(), st.booleans(), json_values),
    "max_tokens": small_tokens,
    "max_completion_tokens": small_tokens,
    "temperature": temperatures,
    "top_p": st.one_of(
        st.none(), st.sampled_from([1, 0.5, 0, 5e-324, 1e-300, 1.0000001]), st.floats(), json_values
    ),
    "seed": st.one_of(
        st.none(),
        st.integers(),
        st.sampled_from([0, -1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30]),
        json_values,
    ),
    "n": st.one_of(st.just(1), json_values),
    "stop": st.one_of(st.none(), st.just([]), st.just(""), json_values),
    "tools": st.one_of(st.none(), st.just([]), json_values),
    "stream_options": st.one_of(st.just({"include_usage": True}), json_values),
}

plausible_chat = st.fixed_dictionaries(
    {
        "messages": st.lists(
            st.fixed_dictionaries(
                {
                    "role": st.sampled_from(["system", "developer", "user", "assistant"]),
                    "content": st.one_of(clean_text, clean_parts),
                }
            ),
            min_size=1,
            max_size=3,
        ),
        "stream": st.booleans(),
    },
    optional={
        "model": st.sampled_from([None, TINY_MODEL_ID]),
        "max_tokens": st.one_of(st.none(), st.integers(1, 6)),
        "max_completion_tokens": st.one_of(st.none(), st.integers(1, 6)),
        "temperature": st.sampled_from([None, 0, 0.0, 1e-300, 5e-324, 1e-6, 0.7, 2]),
        "top_p": st.sampled_from([None, 1, 0.5, 5e-324]),
        "seed": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
        "n": st.just(1),
        "stop": st.sampled_from([None, [], ""]),
        "tools": st.sampled_from([None, []]),
        "stream_options": st.sampled_from([None, {"include_usage": True}]),
        "user": short_text,
    },
)

RAW_CHAT_BODIES = (
    b"",
    b"{",
    b'{"messages": [{"role": "user", "content": "hi"}]',
    b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}',
    b'{"messages": [{"role": "user", "content": "\xed\xa0\x80"}]}',
    b'{"messages": [{"role": "user", "content": "a\\ud800b"}]}',
    b'{"\\udfff": 1, "messages": [{"role": "user", "content": "hi"}]}',
    b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5_000 + b"}",
    b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
    b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}',
    b'\xef\xbb\xbf{"messages": [{"role": "user", "content": "hi"}]}',
    _nested(100_000),
    b'{"messages": [{"role": "user", "content": "hi"}], "tools": ' + _nested(5_000) + b"}",
)


@st.composite
def chat_bodies(draw: st.DrawFn) -> bytes:
    """Half plausible (a request an OpenAI client could send, with odd text and edge values:
    it reaches the engine), half wild (anything anywhere: the error paths)."""
    if draw(st.booleans()):
        return _json_bytes(draw(plausible_chat), draw(st.booleans()))
    kind = draw(st.sampled_from(["object", "object", "object", "value", "raw"]))
    if kind == "raw":
        return draw(
            st.one_of(
                st.sampled_from(RAW_CHAT_BODIES),
                st.binary(max_size=64),
                st.builds(_truncated, st.sampled_from(RAW_CHAT_BODIES[2:10]), st.integers(0, 80)),
            )
        )
    if kind == "value":
        return _json_bytes(draw(json_values), draw(st.booleans()))
    body = draw(st.fixed_dictionaries({}, optional=chat_fields))
    messages = st.one_of(
        st.lists(chat_message, min_size=1, max_size=3), st.lists(chat_message, max_size=3)
    )
    if draw(st.integers(0, 9)):
        body["messages"] = draw(messages)
    if "max_tokens" not in body and "max_completion_tokens" not in body:
        body["max_tokens"] = draw(st.integers(1, 4))
    return _json_bytes({**draw(unknown_keys), **body}, draw(st.booleans()))


@pytest.fixture(scope="module")
def chat_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The model service on a tiny Llama that ends its turn at once; with a low token cap, a
    request that samples (and so may ramble) still ends quickly."""
    folder = tiny_model_dir(tmp_path_factory.mktemp("fuzz-models"), "mute")
    engine = TransformersEngine.load(folder, model_id=TINY_MODEL_ID, version="fuzz")
    limits = ServiceLimits(
        max_tokens=FUZZ_MAX_TOKENS,
        default_max_tokens=4,
        first_token_budget_s=60,
        finish_budget_s=600,
    )
    with running_service(engine, limits) as url:
        yield url


@pytest.fixture(scope="module")
def chat_client(chat_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_url, timeout=120) as client:
        yield client


def assert_chat_error(response: httpx.Response) -> None:
    """A 4xx in OpenAI's shape: `{"error": {"message", "type", "code"}}`."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.text[:500]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"}, error
    assert isinstance(error["message"], str) and error["message"].strip(), error
    assert isinstance(error["type"], str) and error["type"], error


def assert_usage(usage: Any) -> None:
    assert usage["prompt_tokens"] > 0 and 0 <= usage["completion_tokens"] <= FUZZ_MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def assert_chat_stream(response: httpx.Response) -> None:
    """A role chunk, content chunks, one final chunk with finish reason and usage, `[DONE]`."""
    frames = [block for block in response.text.split("\n\n") if block]
    assert all(frame.startswith("data: ") for frame in frames), frames[:3]
    payloads = [frame.removeprefix("data: ") for frame in frames]
    assert len(payloads) >= 3 and payloads[-1] == "[DONE]", payloads[-3:]
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    for payload in payloads[:-2]:
        assert read_chunk(payload).finish_reason is None
    final = read_chunk(payloads[-2])
    assert final.finish_reason in ("stop", "length") and final.usage is not None
    assert_usage(chunks[-1]["usage"])


def check_chat(
    client: httpx.Client, body: bytes, authorization: str | bytes, request_id: bytes = b""
) -> None:
    key = authorization if isinstance(authorization, bytes) else authorization.encode()
    headers = {b"Authorization": key, b"X-Request-Id": request_id}
    response = client.post("/v1/chat/completions", content=body, headers=headers)
    event(f"status {response.status_code}")
    assert response.headers["x-request-id"], "every answer names its request"
    if response.status_code != 200:
        assert_chat_error(response)
    elif response.headers["content-type"].startswith("text/event-stream"):
        assert_chat_stream(response)
    else:
        assert response.headers["content-type"].startswith("application/json")
        payload = response.json()
        assert payload["object"] == "chat.completion"
        assert payload["choices"][0]["message"]["role"] == "assistant"
        assert read_completion(response.content).finish_reason in ("stop", "length")
        assert_usage(payload["usage"])


def _chat(**fields: Any) -> bytes:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **fields}
    return json.dumps(body).encode()


@settings(FUZZ, max_examples=120)
@given(
    body=chat_bodies(),
    authorization=st.sampled_from(
        [f"Bearer {API_KEY}"] * 12 + [f"Bearer {API_KEY}x", *BAD_AUTHORIZATIONS]
    ),
    request_id=st.sampled_from([b"", b"req-1", b"a" * 65, b"\xff\xfe", b"../../etc", b"a b"]),
)
@example(body=_chat(temperature=1e-300), authorization=f"Bearer {API_KEY}", request_id=b"")
@example(body=_chat(temperature=1, seed=2**64), authorization=f"Bearer {API_KEY}", request_id=b"")
def test_model_service_answers_valid_or_an_openai_4xx(
    chat_client: httpx.Client, body: bytes, authorization: str | bytes, request_id: bytes
) -> None:
    check_chat(chat_client, body, authorization, request_id)


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-40])
def test_a_vanishing_temperature_is_greedy_not_a_500(
    chat_client: httpx.Client, temperature: float
) -> None:
    """Sampling divides the logits by the temperature: one this small overflowed them to inf
    and the engine failed (a 500) on a request OpenAI accepts."""
    body = _chat(temperature=temperature)
    response = chat_client.post(
        "/v1/chat/completions", content=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("seed", [2**63, 2**64, -(2**63) - 1, 10**30])
def test_a_seed_past_64_bits_is_a_400_not_a_500(chat_client: httpx.Client, seed: int) -> None:
    """torch cannot take a seed past 64 bits; the engine failed on it (a 500)."""
    body = _chat(temperature=1.0, seed=seed)
    response = chat_client.post(
        "/v1/chat/completions", content=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert response.status_code == 400, response.text
    assert "seed" in response.json()["error"]["message"]


# --- The CLI ----------------------------------------------------------------------------------


def run_main(argv: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """`cli.main(argv)` in this process, with its own standard streams; SystemExit (argparse's
    way of refusing arguments) is an exit status like any other."""
    out, err = io.StringIO(), io.StringIO()
    fake_stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
    with (
        mock.patch.object(sys, "stdin", fake_stdin),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue()


def _option(name: str, value: str, joined: bool) -> list[str]:
    return [f"{name}={value}"] if joined else [name, value]


@st.composite
def cli_arguments(draw: st.DrawFn) -> tuple[list[str], bytes]:
    """Half plausible (a known type, a valid id or none, valid Unicode text: the answer path),
    half wild (anything in every argument and on standard input)."""
    plausible = draw(st.booleans())
    argv = ["suggest"]
    joined = draw(st.booleans())  # `--context=-x` reaches the contract; `--context -x` argparse
    suggestion_type = draw(
        st.one_of(st.none(), st.sampled_from(SUGGESTION_TYPES))
        if plausible
        else st.one_of(st.none(), st.sampled_from(SUGGESTION_TYPES), short_text)
    )
    if suggestion_type is not None:
        argv += _option("--type", suggestion_type, joined or plausible)
    context = draw(st.one_of(st.none(), clean_text if plausible else texts))
    if context is not None:
        argv += _option("--context", context, joined or plausible)
    manuscript = draw(
        st.one_of(st.none(), valid_manuscript_ids)
        if plausible
        else st.one_of(
            st.none(), st.from_regex(r"[A-Za-z0-9._:-]{1,130}", fullmatch=True), short_text
        )
    )
    if manuscript is not None:
        argv += _option("--manuscript-id", manuscript, joined or plausible)
    if draw(st.booleans()):
        argv.append("--json")
    if draw(st.booleans()):
        argv.append("--backend=mock")
    text = draw(st.one_of(clean_text if plausible else texts, st.just("-")))
    argv += ["--", text] if plausible or draw(st.booleans()) else [text]
    stdin = draw(
        st.one_of(
            st.binary(max_size=64),
            (clean_text if plausible else texts).map(
                lambda value: value.encode("utf-8", "surrogatepass")
            ),
        )
    )
    return argv, stdin


@settings(FUZZ, max_examples=120)
@given(arguments=cli_arguments())
@example(arguments=(["suggest", "--json", "😀 She go to school yesterday."], b""))
def test_cli_answers_or_exits_2_with_an_error_line(arguments: tuple[list[str], bytes]) -> None:
    argv, stdin = arguments
    code, out, err = run_main(argv, stdin)
    assert code in (0, 2), (code, err[-2000:])
    assert "Traceback" not in err, err[-2000:]
    if code == 2:
        assert "error:" in err, err[-2000:]
        return
    out.encode("utf-8")  # what a UTF-8 terminal would have to show
    if "--json" in argv[: argv.index("--") if "--" in argv else len(argv)]:
        LlamaResponse.model_validate_json(out)
    else:
        assert "suggestion(s):" in out


def test_cli_on_a_terminal_that_cannot_show_the_text_does_not_crash() -> None:
    """A non-UTF-8 standard output (an ASCII or Latin-1 locale) once turned an emoji in the
    answer into a UnicodeEncodeError traceback and exit 1; the JSON stays valid JSON."""
    for extra in ([], ["--json"]):
        result = subprocess.run(
            [sys.executable, "-m", "suggestions", "suggest", *extra, "😀 She go to school."],
            capture_output=True,
            env={**os.environ, "PYTHONIOENCODING": "ascii"},
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
        assert b"Traceback" not in result.stderr
        if extra:
            answer = LlamaResponse.model_validate_json(result.stdout)
            assert answer.revised_text.startswith("\U0001f600")
        else:
            assert result.stdout.startswith(b"\\U0001f600 She ")  # escaped, as stderr does


def test_cli_takes_nul_and_refuses_undecodable_bytes_in_options() -> None:
    """NUL and combining marks on standard input are text like any other; an undecodable byte in
    --context (which Python turns into a lone surrogate) is exit 2 with words."""
    piped = subprocess.run(
        [sys.executable, "-m", "suggestions", "suggest", "--json", "-"],
        input="She go\x00 home, e\u0301\u0302.".encode(),
        capture_output=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert "\x00" in LlamaResponse.model_validate_json(piped.stdout).revised_text
    context = subprocess.run(
        [sys.executable.encode(), b"-m", b"suggestions", b"suggest", b"--context=\xfe", b"Hi."],
        capture_output=True,
        timeout=60,
    )
    assert context.returncode == 2, context.stderr
    assert b"context has a character" in context.stderr and b"Traceback" not in context.stderr
