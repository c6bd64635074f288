"""``appliance kb``: load the business's documents into the knowledge base, and inspect it.

The knowledge base modules import Chroma and ONNX Runtime (about a second), so they are
imported inside the handlers: other verbs and ``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from appliance.config import Settings
from appliance.kb import KbError
from appliance.models.locate import ModelMissing

Handler = Callable[[argparse.Namespace, Settings], int]


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "kb",
        help="manage the knowledge base (the business's documents)",
        description="The documents the agent answers from: Markdown, text, HTML and PDF.",
    )
    verbs = parser.add_subparsers(dest="kb_verb", required=True, metavar="ACTION")

    ingest = verbs.add_parser(
        "ingest",
        help="add or update documents",
        description="Embed new and changed files, skip unchanged ones, and drop documents "
        "deleted from an ingested folder. Exits 1 if any file was skipped.",
    )
    ingest.add_argument(
        "paths", nargs="*", metavar="PATH", help="files or folders (default: the kb_dir setting)"
    )
    ingest.add_argument(
        "--rebuild",
        action="store_true",
        help="drop everything first and re-embed (needed after changing the embedding model)",
    )
    ingest.set_defaults(func=_guarded(ingest_cmd))

    query = verbs.add_parser(
        "query",
        help="show what a caller's question retrieves",
        description="The chunks the agent would be given for TEXT, best first, with distances.",
    )
    query.add_argument("text", nargs="+", metavar="TEXT", help="the question")
    query.add_argument("--k", type=int, help="how many chunks (default: the kb_top_k setting)")
    query.add_argument("--json", action="store_true", help="print as JSON")
    query.set_defaults(func=_guarded(query_cmd))

    listing = verbs.add_parser("list", help="list the ingested documents")
    listing.set_defaults(func=_guarded(list_cmd))

    remove = verbs.add_parser(
        "remove",
        help="forget a document, or every document under a folder",
        description="Remove a document's chunks (the file itself is not touched). "
        "Exits 1 if nothing matched.",
    )
    remove.add_argument("path", metavar="PATH", help="the file or folder as it was ingested")
    remove.set_defaults(func=_guarded(remove_cmd))


def _guarded(handler: Handler) -> Handler:
    """Turn the knowledge base's expected failures into one clear line and exit status 2."""

    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return handler(args, settings)
        except (KbError, ModelMissing) as err:
            print(f"appliance kb: {err}", file=sys.stderr)
            return 2

    return run


def ingest_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.kb.store import ingest_paths

    paths = args.paths or [settings.kb_dir]
    report = ingest_paths(settings, paths, progress=sys.stderr.isatty(), rebuild=args.rebuild)
    for source, reason in report.skipped:
        print(f"skipped {source}: {reason}", file=sys.stderr)
    for source in report.removed:
        print(f"removed {source} (no longer in its folder)")
    print(report.summary())
    return 1 if report.skipped else 0


def query_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.kb.store import ChromaKnowledgeBase

    kb = ChromaKnowledgeBase.open(settings)
    k = settings.kb_top_k if args.k is None else args.k
    hits = kb.search(" ".join(args.text), k)
    if args.json:
        rows = [
            {"id": h.id, "source": h.source, "heading": h.heading, "distance": h.distance,
             "text": h.text}
            for h in hits
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not hits:
        print("the knowledge base is empty: run `appliance kb ingest`")
    for hit in hits:
        note = "" if hit.distance <= settings.kb_max_distance else "  (beyond kb_max_distance)"
        print(f"{hit.distance:.3f}  {hit.source}  [{hit.heading}]{note}")
        snippet = " ".join(hit.text.split())
        print(f"       {snippet[:160]}{'…' if len(snippet) > 160 else ''}")
    return 0


def list_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.kb.store import KbStore

    docs = KbStore(settings).documents()
    for doc in docs:
        print(f"{doc.chunks:4d} chunks  {doc.source}  ({doc.path})")
    print(f"{len(docs)} documents, {sum(d.chunks for d in docs)} chunks")
    return 0


def remove_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from appliance.kb.store import KbStore

    removed = KbStore(settings).remove(args.path)
    for source in removed:
        print(f"removed {source}")
    if not removed:
        print(f"nothing ingested from {args.path}", file=sys.stderr)
        return 1
    return 0
