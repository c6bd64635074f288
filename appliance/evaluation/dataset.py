"""The evaluation businesses: each a folder of documents and a questions.toml.

A business is ``tuning`` (thresholds and prompts may be chosen on it) or ``report`` (its
numbers are the ones quoted, and nothing is changed to fit them).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[2] / "eval" / "businesses"
KINDS = frozenset({"fact", "paraphrase", "follow_up", "near_scope", "off_topic"})


class DatasetError(ValueError):
    """A questions.toml is malformed; the message names the file and the question."""


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    kind: str
    expect: tuple[str, ...] = ()  # every one must be in the answer; empty: a decline is right
    follows: str = ""  # asked first in the same call

    @property
    def decline(self) -> bool:
        return not self.expect


@dataclass(frozen=True, slots=True)
class Business:
    key: str  # the folder name
    name: str
    trade: str
    split: str  # "tuning" | "report"
    docs: Path
    questions: tuple[Question, ...]

    def documents_text(self) -> list[str]:
        return [p.read_text() for p in sorted(self.docs.rglob("*")) if p.is_file()]


def load_business(folder: Path) -> Business:
    path = folder / "questions.toml"
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise DatasetError(f"{path}: {err}") from err
    questions = []
    for i, q in enumerate(doc.get("question", []), 1):
        expect = tuple(q.get("expect", ()))
        if bool(expect) == bool(q.get("decline", False)) or q.get("kind") not in KINDS:
            raise DatasetError(f"{path}: question {i} ({q.get('text')!r}) needs exactly one of "
                               f"expect/decline and a kind in {sorted(KINDS)}")
        questions.append(Question(q["text"], q["kind"], expect, q.get("follows", "")))
    if doc.get("split") not in ("tuning", "report"):
        raise DatasetError(f"{path}: split must be 'tuning' or 'report'")
    return Business(folder.name, doc["name"], doc.get("trade", ""), doc["split"],
                    folder / "docs", tuple(questions))


def load_businesses(root: Path = DEFAULT_DIR, only: list[str] | None = None,
                    split: str | None = None) -> list[Business]:
    folders = sorted(p for p in root.iterdir() if (p / "questions.toml").is_file())
    businesses = [load_business(f) for f in folders if not only or f.name in only]
    return [b for b in businesses if split is None or b.split == split]
