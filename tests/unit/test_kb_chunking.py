"""Loaders and chunking of the knowledge base: pure functions, no model, no Chroma."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from appliance.kb import KbError
from appliance.kb.chunking import Section, SectionBuilder, chunk_sections
from appliance.kb.loaders import load, supported

KB_DIR = Path(__file__).resolve().parents[2] / "kb"


def _pdf(*pages: str) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page (correct xref offsets)."""
    n = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", f"<< /Type /Pages /Kids [{kids}] /Count {n} >>"]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {3 + 2 * n} 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    trailer = f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n"
    out += trailer.encode()
    return out


# --- section building ---------------------------------------------------------------------


def test_heading_stack_pops_to_the_new_level() -> None:
    builder = SectionBuilder("doc")
    builder.line("preface")
    builder.heading(1, "Title")
    builder.heading(2, "A")
    builder.line("under a")
    builder.heading(3, "A1")
    builder.line("under a1")
    builder.heading(2, "B")
    builder.line("under b")
    assert builder.finish() == [
        Section(("doc",), "preface"),
        Section(("Title", "A"), "under a"),
        Section(("Title", "A", "A1"), "under a1"),
        Section(("Title", "B"), "under b"),
    ]


def test_markdown_headings_links_and_code_fences() -> None:
    text = (
        "Intro line.\n\n# Prices\n\n## Cleanings ##\n\nSee [our list](https://x.test/p) now.\n\n"
        "```\n# not a heading\n```\n"
    )
    sections = load(Path("price-list.md"), text.encode())
    assert sections[0] == Section(("price list",), "Intro line.")
    assert sections[1].headings == ("Prices", "Cleanings")
    assert "See our list now." in sections[1].text
    assert "# not a heading" in sections[1].text


def test_html_keeps_headings_drops_scripts_and_navigation() -> None:
    html = (
        "<html><head><title>T</title><style>p {}</style></head><body><nav>Home | Kids</nav>"
        "<h1>Kids</h1><p>First   visit is <b>short</b>.</p><h2>Prizes</h2>"
        "<ul><li>A toy</li><li>A toothbrush &amp; paste</li></ul>"
        "<script>var x = 1;</script></body></html>"
    )
    sections = load(Path("kids.html"), html.encode())
    assert sections == [
        Section(("Kids",), "First visit is short."),
        Section(("Kids", "Prizes"), "- A toy\n- A toothbrush & paste"),
    ]


def test_text_headings_are_short_unpunctuated_lines_not_wrapped_ones() -> None:
    text = (
        "CARE NOTES\n\nAfter a filling\nYour lip may stay numb for two to four hours, so wait\n"
        "before eating.\n\nOne more note, written as a sentence.\n"
    )
    sections = load(Path("care.txt"), text.encode())
    [section] = sections
    assert section.headings == ("CARE NOTES", "After a filling")
    assert section.text.startswith("Your lip may stay numb for two to four hours, so wait\nbefore")
    assert section.text.endswith("One more note, written as a sentence.")


def test_pdf_pages_become_sections() -> None:
    sections = load(Path("menu.pdf"), _pdf("Crowns cost 1200 dollars", "Parking is free"))
    assert [s.headings for s in sections] == [("menu", "page 1"), ("menu", "page 2")]
    assert "Crowns cost 1200 dollars" in sections[0].text
    assert "Parking is free" in sections[1].text


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("notes.docx", b"PK\x03\x04", "unsupported file type .docx"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00", "binary data"),
    ],
)
def test_unreadable_and_unsupported_files_raise(name: str, data: bytes, message: str) -> None:
    with pytest.raises(KbError, match=re.escape(message)):
        load(Path(name), data)


def test_corrupt_pdf_raises() -> None:
    with pytest.raises(Exception):  # noqa: B017 - pypdf raises several types; ingest catches all
        load(Path("broken.pdf"), b"%PDF-1.4 this is not really a pdf")


def test_text_encodings() -> None:
    assert load(Path("a.txt"), "Café hours\nOpen daily.".encode("utf-16"))[0].text == "Open daily."
    assert "Café" in load(Path("b.md"), "Café au lait".encode("cp1252"))[0].text
    assert supported(Path("x.HTML")) and not supported(Path("x.docx"))


# --- chunking ----------------------------------------------------------------------------


def test_short_sibling_sections_group_under_their_common_heading() -> None:
    sections = [
        Section(("Hours", "Weekdays"), "Monday to Friday: 8 am to 5 pm."),
        Section(("Hours", "Weekends"), "Saturday: 9 am to 1 pm. Sunday: closed."),
    ]
    [chunk] = chunk_sections(sections, max_chars=800, min_chars=200)
    assert chunk.heading == "Hours"
    assert chunk.text == (
        "Weekdays\nMonday to Friday: 8 am to 5 pm.\n\nWeekends\nSaturday: 9 am to 1 pm. "
        "Sunday: closed."
    )
    assert chunk.embed_text.startswith("Hours\nWeekdays")


def test_a_section_of_its_own_size_stays_alone_with_its_full_path() -> None:
    sections = [
        Section(("Prices", "Cleanings"), "x" * 300),
        Section(("Prices", "Crowns"), "y" * 50),
    ]
    chunks = chunk_sections(sections, max_chars=800, min_chars=200)
    assert [c.heading for c in chunks] == ["Prices > Cleanings", "Prices > Crowns"]
    assert chunks[1].text == "y" * 50


def test_long_section_splits_within_bounds_with_overlap() -> None:
    sentences = [f"Sentence number {i} says something about teeth." for i in range(60)]
    text = " ".join(sentences[:30]) + "\n\n" + " ".join(sentences[30:])
    chunks = chunk_sections([Section(("Doc", "Long"), text)], max_chars=400, overlap=120)
    assert len(chunks) > 3
    assert all(len(c.text) <= 400 and c.heading == "Doc > Long" for c in chunks)
    for sentence in sentences:  # nothing lost
        assert any(sentence in c.text for c in chunks)
    for before, after in itertools.pairwise(chunks):  # each repeats the previous one's end
        first_line = after.text.splitlines()[0]
        assert first_line in before.text and len(first_line) <= 120


def test_run_on_text_without_sentence_ends_is_cut_at_spaces() -> None:
    words = " ".join(f"word{i}" for i in range(400))
    chunks = chunk_sections([Section(("T",), words)], max_chars=300, overlap=50)
    assert all(len(c.text) <= 300 for c in chunks)
    assert " ".join(" ".join(c.text.split()) for c in chunks).count("word399") >= 1


def test_sample_kb_chunks_are_sized_and_headed() -> None:
    for path in sorted(KB_DIR.iterdir()):
        chunks = chunk_sections(load(path, path.read_bytes()))
        assert chunks, path
        for chunk in chunks:
            assert chunk.heading, path
            assert 40 <= len(chunk.text) <= 800, (path, chunk)
