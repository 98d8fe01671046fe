"""`python -m modal_backend.deploy.smoke --url URL`: the deployment's end-to-end check.

What an operator would otherwise do by hand with curl, against a Modal deployment or a local
server alike:

1. `GET /health` says ready (waiting through a cold start for up to `--wait` seconds);
2. a request without the key is refused with 401;
3. `GET /v1/models` serves the model asked for;
4. one grammar suggestion streams, with its time to first token and total time.

Exit status 0 when every check passes, 1 when any fails (each failure says what was expected
and what came back), 2 for bad arguments. The key comes from `--api-key` or `MODAL_API_KEY` and
is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import httpx
from httpx_sse import SSEError, connect_sse

from suggestions import LlamaRequest
from suggestions.errors import ConfigurationError
from suggestions.keys import read_api_key
from suggestions.prompts import build_messages

DEFAULT_TEXT = "She go to school yesterday."
DEFAULT_MODEL = "writing-llama"


class CheckFailed(Exception):
    """One check did not pass; the message is what the operator reads."""


@dataclass
class Smoke:
    """The target and what to ask it; `checks()` lists the checks in order."""

    base_url: str
    api_key: str
    model: str = DEFAULT_MODEL
    text: str = DEFAULT_TEXT
    max_tokens: int = 128
    wait_s: float = 600.0
    timeout_s: float = 120.0
    extra_headers: dict[str, str] = field(default_factory=dict)

    def checks(self) -> list[tuple[str, Callable[[httpx.Client], str]]]:
        return [
            ("health", self.health),
            ("auth", self.refuses_without_key),
            ("models", self.serves_model),
            ("stream", self.streams_a_suggestion),
        ]

    def _auth(self) -> dict[str, str]:
        return {**self.extra_headers, "Authorization": f"Bearer {self.api_key}"}

    def health(self, client: httpx.Client) -> str:
        """Ready, waiting while the service answers `loading` or is not reachable yet."""
        started = time.monotonic()
        deadline = started + self.wait_s
        last = "no answer"
        while True:
            remaining = deadline - time.monotonic()
            try:
                response = client.get(
                    f"{self.base_url}/health",
                    headers=self.extra_headers,
                    timeout=max(remaining, 1.0),
                )
                body = _json(response)
                status = body.get("status")
                if response.status_code == 200 and status == "ready":
                    return (
                        f"ready, model {body.get('model')}, version {body.get('version')} "
                        f"({time.monotonic() - started:.1f} s)"
                    )
                if status == "failed":
                    raise CheckFailed("the server reports that the model failed to load")
                last = f"HTTP {response.status_code}, status {status!r}"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() + 2 > deadline:
                raise CheckFailed(f"not ready within {self.wait_s:.0f} s (last: {last})")
            time.sleep(2)

    def refuses_without_key(self, client: httpx.Client) -> str:
        response = client.post(
            f"{self.base_url}/v1/chat/completions",
            json=self._body(stream=False),
            headers=self.extra_headers,
        )
        if response.status_code != 401:
            raise CheckFailed(f"expected 401 without a key, got {_describe(response)}")
        return "a request without the key gets 401"

    def serves_model(self, client: httpx.Client) -> str:
        response = client.get(f"{self.base_url}/v1/models", headers=self._auth())
        if response.status_code != 200:
            raise CheckFailed(f"GET /v1/models: {_describe(response)}")
        served = {
            item.get("id"): item.get("version")
            for item in _json(response).get("data", [])
            if isinstance(item, dict)
        }
        if self.model not in served:
            others = ", ".join(map(str, served)) or "nothing"
            raise CheckFailed(f"model {self.model!r} is not served; the server serves {others}")
        return f"{self.model} is served (version {served[self.model]})"

    def streams_a_suggestion(self, client: httpx.Client) -> str:
        started = time.perf_counter()
        first_token: float | None = None
        pieces: list[str] = []
        final: dict[str, Any] | None = None
        done = False
        with connect_sse(
            client,
            "POST",
            f"{self.base_url}/v1/chat/completions",
            json=self._body(stream=True),
            headers=self._auth(),
        ) as source:
            if source.response.status_code != 200:
                source.response.read()
                raise CheckFailed(f"streaming request: {_describe(source.response)}")
            try:
                for event in source.iter_sse():
                    if event.data == "[DONE]":
                        done = True
                        break
                    try:
                        chunk = json.loads(event.data)
                    except ValueError:
                        raise CheckFailed(
                            f"a stream chunk is not JSON: {event.data[:80]!r}"
                        ) from None
                    if "error" in chunk:
                        raise CheckFailed(f"error mid-stream: {chunk['error'].get('message')}")
                    choice = (chunk.get("choices") or [{}])[0]
                    text = (choice.get("delta") or {}).get("content") or ""
                    if text and first_token is None:
                        first_token = time.perf_counter() - started
                    pieces.append(text)
                    if choice.get("finish_reason"):
                        final = chunk
            except SSEError as exc:
                raise CheckFailed(f"the answer is not an event stream: {exc}") from exc
        total = time.perf_counter() - started
        answer = "".join(pieces).strip()
        if first_token is None or not answer:
            raise CheckFailed("the stream carried no text")
        if final is None or not done:
            raise CheckFailed("the stream ended without a finish chunk and [DONE]")
        usage = final.get("usage") or {}
        return (
            f"{answer[:80]!r}\n"
            f"        time to first token {first_token * 1000:.0f} ms, total {total:.2f} s, "
            f"{usage.get('completion_tokens', '?')} tokens, "
            f"finish {final['choices'][0]['finish_reason']}"
        )

    def _body(self, *, stream: bool) -> dict[str, Any]:
        request = LlamaRequest(text=self.text, type="grammar")
        return {
            "model": self.model,
            "messages": build_messages(request),
            "max_tokens": self.max_tokens,
            "stream": stream,
        }


def run(smoke: Smoke, out: TextIO) -> bool:
    """Every check, in order, each reported on its own line; True when all passed."""
    print(f"Smoke test of {smoke.base_url}", file=out)
    failures = 0
    checks = smoke.checks()
    with httpx.Client(timeout=smoke.timeout_s) as client:
        for name, check in checks:
            try:
                detail = check(client)
            except CheckFailed as exc:
                failures += 1
                print(f"  FAIL  {name}: {exc}", file=out)
            except httpx.HTTPError as exc:
                failures += 1
                print(f"  FAIL  {name}: {type(exc).__name__}: {exc}", file=out)
            else:
                print(f"  ok    {name}: {detail}", file=out)
    if failures:
        print(f"{failures} of {len(checks)} checks failed.", file=out)
    else:
        print(f"All {len(checks)} checks passed.", file=out)
    return failures == 0


def base_url(url: str) -> str:
    """The service root, from a root, `/v1` or full chat-completions URL."""
    url = url.strip().rstrip("/")
    for suffix in ("/v1/chat/completions", "/v1"):
        url = url.removesuffix(suffix)
    return url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m modal_backend.deploy.smoke",
        description="Check a deployed (or local) model service end to end.",
    )
    parser.add_argument("--url", required=True, help="the service URL (root, /v1 or endpoint)")
    parser.add_argument("--api-key", help="bearer key (default, and safer: $MODAL_API_KEY)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model id to ask for")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="passage for the grammar request")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--wait", type=float, default=600.0, help="seconds to wait for /health (cold starts)"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument(
        "--proxy-auth",
        action="store_true",
        help="send Modal proxy-auth headers from $MODAL_PROXY_KEY and $MODAL_PROXY_SECRET",
    )
    return parser


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = out or sys.stdout
    try:
        api_key = read_api_key(args.api_key or os.environ.get("MODAL_API_KEY"), "MODAL_API_KEY")
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not api_key:
        print("error: no API key: pass --api-key or set MODAL_API_KEY", file=sys.stderr)
        return 2
    headers: dict[str, str] = {}
    if args.proxy_auth:
        key, secret = os.environ.get("MODAL_PROXY_KEY"), os.environ.get("MODAL_PROXY_SECRET")
        if not (key and secret):
            print(
                "error: --proxy-auth needs MODAL_PROXY_KEY and MODAL_PROXY_SECRET", file=sys.stderr
            )
            return 2
        headers = {"Modal-Key": key, "Modal-Secret": secret}
    smoke = Smoke(
        base_url=base_url(args.url),
        api_key=api_key,
        model=args.model,
        text=args.text,
        max_tokens=args.max_tokens,
        wait_s=args.wait,
        timeout_s=args.timeout,
        extra_headers=headers,
    )
    return 0 if run(smoke, out) else 1


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _describe(response: httpx.Response) -> str:
    """Status and the server's own error message (which never holds a key)."""
    error = _json(response).get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return f"HTTP {response.status_code}" + (f": {message}" if message else "")


if __name__ == "__main__":
    sys.exit(main())
