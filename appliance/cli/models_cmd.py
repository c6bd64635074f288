"""``appliance models list|fetch|verify``: see, download and check the model presets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.config import Settings
from appliance.models.fetch import (
    FetchError,
    Problem,
    check_file,
    fetch_preset,
    preset_dir,
    verify,
)
from appliance.models.manifest import Manifest, ManifestError, Slot
from appliance.models.resolve import manifest_for, verify_settings


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("models", help="list, download and verify model presets")
    verbs = parser.add_subparsers(dest="models_verb", required=True, metavar="ACTION")

    show = verbs.add_parser("list", help="presets, their models and sizes, installed or not")
    show.set_defaults(func=list_models)

    fetch = verbs.add_parser(
        "fetch",
        help="download a preset's models into the models folder (needs network)",
        description="Download a preset's model files into <models_dir>/PRESET/, checking each "
        "file's sha256 while it streams; files already present and correct are skipped.",
    )
    fetch.add_argument("preset", metavar="PRESET", help="a preset from `appliance models list`")
    fetch.add_argument(
        "--allow-unverified",
        action="store_true",
        help="also download files the manifest has no sha256 for",
    )
    fetch.set_defaults(func=fetch_models)

    check = verbs.add_parser(
        "verify",
        help="check presence, size and sha256 of every model file",
        description="Check every model file against the manifest. Without PRESET: the models "
        "the settings select (APPLIANCE_MODELS plus per-slot path settings). Exits non-zero and "
        "prints the fix command for each problem.",
    )
    check.add_argument("preset", metavar="PRESET", nargs="?", help="default: the configured one")
    check.set_defaults(func=verify_models)


def _manifest(settings: Settings) -> Manifest | None:
    try:
        return manifest_for(settings)
    except ManifestError as err:
        print(f"appliance: {err}", file=sys.stderr)
        return None


def list_models(args: argparse.Namespace, settings: Settings) -> int:
    manifest = _manifest(settings)
    if manifest is None:
        return 2
    width = max(len(slot.name) for p in manifest.presets.values() for slot in p.slots.values())
    for name, preset in manifest.presets.items():
        mark = " (configured)" if name == settings.models else ""
        print(f"{name}{mark}: {preset.description}")
        pdir = preset_dir(settings.models_dir, name)
        for slot_name, slot in preset.slots.items():
            state = _state(slot, pdir)
            print(f"  {slot_name:<16} {slot.name:<{width}} {_size(slot.size):>9}  {state}")
    return 0


def _size(size: int) -> str:
    units = ("B", "KiB", "MiB", "GiB")
    power = min(len(units) - 1, max(0, (size.bit_length() - 1) // 10))
    return f"{size / 1024**power:.1f} {units[power]}"


def _state(slot: Slot, pdir: Path) -> str:
    """Installed, missing or incomplete, from presence and size alone (hashing is `verify`)."""
    root = slot.root(pdir)
    if root is None:
        return "missing"
    ok = [check_file(root / f.path, f, hash_it=False) is None for f in slot.files]
    return "installed" if all(ok) else "incomplete" if any(ok) else "missing"


def fetch_models(args: argparse.Namespace, settings: Settings) -> int:
    manifest = _manifest(settings)
    if manifest is None:
        return 2
    try:
        results = fetch_preset(
            manifest, args.preset, settings.models_dir, allow_unverified=args.allow_unverified
        )
    except ManifestError as err:
        print(f"appliance: {err}", file=sys.stderr)
        return 2
    except FetchError as err:
        print(f"appliance: {err}", file=sys.stderr)
        return 1
    for path, downloaded in results:
        print(f"{'fetched' if downloaded else 'present'}  {path}")
    # Downloaded files were just hashed; only the packaged slots remain to be checked.
    slots = manifest.preset(args.preset).slots
    fetched = frozenset(name for name, slot in slots.items() if not slot.packaged)
    return _report(verify(manifest, args.preset, settings.models_dir, skip=fetched), args.preset)


def verify_models(args: argparse.Namespace, settings: Settings) -> int:
    manifest = _manifest(settings)
    if manifest is None:
        return 2
    preset = args.preset or settings.models
    try:
        if args.preset and args.preset != settings.models:
            problems = verify(manifest, preset, settings.models_dir)
        else:
            problems = verify_settings(settings, manifest)
    except ManifestError as err:
        print(f"appliance: {err}", file=sys.stderr)
        return 2
    return _report(problems, preset)


def _report(problems: list[Problem], preset: str) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) with preset {preset!r}", file=sys.stderr)
        return 1
    print(f"all models of preset {preset!r} present and verified")
    return 0
