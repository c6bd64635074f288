"""Download a preset's model files, and verify what is on disk against the manifest.

Downloads stream into a temporary file beside the destination while being hashed, and only a
file with the right size and sha256 is moved into place with ``os.replace``: an interrupted,
truncated or tampered download never leaves a half-written model where the server would load it.
Only ``appliance models fetch`` touches the network; serving never downloads anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import httpx
from tqdm import tqdm

from appliance.models.manifest import Manifest, ModelFile, Slot

log = logging.getLogger(__name__)

CHUNK = 1 << 20
TIMEOUT = httpx.Timeout(30.0, read=120.0)


class FetchError(RuntimeError):
    """A file could not be downloaded or did not match the manifest; names the file and why."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"cannot fetch {file}: {reason}")
        self.file, self.reason = file, reason


@dataclass(frozen=True, slots=True)
class Problem:
    """Something wrong with an installed model, and the command that fixes it."""

    model: str
    path: str
    reason: str
    fix: str

    def __str__(self) -> str:
        return f"{self.model}: {self.path}: {self.reason}\n    fix: {self.fix}"


def preset_dir(models_dir: str | Path, preset: str) -> Path:
    """Where a downloaded preset's files live."""
    return Path(models_dir).expanduser() / preset


def model_label(preset: str, slot_name: str, slot: Slot) -> str:
    return f"{preset}/{slot_name} [{slot.name}]"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: Path, spec: ModelFile, *, hash_it: bool = True) -> str | None:
    """Why ``path`` does not match ``spec`` (missing, wrong size, wrong sha256), or None."""
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != spec.size:
        return f"size {size} bytes, expected {spec.size}"
    if hash_it and spec.sha256 and (actual := sha256_of(path)) != spec.sha256:
        return f"sha256 {actual}, expected {spec.sha256}"
    return None


def downloads(manifest: Manifest, preset: str) -> Iterator[tuple[str, Slot, ModelFile]]:
    """Every file of ``preset`` that comes from a hub rather than a package."""
    for slot_name, slot in manifest.preset(preset).slots.items():
        if not slot.packaged:
            for file in slot.files:
                yield slot_name, slot, file


def fetch_preset(
    manifest: Manifest,
    preset: str,
    models_dir: str | Path,
    *,
    allow_unverified: bool = False,
    client: httpx.Client | None = None,
) -> list[tuple[Path, bool]]:
    """Download the preset's missing or damaged files; returns (path, downloaded) per file.

    Files without a published checksum are refused, before anything is downloaded, unless
    ``allow_unverified``: a model loaded into the server should be the one that was reviewed.
    """
    wanted = list(downloads(manifest, preset))
    unverified = [file.path for _, _, file in wanted if not file.sha256]
    if unverified and not allow_unverified:
        reason = "no sha256 in the manifest (use --allow-unverified to download anyway)"
        raise FetchError(", ".join(unverified), reason)
    root = preset_dir(models_dir, preset)
    for _, _, file in wanted:  # load_manifest refuses these; a Manifest built in code may not
        if not (root / file.path).resolve().is_relative_to(root.resolve()):
            raise FetchError(file.path, f"resolves outside {root}")
    own_client = client is None
    client = client or httpx.Client(follow_redirects=True, timeout=TIMEOUT)
    try:
        return [_fetch_one(client, root / file.path, file) for _, _, file in wanted]
    finally:
        if own_client:
            client.close()


def _fetch_one(client: httpx.Client, dest: Path, file: ModelFile) -> tuple[Path, bool]:
    if check_file(dest, file) is None:
        log.info("already present: %s", dest)
        return dest, False
    download(client, file.url, dest, size=file.size, sha256=file.sha256)
    return dest, True


def download(client: httpx.Client, url: str, dest: Path, *, size: int, sha256: str) -> None:
    """Stream ``url`` into ``dest`` atomically; FetchError and no leftovers on any failure."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as err:
        raise FetchError(str(dest), f"cannot write to {dest.parent}: {err}") from err
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            got, digest = _stream(client, url, out, size=size, label=dest.name)
            out.flush()
            os.fsync(out.fileno())
        if reason := _mismatch(got, digest, size=size, sha256=sha256):
            raise FetchError(str(dest), reason)
        tmp.chmod(0o644)  # mkstemp makes it owner-only; the service may run as another user
        os.replace(tmp, dest)
    except httpx.HTTPStatusError as err:
        raise FetchError(str(dest), f"HTTP {err.response.status_code} from {url}") from err
    except httpx.HTTPError as err:
        raise FetchError(str(dest), f"download from {url} failed: {err}") from err
    except OSError as err:
        raise FetchError(str(dest), f"cannot write {dest}: {err}") from err
    finally:
        tmp.unlink(missing_ok=True)
    log.info("fetched %s", dest)


def _stream(
    client: httpx.Client, url: str, out: BinaryIO, *, size: int, label: str
) -> tuple[int, str]:
    """Copy the response body to ``out``, hashing as it goes; returns (bytes, sha256).

    Never more than ``size`` bytes (the manifest's): a server that announces or sends more is
    cut off, so a wrong or hostile URL cannot fill the disk.
    """
    digest, got = hashlib.sha256(), 0
    with client.stream("GET", url) as response:
        response.raise_for_status()
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > size:
            raise FetchError(url, f"the server announces {announced} bytes, the manifest {size}")
        with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=label,
                  disable=None, leave=False) as bar:
            for chunk in response.iter_bytes(CHUNK):
                if got + len(chunk) > size:
                    raise FetchError(url, f"more than the manifest's {size} bytes; stopped")
                out.write(chunk)
                digest.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    return got, digest.hexdigest()


def _mismatch(got: int, digest: str, *, size: int, sha256: str) -> str | None:
    if got != size:
        return f"received {got} bytes, expected {size}"
    if sha256 and digest != sha256:
        return f"checksum mismatch: sha256 {digest}, expected {sha256}"
    return None


def verify(
    manifest: Manifest, preset: str, models_dir: str | Path, *, skip: frozenset[str] = frozenset()
) -> list[Problem]:
    """Check presence, size and sha256 of every file of ``preset`` (bar the ``skip`` slots).

    Packaged slots are checked inside the installed package, so a wrong package version shows
    up as a checksum problem whose fix pins the right one.
    """
    problems = []
    for slot_name, slot in manifest.preset(preset).slots.items():
        if slot_name not in skip:
            problems += _verify_slot(preset, slot_name, slot, preset_dir(models_dir, preset))
    return problems


def _verify_slot(preset: str, slot_name: str, slot: Slot, pdir: Path) -> list[Problem]:
    model, fix = model_label(preset, slot_name, slot), slot.fix(preset)
    root = slot.root(pdir)
    if root is None:
        return [Problem(model, f"<{slot.package}>", "package not installed", fix)]
    return [
        Problem(model, str(root / f.path), reason, fix)
        for f in slot.files
        if (reason := check_file(root / f.path, f)) is not None
    ]
