"""The business's knowledge base: documents in, grounded snippets out.

``loaders`` turns files into headed sections, ``chunking`` cuts them into overlapping chunks,
``embedding`` runs the local ONNX sentence model, and ``store`` keeps them in Chroma (ingest,
list, remove) and serves ``ChromaKnowledgeBase.search`` to the call pipeline.

This package file stays import-light (no Chroma, no ONNX) so that the CLI starts fast.
"""

from __future__ import annotations


class KbError(RuntimeError):
    """The knowledge base cannot do what was asked; the message says why and how to fix it."""
