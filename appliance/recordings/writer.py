"""A FLAC file written as the call goes, on a thread of its own.

libsndfile's FLAC encoder writes whole 4096-sample blocks; each write is followed by a flush,
so a process killed mid-call leaves a file holding everything up to about half a second before
(:func:`repair` makes such a file whole again). Encoding and flushing a second of 8 kHz
stereo took about 2 ms (a minute of synthetic tones and noise, 0.74 MB, on the shared 2-core dev
box under load), but a disk can stall: the event loop only queues, a bounded queue, and a
writer that falls a minute behind, or a disk that fails, stops the recording (logged once),
never the call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from pathlib import Path

import numpy as np
import soundfile as sf

from appliance.core.audio import TELEPHONE_RATE
from appliance.private_files import private_file

log = logging.getLogger(__name__)

QUEUE_BLOCKS = 60  # blocks of about a second: a minute of audio waiting for the disk
CLOSE_WAIT_S = 30.0  # a disk that hangs longer must not keep the call's record open
READ_BLOCK = 800  # 100 ms: an unfinished file's last read is lost with its error
UNKNOWN_LENGTH = 2**62  # libsndfile's length for a FLAC whose writer never finished it


def open_flac(path: Path) -> sf.SoundFile:
    return sf.SoundFile(path, "w", TELEPHONE_RATE, 2, format="FLAC", subtype="PCM_16")


class FlacWriter:
    """An ``AudioSink`` (core/call_audio.py) onto ``path``, created 0600."""

    def __init__(self, path: Path, *, queue_blocks: int = QUEUE_BLOCKS) -> None:
        self.path = path
        self.failed = False
        self.written_s = 0.0  # on disk and flushed (all but the encoder's unfinished block)
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue(maxsize=queue_blocks)
        private_file(path)
        self._thread = threading.Thread(target=self._run, name=f"recording-{path.stem}",
                                        daemon=True)
        self._thread.start()

    def write(self, stereo: np.ndarray) -> None:
        if self.failed:
            return
        try:
            self._queue.put_nowait(stereo)
        except queue.Full:
            self._stop(f"the disk is {QUEUE_BLOCKS} s behind")

    async def close(self) -> None:
        """Wait until the file is finished, or give up on it after ``CLOSE_WAIT_S``. The wait
        is a thread of its own, not the loop's executor: a hung disk must not hold a shutdown
        that waits for the executor either."""
        loop = asyncio.get_running_loop()
        finished: asyncio.Future[None] = loop.create_future()

        def done() -> None:
            if not finished.done():
                finished.set_result(None)

        def finish() -> None:
            self._queue.put(None)  # the thread drains the queue even after a failure
            self._thread.join()
            try:
                loop.call_soon_threadsafe(done)
            except RuntimeError:  # the loop is gone: nobody is waiting any more
                pass

        threading.Thread(target=finish, name=f"{self._thread.name}-close", daemon=True).start()
        try:
            await asyncio.wait_for(finished, CLOSE_WAIT_S)
        except TimeoutError:
            self._stop(f"the disk did not finish the file in {CLOSE_WAIT_S:.0f} s")

    def _stop(self, why: str) -> None:
        if not self.failed:
            self.failed = True
            log.error("recording %s stopped: %s (the call goes on)", self.path.name, why)

    def _run(self) -> None:
        try:
            with open_flac(self.path) as out:
                while (block := self._queue.get()) is not None:
                    if not self.failed:
                        out.write(block)
                        out.flush()
                        self.written_s += len(block) / TELEPHONE_RATE
        except (OSError, RuntimeError) as err:  # LibsndfileError is a RuntimeError
            self._stop(str(err))
            while self._queue.get() is not None:
                pass


def repair(path: Path) -> float | None:
    """A FLAC a killed process left unfinished (its length unknown) rewritten whole, with the
    audio it holds: its length in seconds. A finished one is left as it is (None)."""
    with sf.SoundFile(path) as src:
        if src.frames < UNKNOWN_LENGTH:
            return None
        draft = path.with_name(path.name + ".repair")
        private_file(draft)
        count = 0
        with open_flac(draft) as out:
            try:
                while (block := src.read(READ_BLOCK, dtype="int16")).size:
                    out.write(block)
                    count += len(block)
            except RuntimeError:  # the end of what was flushed: the last block is cut short
                pass
    os.replace(draft, path)
    log.warning("recording %s was left unfinished by a crash: repaired, %.1f s kept",
                path.name, count / TELEPHONE_RATE)
    return count / TELEPHONE_RATE
