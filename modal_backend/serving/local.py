"""Running the model service on this machine: in a thread (tests, benchmarks) or as a child
process that is started, waited for and stopped cleanly (the demo and the reviewer app); and
`slot_variables`, the one place that says how the `suggestions` slots are pointed at model
servers (locally here, on Modal by the deployment)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx


@dataclass(frozen=True)
class ServedModel:
    """A model service endpoint and the model id to ask it for."""

    url: str
    model: str
    api_key: str


def slot_variables(
    custom: ServedModel | None = None,
    baseline: ServedModel | None = None,
    standin: ServedModel | None = None,
) -> dict[str, str]:
    """The `suggestions` variables that point the model slots at model services: as
    environment for a child process or a container, or for `Settings.with_variables`."""
    from suggestions.config import MODEL_SLOTS, Settings

    variables: dict[str, str] = {}
    for name, served in (("custom", custom), ("baseline", baseline), ("standin", standin)):
        if served is not None:
            slot = MODEL_SLOTS[name]
            variables |= {
                Settings.variable(slot.url): served.url,
                Settings.variable(slot.api_key): served.api_key,
                Settings.variable(slot.model): served.model,
            }
    return variables


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a background thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class LocalModelServer:
    """`python -m modal_backend.serving.serve` as a child process: started, waited for until
    `/health` says ready, and stopped (terminate, then kill) on exit."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str = "default",
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.command = [
            sys.executable,
            "-m",
            "modal_backend.serving.serve",
            "--model",
            model,
            "--host",
            host,
            "--port",
            str(self.port),
            *extra_args,
        ]
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 600) -> dict[str, Any]:
        """Start and wait until the model is loaded; returns the `/health` body."""
        self.launch()
        return self.wait_ready(timeout_s)

    def launch(self) -> None:
        """Start the child and return at once (start several, then `wait_ready` on each)."""
        env = {**os.environ, "MODAL_API_KEY": self.api_key}
        if self.log_path:
            with self.log_path.open("ab") as log:  # the child keeps its own copy
                self.process = subprocess.Popen(
                    self.command, env=env, stdout=log, stderr=log, preexec_fn=_die_with_parent
                )
        else:
            self.process = subprocess.Popen(
                self.command,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
            )

    def wait_ready(self, timeout_s: float = 600) -> dict[str, Any]:
        """Wait until `/health` says ready; returns its body. Raises if the child exits or
        reports a failed load, or after `timeout_s`."""
        assert self.process is not None, "launch() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(
                    f"the model server exited with status {self.process.returncode}{where}"
                )
            try:
                response = httpx.get(f"{self.url}/health", timeout=2)
                if response.status_code == 200:
                    return dict(response.json())
                if response.json().get("status") == "failed":
                    self.stop()
                    where = f"; see {self.log_path}" if self.log_path else ""
                    raise RuntimeError(f"the model server could not load the model{where}")
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"the model server was not ready within {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 10) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child before it runs: on Linux, ask for SIGTERM when the parent dies, however it
    dies (even SIGKILL), so a model server never outlives the app that started it. (Linux ties
    this to the starting thread: start the server from a thread that lives as long as it.)"""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
