"""Private by default on disk: the data dir is 0700 and what the appliance writes there 0600.

Call records (who called, what they said), the local tokens and the knowledge base are nobody
else's business on a shared box. The systemd unit sets ``UMask=0077`` and
``StateDirectoryMode=0700``; these helpers make the same hold wherever the appliance runs
(Docker, a shell), and tighten a data dir an older version left readable.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077  # what `appliance serve` runs with: files it or its libraries create are private


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) if needed and make it 0700 when it is ours."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _tighten(path, DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Create ``path`` empty with 0600 if it does not exist, else make it 0600 when it is ours."""
    private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        _tighten(path, FILE_MODE)
    return path


def _tighten(path: Path, mode: int) -> None:
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & ~mode and info.st_uid == os.geteuid():
        path.chmod(mode)
        log.info("made %s private (mode %o)", path, mode)
