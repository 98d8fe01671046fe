import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from suggestions.contract import (
    DEFAULT_MAX_TEXT_CHARS,
    LlamaRequest,
    LlamaResponse,
    LlamaSuggestion,
    TokenUsage,
    contract_json_schema,
    describe_validation_error,
    parse_request,
)

SNAPSHOT = Path(__file__).parent / "snapshots" / "contract.schema.json"


def test_json_schema_matches_the_committed_snapshot() -> None:
    committed = json.loads(SNAPSHOT.read_text())
    assert contract_json_schema() == committed, (
        "The suggestion contract changed. If that is deliberate, regenerate the snapshot with "
        "`python -m suggestions schema > tests/suggestions/snapshots/contract.schema.json`."
    )


def _problem(data: object, **kwargs: int) -> str:
    with pytest.raises(ValidationError) as caught:
        parse_request(data, **kwargs)
    return describe_validation_error(caught.value)


@pytest.mark.parametrize("text", ["", "   ", "\n\t \u00a0"])
def test_empty_or_blank_text_is_refused_naming_the_field(text: str) -> None:
    assert _problem({"text": text, "type": "grammar"}) == (
        "text: text is empty; send the passage to improve"
    )


def test_text_over_the_default_limit_says_the_limit() -> None:
    message = _problem({"text": "a" * (DEFAULT_MAX_TEXT_CHARS + 1), "type": "style"})
    assert message == "text: text is 8,001 characters; the limit is 8,000. Send a shorter passage"


def test_text_at_the_limit_is_accepted() -> None:
    request = parse_request({"text": "a" * DEFAULT_MAX_TEXT_CHARS, "type": "style"})
    assert len(request.text) == DEFAULT_MAX_TEXT_CHARS


def test_limit_is_configurable_and_applies_to_context_too() -> None:
    assert "the limit is 10" in _problem({"text": "x" * 11, "type": "grammar"}, max_text_chars=10)
    message = _problem({"text": "short", "type": "grammar", "context": "c" * 11}, max_text_chars=10)
    assert message.startswith("context: context is 11 characters")


def test_unknown_type_names_the_field_and_the_choices() -> None:
    message = _problem({"text": "Hello.", "type": "tone"})
    assert message == "type: Input should be 'grammar', 'clarity' or 'style'"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"text": 42, "type": "grammar"}, "text"),
        ({"text": ["a"], "type": "grammar"}, "text"),
        ({"text": "ok", "type": 1}, "type"),
        ({"text": "ok", "type": "grammar", "context": 3}, "context"),
        ({"text": "ok", "type": "grammar", "manuscript_id": "has spaces"}, "manuscript_id"),
        ({"text": "ok", "type": "grammar", "temperature": 2}, "temperature"),
        ({"type": "grammar"}, "text"),
    ],
)
def test_wrong_types_and_unknown_fields_name_the_field(data: dict, field: str) -> None:
    assert _problem(data).startswith(f"{field}: ")


def test_json_input_is_validated_the_same_way() -> None:
    assert _problem('{"text": "", "type": "grammar"}').startswith("text: text is empty")
    request = parse_request(b'{"text": "Hi.", "type": "clarity", "manuscript_id": "ms-1"}')
    assert request == LlamaRequest(text="Hi.", type="clarity", manuscript_id="ms-1")


def test_requests_are_immutable() -> None:
    request = LlamaRequest(text="Hi.", type="grammar")
    with pytest.raises(ValidationError):
        request.text = "changed"  # type: ignore[misc]


def test_suggestion_offsets_must_match_the_original_span() -> None:
    LlamaSuggestion(original="go", replacement="went", start=4, end=6, type="grammar")
    with pytest.raises(ValidationError, match="end - start must equal"):
        LlamaSuggestion(original="go", replacement="went", start=4, end=9, type="grammar")


def test_response_round_trips_through_json_with_total_tokens() -> None:
    response = LlamaResponse(
        suggestions=[LlamaSuggestion(original="a", replacement="b", start=0, end=1, type="style")],
        revised_text="b",
        model_id="m",
        backend="mock",
        usage=TokenUsage(prompt_tokens=3, completion_tokens=4),
        latency_ms=1.5,
    )
    dumped = json.loads(response.model_dump_json())
    assert dumped["usage"]["total_tokens"] == 7
    assert LlamaResponse.model_validate_json(response.model_dump_json()) == response
