"""The serve CLI's n-gram speculation options: the engine's defaults, and a bad lookup window
refused before anything is fetched or started."""

from __future__ import annotations

import pytest

from modal_backend.serving import serve
from modal_backend.serving.engines.vllm_engine import VLLMSettings


def test_the_draft_options_default_to_the_engines() -> None:
    args = serve.build_parser().parse_args(["--engine", "vllm"])
    assert args.speculative == VLLMSettings.speculative
    assert args.num_speculative_tokens == VLLMSettings.num_speculative_tokens
    assert (args.prompt_lookup_min, args.prompt_lookup_max) == (
        VLLMSettings.prompt_lookup_min,
        VLLMSettings.prompt_lookup_max,
    )
    assert args.speculative_max_batch == VLLMSettings.speculative_max_batch


def test_a_lookup_window_that_cannot_be_used_stops_the_command(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--engine", "vllm", "--model", "smollm2", "--api-key", "k"]
    window = ["--prompt-lookup-min", "5", "--prompt-lookup-max", "4"]
    assert serve.main([*argv, *window]) == 2
    assert "prompt_lookup_min (5) must not exceed prompt_lookup_max (4)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        serve.build_parser().parse_args([*argv, "--num-speculative-tokens", "0"])
