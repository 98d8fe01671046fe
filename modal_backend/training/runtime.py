"""The training process's environment: which device, which library versions, and one import fix.

The fix: Unsloth depends on torchvision, and the torchvision wheel pip picks for it is built
against another torch than the CPU wheel this project pins, so its compiled operators do not
load ("operator torchvision::nms does not exist"). transformers imports torchvision for image
processing as soon as its Trainer is imported, so a text-only training run would die on it.
`hide_broken_torchvision` makes such a torchvision look absent, which transformers, TRL and
Unsloth all handle. It must run before transformers is first imported, hence a fresh process
for training (the command line and the Modal function both are one).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys

TRACKED_LIBRARIES = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "unsloth",
    "unsloth_zoo",
    "bitsandbytes",
    "datasets",
)


class TrainingEnvironmentError(RuntimeError):
    """The process cannot train as set up; the message says what to change."""


def hide_broken_torchvision() -> bool:
    """Hide an installed torchvision whose compiled operators do not load; True if hidden.

    A working torchvision (the CUDA image on Modal) is left alone.
    """
    if sys.modules.get("torchvision", False) is None:
        return True  # already hidden
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.ops")  # where the compiled operators live
    except Exception as exc:  # the broken wheel raises RuntimeError from torch.library
        if "transformers" in sys.modules:
            raise TrainingEnvironmentError(
                "torchvision is installed but broken beside this torch "
                f"({type(exc).__name__}: {exc}), and transformers was imported before it could "
                "be hidden. Train in a fresh process (`python -m modal_backend.training train`), "
                "or `pip uninstall torchvision`: text training does not need it."
            ) from exc
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        sys.modules["torchvision"] = None  # type: ignore[assignment]  # import finds nothing
        return True
    return False


def device() -> str:
    """'cuda' where a GPU is visible, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_description() -> str:
    """The accelerator's name, for the manifest."""
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {torch.get_num_threads()} threads"


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries a run's numbers depend on (None if absent)."""
    versions: dict[str, str | None] = {}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
