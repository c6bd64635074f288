"""Sentence embeddings from a local ONNX model (all-MiniLM-L6-v2 int8 by default), for Chroma.

Chroma's own default embedding function downloads its model on first use; the appliance runs
offline, so it embeds with the model file that ships as a Python package instead.
"""

from __future__ import annotations

import hashlib
import threading
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from tokenizers import Tokenizer

from appliance.config import Settings
from appliance.engines.onnx import cpu_session
from appliance.kb import KbError
from appliance.models.locate import ModelMissing, default_path

MAX_TOKENS = 256  # the sequence length all-MiniLM-L6-v2 was trained with; longer text is cut
BATCH = 32


class OnnxEmbedder(EmbeddingFunction[Documents]):
    """Mean-pooled, L2-normalised sentence embeddings.

    The model loads on first use: Chroma rebuilds the function from its stored config on every
    write (to read the collection schema) and never calls those copies, so they must be cheap.
    Safe to call from several threads at once: ONNX Runtime sessions and configured tokenizers
    are re-entrant, so concurrent searches need no lock.
    """

    def __init__(self, model_path: str, tokenizer_path: str, threads: int = 1) -> None:
        self.model_path, self.tokenizer_path, self.threads = model_path, tokenizer_path, threads
        self._lock = threading.Lock()
        self._model: _Model | None = None

    @property
    def dim(self) -> int:
        return self._loaded().dim

    @cached_property
    def model_id(self) -> str:
        """Names the weights by content: the same model anywhere on disk is the same model."""
        path = Path(self.model_path)
        return f"{path.parent.name}/{path.name}@{_sha256(path)[:12]}"

    def __call__(self, input: Documents) -> Embeddings:
        model = self._loaded()
        texts = list(input)
        # Texts of similar length share a batch, so little compute goes on padding.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), model.dim), dtype=np.float32)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            out[idx] = model.embed([texts[i] for i in idx])
        return list(out)

    def load(self) -> None:
        """Load the model now (at start-up) rather than inside the first call."""
        self._loaded()

    def _loaded(self) -> _Model:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    try:
                        self._model = _Model(self.model_path, self.tokenizer_path, self.threads)
                    except Exception as err:  # ONNX Runtime and tokenizers raise many types
                        message = f"cannot load embedding model {self.model_path}: {err}"
                        raise KbError(message) from err
        return self._model

    # Chroma 1.x persists the function's name and config with the collection.
    @staticmethod
    def name() -> str:
        return "appliance-onnx"

    def get_config(self) -> dict[str, Any]:
        return {
            "model_path": self.model_path,
            "tokenizer_path": self.tokenizer_path,
            "threads": self.threads,
        }

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OnnxEmbedder:
        return OnnxEmbedder(**config)

    def is_legacy(self) -> bool:
        # The base check rebuilds the function from its config: a second model load for nothing.
        return False

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]  # unit vectors: all three rank the same


class _Model:
    """The loaded ONNX session and tokenizer."""

    def __init__(self, model_path: str, tokenizer_path: str, threads: int) -> None:
        self._session = cpu_session(model_path, threads)  # the other cores: STT, LLM and TTS
        self._inputs = {i.name for i in self._session.get_inputs()}
        self._output = self._session.get_outputs()[0].name  # last_hidden_state
        self._tokenizer = Tokenizer.from_file(tokenizer_path)
        # The shipped tokenizer.json pads every text to 128 tokens; pad per batch instead.
        pad = self._tokenizer.padding or {}
        self._tokenizer.enable_padding(
            pad_id=pad.get("pad_id", 0), pad_token=pad.get("pad_token", "[PAD]")
        )
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self.dim = int(self.embed(["dimension probe"]).shape[1])

    def embed(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": mask,
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        hidden = self._session.run(
            [self._output], {k: v for k, v in feeds.items() if k in self._inputs}
        )[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


def embedder_from_settings(settings: Settings) -> OnnxEmbedder:
    """The configured model (``embed_model``, with its tokenizer.json beside it) or the default."""
    if settings.embed_model:
        model = Path(settings.embed_model).expanduser()
        tokenizer = model.with_name("tokenizer.json")
        if not model.is_file():
            raise ModelMissing("embed", str(model), "point APPLIANCE_EMBED_MODEL at an .onnx file")
        if not tokenizer.is_file():
            raise ModelMissing("embed_tokenizer", str(tokenizer), "put tokenizer.json beside it")
    else:
        model, tokenizer = default_path("embed"), default_path("embed_tokenizer")
    return OnnxEmbedder(str(model), str(tokenizer))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
