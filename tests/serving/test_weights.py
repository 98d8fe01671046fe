"""Base weights for the baseline and adapter runs come from the Hugging Face cache volume; a
cold start with a warm cache must not need the Hub (which this machine cannot reach)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modal_backend.serving.weights import hub_fetcher


def test_a_cached_model_is_found_without_the_hub(tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--acme--tiny-base"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert hub_fetcher(cache_dir=tmp_path)("acme/tiny-base") == snapshot


def test_a_model_missing_from_the_cache_goes_to_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    asked: list[dict[str, object]] = []

    def offline_hub(repo_id: str, **kwargs: object) -> str:
        asked.append(kwargs)
        if kwargs.get("local_files_only"):
            from huggingface_hub.errors import LocalEntryNotFoundError

            raise LocalEntryNotFoundError("not cached")
        return str(tmp_path / "downloaded")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline_hub)
    assert hub_fetcher(cache_dir=tmp_path)("acme/other") == tmp_path / "downloaded"
    assert [call.get("local_files_only") for call in asked] == [True, None]
