"""Read a document's bytes into headed sections: Markdown, plain text, HTML and PDF.

Loaders keep headings because the heading path is what tells a retrieved snippet's topic
("Prices > Fillings and repairs"); everything else about layout is dropped.
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

from pypdf import PdfReader

from appliance.kb import KbError
from appliance.kb.chunking import Section, SectionBuilder

_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load(path: Path, data: bytes) -> list[Section]:
    """Sections of the document ``data`` read from ``path``; raises on anything unreadable."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise KbError(f"unsupported file type {path.suffix or '(no extension)'}")
    title = re.sub(r"[-_]+", " ", path.stem).strip()
    return loader(data, title)


def load_markdown(data: bytes, title: str) -> list[Section]:
    builder = SectionBuilder(title)
    in_fence = False
    for line in _decode(data).splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence and (match := _ATX.match(line)):
            builder.heading(len(match[1]), _MD_LINK.sub(r"\1", match[2]))
            continue
        builder.line(_MD_LINK.sub(r"\1", line.rstrip()))
    return builder.finish()


def load_text(data: bytes, title: str) -> list[Section]:
    """Plain text: a paragraph's short first line that does not end like a sentence, followed
    by a capitalised line (not a wrapped continuation), is a heading."""
    builder = SectionBuilder(title)
    first = True
    for para in re.split(r"\n\s*\n", _decode(data)):
        lines = para.strip().splitlines()
        if not lines:
            continue
        head = lines[0].strip()
        if _text_heading(head) and (len(lines) == 1 or lines[1].lstrip()[:1].isupper()):
            builder.heading(1 if first else 2, head)
            lines = lines[1:]
        if lines:
            builder.line("\n".join(lines))
            builder.line("")
        first = False
    return builder.finish()


def load_html(data: bytes, title: str) -> list[Section]:
    parser = _HtmlSections(SectionBuilder(title))
    parser.feed(_decode(data))
    parser.close()
    return parser.builder.finish()


def load_pdf(data: bytes, title: str) -> list[Section]:
    """One heading per page: PDFs carry no reliable heading structure, but pages are citable."""
    reader = PdfReader(io.BytesIO(data))
    doc_title = (reader.metadata.title if reader.metadata else None) or title
    builder = SectionBuilder(doc_title)
    builder.heading(1, doc_title)
    for number, page in enumerate(reader.pages, start=1):
        builder.heading(2, f"page {number}")
        builder.line(page.extract_text() or "")
    sections = builder.finish()
    if not sections:
        raise KbError("no extractable text (a scanned PDF needs OCR first)")
    return sections


def _text_heading(line: str) -> bool:
    return 0 < len(line) <= 60 and line[-1] not in ".,;:!?"


LOADERS: dict[str, Callable[[bytes, str], list[Section]]] = {
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
    ".text": load_text,
    ".html": load_html,
    ".htm": load_html,
    ".pdf": load_pdf,
}


def _decode(data: bytes) -> str:
    """UTF-8 (or UTF-16 with a BOM, as Windows Notepad saves); else legacy Windows-1252."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return data.decode("utf-16")
    if b"\x00" in data:
        raise KbError("binary data, not text")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


class _HtmlSections(HTMLParser):
    """Visible text by block, with h1-h6 as headings; scripts, styles and navigation dropped."""

    SKIP = frozenset({"script", "style", "head", "nav", "footer", "noscript", "template", "svg"})
    BLOCKS = frozenset(
        {"p", "div", "li", "br", "tr", "td", "th", "section", "article", "ul", "ol", "table",
         "blockquote", "pre", "dt", "dd", "header", "main", "aside", "hr", "form"}
    )
    HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})

    def __init__(self, builder: SectionBuilder) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = builder
        self._skip = 0
        self._heading_level = 0
        self._buffer: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag in self.HEADINGS:
            self._end_line()
            self._heading_level = int(tag[1])
        elif tag in self.BLOCKS and not self._heading_level:
            self._end_line()
            if tag == "li":
                self._buffer.append("- ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.HEADINGS and self._heading_level:
            text = _squash("".join(self._buffer))
            self._buffer = []
            if text:
                self.builder.heading(self._heading_level, text)
            self._heading_level = 0
        elif tag in self.BLOCKS and not self._heading_level:
            self._end_line()

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._buffer.append(data)

    def close(self) -> None:
        super().close()
        self._end_line()

    def _end_line(self) -> None:
        text = _squash("".join(self._buffer))
        self._buffer = []
        if text and text != "-":
            self.builder.line(text)


def _squash(text: str) -> str:
    return " ".join(text.split())
