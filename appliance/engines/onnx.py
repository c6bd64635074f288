"""One way to open an ONNX Runtime model, shared by the VAD, turn, voice and embedding engines."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def cpu_session(path: str | Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session capped at ``threads`` intra-op threads and one inter-op thread.

    Every model here runs many small calls side by side (a 32 ms VAD window, one sentence, one
    pause), so splitting one call across cores only steals time from the other calls' STT and LLM
    work on a 2-core box. ``run`` is thread-safe: one session serves every call.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: ORT warns about every unused initializer
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])
