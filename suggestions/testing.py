"""A scripted OpenAI-compatible server on loopback, for testing clients against real sockets.

Each request takes the next queued `Reply`: a status, headers, and body parts written one by one
(bytes as HTTP chunks, floats as pauses), optionally cut off before the end. It can stream well,
fail, stall, or drop the connection mid-answer, which is what a client must survive.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .wire import (
    DONE,
    completion_body,
    completion_id,
    delta_chunk,
    error_body,
    final_chunk,
    role_chunk,
    sse_frame,
)

Part = bytes | float


@dataclass
class Reply:
    """What the server sends for one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    complete: bool = True  # False: close the connection before the body's end
    pause_before_headers_s: float = 0.0


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


def sse_reply(
    deltas: list[str],
    *,
    model: str = "scripted-model",
    finish_reason: str | None = "stop",
    usage: tuple[int, int] | None = (12, 7),
    done: bool = True,
    pause_s: float = 0.0,
    split_every: int | None = None,
    complete: bool = True,
) -> Reply:
    """A chat-completions SSE stream; `split_every` re-cuts its bytes into tiny chunks."""
    chunk_id = completion_id()
    frames = [sse_frame(role_chunk(model=model, chunk_id=chunk_id))]
    frames += [sse_frame(delta_chunk(text, model=model, chunk_id=chunk_id)) for text in deltas]
    if finish_reason is not None:
        prompt, completion = usage or (0, 0)
        last = final_chunk(
            finish_reason,
            model=model,
            chunk_id=chunk_id,
            prompt_tokens=prompt,
            completion_tokens=completion,
        )
        if usage is None:
            del last["usage"]
        frames.append(sse_frame(last))
    if done:
        frames.append(sse_frame(DONE))
    if split_every:
        stream = b"".join(frames)
        frames = [stream[i : i + split_every] for i in range(0, len(stream), split_every)]
    parts: list[Part] = []
    for frame in frames:
        parts.append(frame)
        if pause_s:
            parts.append(pause_s)
    return Reply(headers={"Content-Type": "text/event-stream"}, parts=parts, complete=complete)


def json_reply(
    content: str, *, model: str = "scripted-model", usage: tuple[int, int] = (12, 7)
) -> Reply:
    body = completion_body(
        content, "stop", model=model, prompt_tokens=usage[0], completion_tokens=usage[1]
    )
    return Reply(headers={"Content-Type": "application/json"}, parts=[json.dumps(body).encode()])


def error_reply(status: int, message: str = "", *, headers: dict[str, str] | None = None) -> Reply:
    phrase = HTTPStatus(status).phrase
    body = error_body(message or phrase, type="error", code=status)
    return Reply(
        status=status,
        headers={"Content-Type": "application/json", **(headers or {})},
        parts=[json.dumps(body).encode()],
    )


class ScriptedServer:
    """Plays queued replies to whoever connects; use as a context manager."""

    def __init__(self, *replies: Reply, default: Reply | None = None) -> None:
        self.replies: deque[Reply] = deque(replies)
        self.default = default
        self.requests: list[RecordedRequest] = []
        self.disconnects = 0  # replies cut short because the client went away
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self.replies.extend(replies)

    def _next(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.requests.append(request)
            if self.replies:
                return self.replies.popleft()
        if self.default is None:
            return error_reply(500, "the scripted server has no reply queued")
        return self.default

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            self._play(None)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body: Any = json.loads(raw) if raw else None
            except json.JSONDecodeError:
                body = raw
            self._play(body)

        def _play(self, body: Any) -> None:
            recorded = RecordedRequest(self.command, self.path, dict(self.headers), body)
            reply = server._next(recorded)
            self.close_connection = True
            try:
                time.sleep(reply.pause_before_headers_s)
                head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
                head += [f"{name}: {value}" for name, value in reply.headers.items()]
                head += ["Transfer-Encoding: chunked", "Connection: close", "", ""]
                self.wfile.write("\r\n".join(head).encode("latin-1"))
                for part in reply.parts:
                    if isinstance(part, float):
                        time.sleep(part)
                    elif part:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                if reply.complete:
                    self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                with server._lock:
                    server.disconnects += 1

    return Handler
