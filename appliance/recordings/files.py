"""Where recordings live (``data_dir/recordings/<CallSid>.flac``, 0600 in a 0700 folder), and
their end: deleted with their call, or by age."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import soundfile as sf

from appliance.private_files import private_dir
from appliance.recordings.writer import UNKNOWN_LENGTH, FlacWriter, repair
from appliance.telephony.sids import is_call_sid

log = logging.getLogger(__name__)

DAY_S = 86400.0
SUFFIX = ".flac"


class Recordings:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, call_sid: str) -> Path:
        """The file of ``call_sid``; a malformed sid is refused, never made into a path."""
        if not is_call_sid(call_sid):
            raise ValueError(f"not a call sid: {call_sid[:40]!r}")
        return self.directory / f"{call_sid}{SUFFIX}"

    def relative(self, call_sid: str) -> str:
        """What the call log keeps: the path under the data dir, which may move."""
        return f"{self.directory.name}/{call_sid}{SUFFIX}"

    def open(self, call_sid: str) -> FlacWriter:
        private_dir(self.directory)
        return FlacWriter(self.path(call_sid))

    def find(self, call_sid: str) -> Path | None:
        try:
            path = self.path(call_sid)
        except ValueError:
            return None
        return path if path.is_file() else None

    def seconds(self, call_sid: str) -> float | None:
        """The length of a finished recording (None while it is still being written)."""
        if (path := self.find(call_sid)) is None:
            return None
        try:
            info = sf.info(str(path))
        except (OSError, RuntimeError):
            return None
        return None if info.frames >= UNKNOWN_LENGTH else round(info.frames / info.samplerate, 2)

    def delete(self, call_sids: Iterable[str]) -> int:
        """Remove the recordings of these calls (purged from the call log); how many."""
        count = 0
        for sid in call_sids:
            if (path := self.find(sid)) is not None:
                path.unlink(missing_ok=True)
                count += 1
        return count

    def purge(self, days: float, purged: Iterable[str]) -> int:
        """Retention: the recordings of calls just purged from the call log, and any other
        older than ``days``; how many were removed."""
        return self.delete(purged) + self.purge_older_than(days)

    def purge_older_than(self, days: float, now: float | None = None) -> int:
        """Remove recordings last written more than ``days`` ago, whatever the call log says
        (a call log on PostgreSQL, a file whose call is gone); how many."""
        if days <= 0:
            raise ValueError("days must be positive")
        cutoff = (now or time.time()) - days * DAY_S
        count = 0
        for path in self._files():
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                count += 1
        return count

    def repair_all(self) -> dict[str, float]:
        """Make whole what a crash left unfinished; the length of each file repaired."""
        repaired: dict[str, float] = {}
        for path in self._files():
            try:
                seconds = repair(path)
            except (OSError, RuntimeError) as err:
                log.error("recording %s cannot be read: %s", path.name, err)
                continue
            if seconds is not None:
                repaired[path.stem] = seconds
        return repaired

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in self.directory.iterdir() if p.suffix == SUFFIX and is_call_sid(p.stem)]
