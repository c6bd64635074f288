"""Recording files: FLAC written as the call goes, a crash leaves a readable file, a failing
disk stops the recording and nothing else, retention and modes."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from appliance.recordings import FlacWriter, Recordings, writer
from appliance.recordings.files import DAY_S
from appliance.recordings.writer import repair

RATE = 8000
SID = "CA" + "1" * 32
OTHER = "CA" + "2" * 32


def block(seconds: float, seed: int) -> np.ndarray:
    """Stereo noise, distinct per block, so the file's content can be compared exactly."""
    rng = np.random.default_rng(seed)
    return rng.integers(-8000, 8000, size=(int(seconds * RATE), 2), dtype=np.int16)


def test_a_recording_is_a_lossless_stereo_flac_written_block_by_block(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path / "recordings")
    sink = recordings.open(SID)
    blocks = [block(1.0, seed) for seed in range(3)]

    async def record() -> None:
        for b in blocks:
            sink.write(b)
        await sink.close()

    asyncio.run(record())
    path = recordings.find(SID)
    assert path is not None and path.name == f"{SID}.flac"
    data, rate = sf.read(path, dtype="int16")
    assert rate == RATE and data.shape == (3 * RATE, 2)
    assert np.array_equal(data, np.concatenate(blocks))
    assert sf.info(str(path)).format == "FLAC"
    assert recordings.seconds(SID) == 3.0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


CRASH = """
import os, signal, sys, time
import numpy as np
from pathlib import Path
from appliance.recordings import FlacWriter
from tests.unit.test_recordings import block
sink = FlacWriter(Path(sys.argv[1]))
for seed in range(int(sys.argv[2])):
    sink.write(block(1.0, seed))
while sink.written_s < int(sys.argv[2]):  # on disk and flushed: now the process dies
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_process_leaves_the_audio_up_to_the_last_flush(tmp_path: Path) -> None:
    path = tmp_path / f"{SID}.flac"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", CRASH, str(path), "5"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    with sf.SoundFile(path) as unfinished:  # opens as it is; its length is unknown
        assert unfinished.channels == 2 and unfinished.samplerate == RATE
    seconds = repair(path)
    assert seconds is not None and 4.4 <= seconds <= 5.0  # all but the encoder's last block
    data, _ = sf.read(path, dtype="int16")
    expected = np.concatenate([block(1.0, seed) for seed in range(5)])
    assert np.array_equal(data, expected[:len(data)])
    assert repair(path) is None  # whole now: left alone
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_repair_all_reports_only_what_a_crash_left(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path)
    sink = recordings.open(OTHER)
    sink.write(block(1.0, 0))
    asyncio.run(sink.close())
    assert recordings.repair_all() == {}
    assert recordings.seconds(OTHER) == 1.0


class BrokenDisk:
    """Stands in for the FLAC file: every write fails as a full disk does."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate = gate
        self.writes = 0

    def __enter__(self) -> BrokenDisk:
        return self

    def __exit__(self, *_: Any) -> None:
        pass

    def write(self, _: np.ndarray) -> None:
        if self.gate is not None:
            self.gate.wait()
            self.writes += 1
            return
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass


def test_a_full_disk_stops_the_recording_once_and_never_raises(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(writer, "open_flac", lambda path: BrokenDisk())
    sink = FlacWriter(tmp_path / f"{SID}.flac")

    async def record() -> None:
        for seed in range(5):
            sink.write(block(0.1, seed))
        await sink.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(record())
    assert sink.failed
    stopped = [r for r in caplog.records if "recording" in r.getMessage()]
    assert len(stopped) == 1 and "No space left" in stopped[0].getMessage()


def test_a_slow_disk_stops_the_recording_instead_of_queueing_forever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    gate = threading.Event()
    disk = BrokenDisk(gate)
    monkeypatch.setattr(writer, "open_flac", lambda path: disk)
    sink = FlacWriter(tmp_path / f"{SID}.flac", queue_blocks=2)

    async def record() -> None:
        for seed in range(10):  # the event loop only queues: never waits for the disk
            sink.write(block(0.1, seed))
        assert sink.failed
        gate.set()
        await sink.close()

    with caplog.at_level(logging.ERROR):
        asyncio.run(record())
    assert disk.writes <= 3  # what was queued (and the one in hand) before it stopped
    assert sum("behind" in r.getMessage() for r in caplog.records) == 1


def test_only_call_sids_name_files(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path)
    with pytest.raises(ValueError):
        recordings.path("../../etc/passwd")
    assert recordings.find("../calls") is None
    assert recordings.relative(SID) == f"{tmp_path.name}/{SID}.flac"


def test_retention_removes_purged_calls_and_old_files(tmp_path: Path) -> None:
    recordings = Recordings(tmp_path)
    young = "CA" + "3" * 32
    for sid in (SID, OTHER, young):
        sink = recordings.open(sid)
        asyncio.run(sink.close())
    old = time.time() - 40 * DAY_S
    os.utime(recordings.path(OTHER), (old, old))
    (tmp_path / "notes.txt").write_text("not a recording")
    assert recordings.purge(30, [SID]) == 2  # SID with its call, OTHER by age
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{young}.flac", "notes.txt"]
    with pytest.raises(ValueError):
        recordings.purge_older_than(0)


def test_a_hung_disk_does_not_hold_the_calls_close(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate = threading.Event()
    monkeypatch.setattr(writer, "open_flac", lambda path: BrokenDisk(gate))
    monkeypatch.setattr(writer, "CLOSE_WAIT_S", 0.05)
    sink = FlacWriter(tmp_path / f"{SID}.flac")

    async def record() -> None:
        sink.write(block(0.1, 0))
        await sink.close()  # returns although the disk never answers

    try:
        asyncio.run(record())
        assert sink.failed
    finally:
        gate.set()
