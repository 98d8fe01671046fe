"""`python -m suggestions`: suggestions and usage from a terminal, a thin layer over the library."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import sys
from pathlib import Path
from typing import TextIO

from pydantic import ValidationError

from .backends import BACKEND_NAMES
from .config import Settings
from .contract import (
    SUGGESTION_TYPES,
    LlamaResponse,
    contract_json_schema,
    describe_validation_error,
    parse_request,
)
from .errors import BackendError, ConfigurationError
from .service import SuggestionService
from .usage import UsageStore

EXIT_OK, EXIT_BACKEND_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m suggestions", description="Grammar, clarity and style suggestions."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log retries and details")
    commands = parser.add_subparsers(dest="command", required=True)

    suggest = commands.add_parser("suggest", help="stream a suggestion for a passage")
    suggest.add_argument("text", help="the passage, or - to read it from standard input")
    suggest.add_argument("--backend", choices=BACKEND_NAMES, default="custom")
    suggest.add_argument("--type", choices=SUGGESTION_TYPES, default="grammar")
    suggest.add_argument("--context", help="surrounding text that informs the edit")
    suggest.add_argument("--manuscript-id", help="the manuscript the passage belongs to")
    suggest.add_argument("--json", action="store_true", help="print the final response as JSON")

    usage = commands.add_parser("usage", help="usage totals per day and model")
    usage.add_argument("--day", help="only this day (YYYY-MM-DD, UTC)")
    usage.add_argument("--json", action="store_true")

    commands.add_parser("schema", help="print the contract's JSON Schema")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    tolerate_unencodable(sys.stdout)
    try:
        settings = load_settings()
        if args.command == "schema":
            print(json.dumps(contract_json_schema(), indent=2, sort_keys=True))
            return EXIT_OK
        if args.command == "usage":
            return show_usage(UsageStore(settings.usage_db_path), args.day, args.json, sys.stdout)
        return asyncio.run(run_suggest(args, settings, sys.stdout))
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ValidationError as exc:
        print(f"error: invalid input\n{describe_validation_error(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BackendError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return EXIT_BACKEND_FAILED


def load_settings() -> Settings:
    """Environment variables, then a `.env` file in the working directory if there is one."""
    env_file = Path(".env")
    return Settings(_env_file=env_file if env_file.is_file() else None)


def tolerate_unencodable(stream: TextIO) -> None:
    """A terminal whose encoding cannot show a character of the answer (an ASCII or Latin-1
    locale) gets an escape for it, as standard error does, instead of a UnicodeEncodeError
    traceback halfway through the streamed text."""
    if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
        stream.reconfigure(errors="backslashreplace")


def response_json(response: LlamaResponse, out: TextIO) -> str:
    """The response as JSON; with `\\u` escapes where `out` cannot write a character, so that
    it stays valid JSON (an escape from `tolerate_unencodable` would not be)."""
    text = response.model_dump_json(indent=2)
    try:
        text.encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return json.dumps(response.model_dump(mode="json"), indent=2)
    return text


def read_stdin() -> str:
    """Standard input as UTF-8, whatever the locale says; bytes that are not UTF-8 are bad
    input (exit 2), not a crash."""
    data = sys.stdin.buffer.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"standard input is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); convert it, for example with iconv -t UTF-8"
        ) from None


async def run_suggest(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    text = read_stdin() if args.text == "-" else args.text
    request = parse_request(
        {
            "text": text,
            "type": args.type,
            "context": args.context,
            "manuscript_id": args.manuscript_id,
        },
        max_text_chars=settings.max_text_chars,
    )
    service = SuggestionService.from_settings(settings, (args.backend,))
    try:
        async for item in service.stream(request, backend=args.backend):
            if isinstance(item, LlamaResponse):
                if args.json:
                    out.write(response_json(item, out) + "\n")
                else:
                    out.write("\n\n" + format_summary(item, service.backend(args.backend).label))
            elif not args.json:
                out.write(item.text)
                out.flush()
    finally:
        await service.aclose()
    return EXIT_OK


def format_summary(response: LlamaResponse, label: str) -> str:
    lines = [f"{len(response.suggestions)} suggestion(s):"]
    for s in response.suggestions:
        lines.append(f"  [{s.start}:{s.end}] {s.original!r} -> {s.replacement!r}")
    first = (
        f", first text after {response.time_to_first_token_ms:.0f} ms"
        if response.time_to_first_token_ms is not None
        else ""
    )
    estimated = " (estimated)" if response.usage.estimated else ""
    lines.append(
        f"{response.backend} = {label} | model {response.model_id} | "
        f"{response.latency_ms:.0f} ms{first} | "
        f"{response.usage.prompt_tokens}+{response.usage.completion_tokens} tokens{estimated}"
        + (", from the session cache" if response.cached else "")
    )
    return "\n".join(lines) + "\n"


def show_usage(store: UsageStore, day: str | None, as_json: bool, out: TextIO) -> int:
    totals = store.totals(day=day)
    if as_json:
        out.write(json.dumps([vars(t) for t in totals], indent=2) + "\n")
        return EXIT_OK
    if not totals:
        out.write(f"No usage recorded yet in {store.path}.\n")
        return EXIT_OK
    header = (
        "day",
        "backend",
        "model",
        "calls",
        "errors",
        "cached",
        "prompt",
        "completion",
        "mean ms",
    )
    rows = [
        (
            t.day,
            t.backend,
            t.model_id,
            str(t.calls),
            str(t.errors),
            str(t.cached),
            str(t.prompt_tokens) + ("~" if t.estimated_calls else ""),
            str(t.completion_tokens) + ("~" if t.estimated_calls else ""),
            "-" if t.mean_latency_ms is None else f"{t.mean_latency_ms:.0f}",
        )
        for t in totals
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    if any(t.estimated_calls for t in totals):
        out.write("~ includes token counts estimated where the server reported none\n")
    return EXIT_OK
