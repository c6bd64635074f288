"""One way to open an ONNX Runtime model, shared by the VAD, turn, voice and embedding engines."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session capped at ``threads`` intra-op threads and one inter-op thread.

    Every model here runs many small calls side by side (a 32 ms VAD window, one sentence, one
    pause), so most take one thread: splitting a 32 ms window across cores only steals time from
    the other calls' work on a 2-core box. The voice is the exception (two, ``tts_threads``): a
    caller waits for its first sentence, and beside one busy core two sleeping helper threads
    still beat one. ``run`` is thread-safe: one session serves every call.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # With more than one thread, ORT's helper threads spin after each step by default, holding a
    # core the other calls' work needs: Piper on two threads beside one busy core took 0.27 s a
    # clause spinning, 0.18 s not (one thread: 0.21 s).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])
