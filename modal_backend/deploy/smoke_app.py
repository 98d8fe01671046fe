"""# Smoke-testing the deployment

    modal run modal_backend/deploy/smoke_app.py [--baseline] [--wait 600]

runs `modal_backend/deploy/smoke.py` on this machine against the deployed endpoint: `/health`
ready (through a cold start), a request without the key refused, the model listed, and one
suggestion streamed with its timings. `--baseline` asks for the baseline's model id instead: of
the same class with vLLM, of `Baseline` with the transformers fallback. The key comes from
`MODAL_API_KEY`; with proxy auth on, the proxy token from `MODAL_PROXY_KEY` and
`MODAL_PROXY_SECRET`.

This is an app of its own, with no functions: `modal run` starts a temporary copy of the app
it is given, and a copy of the serving app would start GPU containers (its warm ones too) for
the length of a check that only talks to the deployed one.
"""

from __future__ import annotations

import modal

from modal_backend.deploy import smoke
from modal_backend.deploy.settings import MODEL_CLASS, DeploySettings
from modal_backend.serving.weights import SERVED_MODEL_ID

SETTINGS = DeploySettings.from_env()

app = modal.App(f"{SETTINGS.app_name}-smoke")  # nothing runs in Modal: the checks run here


def endpoint_url(class_name: str) -> str:
    """The deployed web URL of a model class's `serve` endpoint."""
    url = modal.Cls.from_name(SETTINGS.app_name, class_name)().serve.get_web_url()
    if not url:
        raise RuntimeError(f"{class_name} in {SETTINGS.app_name!r} has no web URL: is it deployed?")
    return str(url)


@app.local_entrypoint()
def smoke_test(baseline: bool = False, wait: float = 600.0) -> None:
    """Exit status 1 when a check fails, as `python -m modal_backend.deploy.smoke`."""
    name, model = (
        (SETTINGS.baseline_class, SETTINGS.baseline_model_id)
        if baseline
        else (MODEL_CLASS, SERVED_MODEL_ID)
    )
    argv = ["--url", endpoint_url(name), "--model", model, "--wait", str(wait)]
    status = smoke.main([*argv, "--proxy-auth"] if SETTINGS.proxy_auth else argv)
    if status != 0:
        raise SystemExit(status)
