"""Inference engines behind the model service. Each engine module imports its own library, so
import `transformers_engine` or `llamacpp_engine` only when that engine is wanted."""

from .base import (
    Delta,
    Engine,
    EngineError,
    EngineEvent,
    EngineStream,
    Finished,
    Message,
    PromptTooLong,
    SamplingParams,
)

__all__ = [
    "Delta",
    "Engine",
    "EngineError",
    "EngineEvent",
    "EngineStream",
    "Finished",
    "Message",
    "PromptTooLong",
    "SamplingParams",
]
