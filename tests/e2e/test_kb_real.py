"""The knowledge base end to end: the real embedding model, a real Chroma store in a temp dir.

Run with ``-s`` to see the evaluation report (recall, distances in and out of scope).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import statistics
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appliance.cli import kb_cmd
from appliance.config import Settings, load_settings
from appliance.kb import KbError, relevance
from appliance.kb.embedding import OnnxEmbedder, embedder_from_settings
from appliance.kb.hybrid import HybridKnowledgeBase
from appliance.kb.store import ChromaKnowledgeBase, KbStore, ingest_paths

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = tomllib.loads((Path(__file__).with_name("kb_questions.toml")).read_text())

# Measured on the sample kb/: recall@3 1.00 and recall@1 0.94 over 49 questions. Chance is
# about 0.3 at 3 and 0.1 at 1 (10 documents); the slack below the measured values absorbs
# rewording of kb/ or the questions, while a broken pipeline (lost headings, wrong pooling,
# unnormalised vectors) falls well below the floors.
RECALL_AT_3_FLOOR = 0.90
RECALL_AT_1_FLOOR = 0.80


def settings_for(tmp: Path, **overrides: Any) -> Settings:
    return load_settings(
        environ={}, data_dir=str(tmp / "data"), kb_dir=str(tmp / "kb"), **overrides
    )


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return embedder_from_settings(Settings())


@pytest.fixture
def kb_copy(tmp_path: Path) -> Path:
    """A private copy of the sample knowledge base, safe to edit."""
    return Path(shutil.copytree(ROOT / "kb", tmp_path / "kb"))


@pytest.fixture(scope="module")
def sample_kb(
    tmp_path_factory: pytest.TempPathFactory, embedder: OnnxEmbedder
) -> ChromaKnowledgeBase:
    tmp = tmp_path_factory.mktemp("eval")
    settings = settings_for(tmp)
    started = time.perf_counter()
    report = ingest_paths(settings, [ROOT / "kb"], embedder=embedder, progress=False)
    print(f"\ningest of kb/: {report.summary()} (wall {time.perf_counter() - started:.2f} s)")
    assert not report.skipped
    return ChromaKnowledgeBase.open(settings, embedder)


@dataclass
class Evaluation:
    recall_at_1: float
    recall_at_3: float
    in_scope: list[float]  # best distance per answerable question
    out_of_scope: list[float]  # best distance per off-topic question
    near_scope: list[float]  # best distance per dental-sounding question kb/ cannot answer
    misses: list[str]
    query_ms: float


def evaluate(kb: ChromaKnowledgeBase) -> Evaluation:
    first = top3 = 0
    in_scope, misses, seconds = [], [], []
    for question in QUESTIONS["question"]:
        started = time.perf_counter()
        hits = kb.search(question["text"], 3)
        seconds.append(time.perf_counter() - started)
        sources = [h.source for h in hits]
        first += sources[0] in question["expect"]
        found = any(s in question["expect"] for s in sources)
        top3 += found
        in_scope.append(hits[0].distance)
        if not found:
            misses.append(f"{question['text']!r} -> {sources}")
    out = [kb.search(text, 1)[0].distance for text in QUESTIONS["out_of_scope"]]
    near = [kb.search(text, 1)[0].distance for text in QUESTIONS["near_scope"]]
    n = len(QUESTIONS["question"])
    return Evaluation(first / n, top3 / n, in_scope, out, near, misses,
                      statistics.median(seconds) * 1000)


def _describe(values: list[float]) -> str:
    q = statistics.quantiles(values, n=10, method="inclusive")
    return (f"min {min(values):.3f}  p10 {q[0]:.3f}  median {statistics.median(values):.3f}  "
            f"p90 {q[-1]:.3f}  max {max(values):.3f}")


def test_retrieval_quality_on_the_sample_kb(sample_kb: ChromaKnowledgeBase) -> None:
    assert len(QUESTIONS["question"]) >= 30
    result = evaluate(sample_kb)
    print(f"recall@3 {result.recall_at_3:.3f}  recall@1 {result.recall_at_1:.3f}  "
          f"query median {result.query_ms:.1f} ms")
    print(f"best distance, in scope:     {_describe(result.in_scope)}")
    print(f"best distance, out of scope: {_describe(result.out_of_scope)}")
    print(f"best distance, near scope:   {_describe(result.near_scope)}")
    for miss in result.misses:
        print(f"miss: {miss}")
    assert result.recall_at_3 >= RECALL_AT_3_FLOOR, result.misses
    assert result.recall_at_1 >= RECALL_AT_1_FLOOR


def test_the_relevance_decision_separates_answerable_from_off_topic(
    sample_kb: ChromaKnowledgeBase,
) -> None:
    """The default relevance settings on the hybrid search (dense distance plus the share of
    the question's words in the documents), as the agent decides. Measured on the sample kb/
    (the project's first tuning set): 47 of 49 answerable questions kept, 10 of 10 off-topic
    and 6 of 8 near-scope ones declined."""
    settings = Settings()
    hybrid = HybridKnowledgeBase(sample_kb, sample_kb.all_chunks())

    def relevant(text: str) -> bool:
        return relevance.decide(hybrid.search(text, settings.kb_top_k), settings).relevant

    kept = [relevant(q["text"]) for q in QUESTIONS["question"]]
    declined = [not relevant(text) for text in QUESTIONS["out_of_scope"]]
    near = [not relevant(text) for text in QUESTIONS["near_scope"]]
    print(f"kept {sum(kept)}/{len(kept)} answerable; declined {sum(declined)}/{len(declined)} "
          f"off-topic, {sum(near)}/{len(near)} near-scope")
    assert sum(kept) / len(kept) >= 0.95
    assert sum(declined) / len(declined) >= 0.9
    assert sum(near) / len(near) >= 0.5


def test_hybrid_search_finds_word_forms_and_paraphrases(sample_kb: ChromaKnowledgeBase) -> None:
    """"park" finds the "Parking" section and "what's your address" the address, in ASR form."""
    hybrid = HybridKnowledgeBase(sample_kb, sample_kb.all_chunks())

    def lexical_best(text: str) -> str:
        scores = hybrid.lexical.scores(text)
        return hybrid.lexical.chunks[scores.index(max(scores))].heading

    assert lexical_best("um where do i park").endswith("Parking")  # "park" is "parking"
    assert any(c.heading.endswith("Parking") for c in hybrid.search("um where do i park", 3))
    for asked in ("What's your address?", "WHATS YOUR ADDRESS"):
        assert hybrid.search(asked, 1)[0].heading.endswith("Address")


def test_search_contract(sample_kb: ChromaKnowledgeBase) -> None:
    hits = sample_kb.search("how much is a crown", 4)
    assert len(hits) == 4
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert hits[0].source == "prices.md" and "$1,200" in hits[0].text
    assert hits[0].heading.startswith("Harbor Dental prices")
    assert str(hits[0].metadata["path"]).endswith("prices.md")
    assert sample_kb.search("anything", 0) == [] and sample_kb.search("  ", 3) == []
    assert sample_kb.count() > 10
    assert sample_kb.info.slot == "kb" and "model.onnx@" in sample_kb.info.name


def test_concurrent_searches_match_serial_ones(sample_kb: ChromaKnowledgeBase) -> None:
    queries = [q["text"] for q in QUESTIONS["question"]]

    def ids(query: str) -> list[tuple[str, float]]:
        return [(h.id, round(h.distance, 5)) for h in sample_kb.search(query, 3)]

    serial = [ids(q) for q in queries]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(ids, queries)) == serial


def test_reingest_is_idempotent_and_tracks_changes(
    tmp_path: Path, kb_copy: Path, embedder: OnnxEmbedder
) -> None:
    store = KbStore(settings_for(tmp_path), embedder)
    first = store.ingest([kb_copy], progress=False)
    assert len(first.added) == 10 and first.chunks == first.chunks_written
    ids_before = {d.source: d.chunk_ids for d in store.documents()}

    again = store.ingest([kb_copy], progress=False)
    assert len(again.unchanged) == 10 and again.chunks_written == 0
    assert not (again.added or again.updated or again.removed)

    prices = kb_copy / "prices.md"
    prices.write_text(prices.read_text().replace("$120", "$135"))
    changed = store.ingest([kb_copy], progress=False)
    assert changed.updated == ["prices.md"] and len(changed.unchanged) == 9
    assert changed.chunks_written == len(ids_before["prices.md"])
    assert {d.source: d.chunk_ids for d in store.documents()} == ids_before  # ids are stable
    kb = ChromaKnowledgeBase.open(settings_for(tmp_path), embedder)
    assert "$135" in kb.search("how much is an adult cleaning", 1)[0].text

    prices.write_text("# Prices\n\nA cleaning costs $99.\n")  # fewer chunks: stale ones go
    store.ingest([kb_copy], progress=False)
    assert len({d.source: d for d in store.documents()}["prices.md"].chunk_ids) == 1

    (kb_copy / "team.md").unlink()
    removed = store.ingest([kb_copy], progress=False)
    assert removed.removed == ["team.md"]
    assert "team.md" not in {d.source for d in store.documents()}
    assert removed.chunks == sum(d.chunks for d in store.documents())

    (kb_copy / "faq.md").write_text("\n")  # emptied: it must stop answering
    emptied = store.ingest([kb_copy], progress=False)
    assert emptied.skipped == [("faq.md", "no text found")]
    assert "faq.md" not in {d.source for d in store.documents()}


def test_single_file_ingest_and_remove(
    tmp_path: Path, kb_copy: Path, embedder: OnnxEmbedder
) -> None:
    store = KbStore(settings_for(tmp_path), embedder)
    report = store.ingest([kb_copy / "faq.md"], progress=False)
    assert report.added == ["faq.md"] and report.documents == 1
    assert store.remove(kb_copy / "faq.md") == ["faq.md"]
    assert store.documents() == [] and store.remove(kb_copy / "faq.md") == []


def test_bad_files_are_reported_and_skipped(
    tmp_path: Path, kb_copy: Path, embedder: OnnxEmbedder
) -> None:
    (kb_copy / "contract.docx").write_bytes(b"PK\x03\x04 not supported")
    (kb_copy / "broken.pdf").write_bytes(b"%PDF-1.4 truncated garbage")
    (kb_copy / "logo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (kb_copy / "empty.txt").write_text("   \n")
    (kb_copy / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored silently
    report = ingest_paths(settings_for(tmp_path), [kb_copy, tmp_path / "missing"],
                          embedder=embedder, progress=False)
    reasons = dict(report.skipped)
    assert set(reasons) == {"contract.docx", "broken.pdf", "logo.md", "empty.txt",
                            str(tmp_path / "missing")}
    assert "unsupported" in reasons["contract.docx"]
    assert reasons["broken.pdf"].startswith("unreadable")
    assert "binary" in reasons["logo.md"]
    assert reasons["empty.txt"] == "no text found"
    assert len(report.added) == 10


def test_ingest_caps_size_and_stays_inside_the_folder(
    tmp_path: Path, kb_copy: Path, embedder: OnnxEmbedder
) -> None:
    outside = tmp_path / "private"
    (outside / "sub").mkdir(parents=True)
    (outside / "passwords.md").write_text("# Passwords\nThe safe code is 4417.\n")
    (outside / "sub" / "more.md").write_text("# More\nThe alarm code is 9921.\n")
    (kb_copy / "leak.md").symlink_to(outside / "passwords.md")
    (kb_copy / "leakdir").symlink_to(outside / "sub", target_is_directory=True)
    (kb_copy / "alias.md").symlink_to(kb_copy / "faq.md")  # inside the folder: fine
    (kb_copy / "huge.txt").write_text("Parking is free. " * 70_000)  # ~1.2 MB
    report = ingest_paths(settings_for(tmp_path, kb_max_file_mb=1.0), [kb_copy],
                          embedder=embedder, progress=False)
    reasons = dict(report.skipped)
    assert reasons["leak.md"] == "symlink out of the knowledge-base folder"
    assert "over the 1 MB limit (APPLIANCE_KB_MAX_FILE_MB)" in reasons["huge.txt"]
    assert "alias.md" in report.added and len(report.added) == 11
    stored = " ".join(d.path for d in KbStore(settings_for(tmp_path), embedder).documents())
    assert "passwords" not in stored and "more.md" not in stored


def test_a_bad_pdf_is_logged_and_skipped_at_start_up(
    tmp_path: Path, kb_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from appliance.wiring import open_knowledge_base

    (kb_copy / "broken.pdf").write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 2 0 R")
    (kb_copy / "bomb.pdf").write_bytes(b"%PDF-1.4\n" + b"[" * 50_000)
    with caplog.at_level(logging.WARNING):
        kb = open_knowledge_base(settings_for(tmp_path))
    assert kb is not None and kb.search("opening hours", 1)  # the other documents answer
    logged = caplog.text
    assert "skipped 'broken.pdf'" in logged and "skipped 'bomb.pdf'" in logged


def test_a_different_embedding_model_is_refused(
    tmp_path: Path, kb_copy: Path, embedder: OnnxEmbedder
) -> None:
    settings = settings_for(tmp_path)
    ingest_paths(settings, [kb_copy / "hours.md"], embedder=embedder, progress=False)

    class OtherModel(OnnxEmbedder):
        model_id = "other-model.onnx@0123456789ab"

    other = OtherModel(embedder.model_path, embedder.tokenizer_path)
    with pytest.raises(KbError, match=re.escape(OtherModel.model_id)) as err:
        ChromaKnowledgeBase.open(settings, other)
    assert embedder.model_id in str(err.value) and "--rebuild" in str(err.value)
    with pytest.raises(KbError):
        KbStore(settings, other)

    rebuilt = KbStore(settings, other, rebuild=True)  # the documented way out
    assert rebuilt.documents() == []
    ChromaKnowledgeBase.open(settings, other)


# --- CLI -------------------------------------------------------------------------------------


def _cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="appliance")
    kb_cmd.register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args, settings))


def test_cli_verbs(tmp_path: Path, kb_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path)
    assert _cli(settings, "kb", "ingest") == 0  # defaults to kb_dir
    assert "10 added" in capsys.readouterr().out

    assert _cli(settings, "kb", "ingest", str(kb_copy)) == 0
    assert "10 unchanged" in capsys.readouterr().out

    assert _cli(settings, "kb", "query", "where", "do", "I", "park", "--k", "2", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 and rows[0]["source"] == "location.md" and rows[0]["distance"] < 0.7

    assert _cli(settings, "kb", "query", "how much is a crown") == 0
    assert "prices.md" in capsys.readouterr().out.splitlines()[0]

    assert _cli(settings, "kb", "list") == 0
    assert "10 documents" in capsys.readouterr().out

    assert _cli(settings, "kb", "remove", str(kb_copy / "team.md")) == 0
    assert "removed team.md" in capsys.readouterr().out
    assert _cli(settings, "kb", "remove", str(kb_copy / "team.md")) == 1

    (kb_copy / "notes.docx").write_bytes(b"PK")
    assert _cli(settings, "kb", "ingest") == 1  # a skipped file is an error status
    assert "skipped notes.docx: unsupported file type .docx" in capsys.readouterr().err


def test_cli_reports_a_model_mismatch(tmp_path: Path, kb_copy: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(tmp_path)
    assert _cli(settings, "kb", "ingest", str(kb_copy / "faq.md")) == 0
    other = tmp_path / "other" / "model.onnx"  # the same weights would be the same model
    other.parent.mkdir()
    other.write_bytes(b"not the model")
    (other.parent / "tokenizer.json").write_text("{}")
    assert _cli(settings_for(tmp_path, embed_model=str(other)), "kb", "list") == 2
    assert "cannot be compared" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["ingest", "query", "list", "remove"])
def test_cli_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        _cli(Settings(), "kb", verb, "--help")
    assert exit_.value.code == 0
    assert f"appliance kb {verb}" in capsys.readouterr().out
