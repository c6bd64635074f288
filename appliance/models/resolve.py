"""Turn settings into the model files the engines load, without ever downloading anything.

Each slot comes from, in order: its explicit path setting (``APPLIANCE_LLM_MODEL`` …), else the
configured preset (``APPLIANCE_MODELS``). The ``default`` preset is the PyPI-shipped models and
resolves without reading the manifest; other presets live under ``<models_dir>/<preset>/``.
Serving checks presence and size only (cheap); ``appliance models verify`` also hashes.
"""

from __future__ import annotations

from pathlib import Path

from appliance.config import Settings, env_name
from appliance.models.fetch import Problem, check_file, preset_dir, verify
from appliance.models.locate import SLOTS, ModelMissing, ModelPaths, default_path
from appliance.models.manifest import (
    DEFAULT_PRESET,
    Manifest,
    ManifestError,
    Preset,
    Slot,
    find_manifest,
    load_manifest,
)

# slot -> the Settings field that overrides it with an explicit path
OVERRIDE_FIELDS = {
    "stt": "stt_model",
    "llm": "llm_model",
    "tts": "tts_voice",
    "embed": "embed_model",
}


def overrides(settings: Settings) -> dict[str, Path]:
    """The slots given an explicit path in the settings."""
    return {
        slot: Path(value).expanduser()
        for slot, field in OVERRIDE_FIELDS.items()
        if (value := getattr(settings, field))
    }


def manifest_for(settings: Settings) -> Manifest:
    """The manifest in effect: an operator's copy in ``models_dir`` wins over the shipped one."""
    return load_manifest(find_manifest(settings.models_dir))


def resolve_models(settings: Settings, manifest: Manifest | None = None) -> ModelPaths:
    """Path of every slot's model; raises ModelMissing naming the slot and the fix command."""
    explicit = overrides(settings)
    for slot, path in explicit.items():
        if not path.exists():
            raise ModelMissing(slot, str(path), _override_fix(slot, settings.models))
    if settings.models == DEFAULT_PRESET:
        found = {slot: explicit.get(slot) or default_path(slot) for slot in SLOTS}
        return ModelPaths(**found)
    preset = _preset(settings, manifest)
    root = preset_dir(settings.models_dir, settings.models)
    found = {
        slot: explicit.get(slot) or _preset_path(slot, preset.slots[slot], settings.models, root)
        for slot in SLOTS
    }
    return ModelPaths(**found)


def llm_tool_format(settings: Settings, manifest: Manifest | None = None) -> str:
    """The llama.cpp chat handler the in-process model calls functions with; empty: the rules.

    Declared, never guessed from the file: ``llm_tools = "auto"`` takes the preset's word (an
    explicit ``llm_model`` path has none), "on" uses ChatML function calling for any model. With
    a model server, "on" is the server's: the in-process fall-back keeps its preset's word.
    """
    if settings.llm_tools == "off":
        return ""
    if settings.llm_tools == "on" and settings.llm_backend == "in-process":
        return CHATML_TOOLS
    if settings.llm_model or settings.models == DEFAULT_PRESET:
        return ""
    return _preset(settings, manifest).slots["llm"].tool_format


CHATML_TOOLS = "chatml-function-calling"


def _preset(settings: Settings, manifest: Manifest | None) -> Preset:
    """The configured preset, or ModelMissing saying how to pick a valid one."""
    try:
        manifest = manifest or manifest_for(settings)
    except ManifestError as err:
        raise ModelMissing("models", settings.models, f"repair the model manifest: {err}") from err
    if settings.models not in manifest.presets:
        known = ", ".join(sorted(manifest.presets))
        fix = f"set {env_name('models')} to one of: {known}"
        raise ModelMissing("models", settings.models, fix)
    return manifest.presets[settings.models]


def _preset_path(slot_name: str, slot: Slot, preset: str, root: Path) -> Path:
    """The slot's path inside its package or preset folder, once all its files are there."""
    base = slot.root(root)
    if base is None:
        raise ModelMissing(slot_name, f"<{slot.package}>/{slot.path}", slot.fix(preset))
    for file in slot.files:
        if check_file(base / file.path, file, hash_it=False) is not None:
            raise ModelMissing(slot_name, str(base / file.path), slot.fix(preset))
    return base / slot.path


def _override_fix(slot: str, preset: str) -> str:
    variable = env_name(OVERRIDE_FIELDS[slot])
    return f"point {variable} at an existing file, or unset it to use the {preset!r} preset"


def verify_settings(settings: Settings, manifest: Manifest | None = None) -> list[Problem]:
    """Problems with the models the settings select: explicit paths, then the preset's files."""
    explicit = overrides(settings)
    problems = [
        Problem(f"{slot} ({env_name(OVERRIDE_FIELDS[slot])})", str(path), "missing",
                _override_fix(slot, settings.models))
        for slot, path in explicit.items()
        if not path.exists()
    ]
    manifest = manifest or manifest_for(settings)
    skip = frozenset(explicit)
    return problems + verify(manifest, settings.models, settings.models_dir, skip=skip)
