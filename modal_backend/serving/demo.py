"""`python -m modal_backend.serving.demo`: real model suggestions on this machine, end to end.

Fetches the local default model once, starts the model service on it (a child process on a free
loopback port, with a fresh random key), points the `suggestions` command line's custom and
baseline slots at it, as a deployment points them at Modal, and stops the server when done.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys

from suggestions.config import Settings

from .local import LocalModelServer, ServedModel, slot_variables
from .model_parts import LOCAL_DEFAULT, ModelUnavailable, ensure_model

EXAMPLES = (
    ("custom", "grammar", "She go to school yesterday and buyed a books."),
    ("baseline", "grammar", "She go to school yesterday and buyed a books."),
    (
        "custom",
        "clarity",
        "Due to the fact that it was raining, we stayed inside in order to finish the chapter.",
    ),
)


def main() -> int:
    try:
        ensure_model(LOCAL_DEFAULT)
    except ModelUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    log_path = Settings().state_dir / "local-model-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    server = LocalModelServer(api_key=secrets.token_urlsafe(24), log_path=log_path)
    print(f"Starting the model service on {LOCAL_DEFAULT.label} (log: {log_path})...")
    try:
        health = server.start(timeout_s=300)
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"Ready: {health['model']} at {server.url}\n")
    served = ServedModel(url=server.url, model=LOCAL_DEFAULT.model_id, api_key=server.api_key)
    env = {**os.environ, **slot_variables(custom=served, baseline=served)}
    status = 0
    try:
        for backend, kind, text in EXAMPLES:
            prompt = "our task prompt" if backend == "custom" else "the old generic prompt"
            print(f"== {kind}, {backend} slot ({prompt}) ==")
            command = [sys.executable, "-m", "suggestions", "suggest", "--backend", backend]
            result = subprocess.run([*command, "--type", kind, text], env=env, check=False)
            status = status or result.returncode
            print()
        print("== usage so far ==")
        subprocess.run([sys.executable, "-m", "suggestions", "usage"], env=env, check=False)
    finally:
        server.stop()
    return status


if __name__ == "__main__":
    sys.exit(main())
