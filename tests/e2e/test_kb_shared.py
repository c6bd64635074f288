"""A knowledge base that another process changes is searched at once, without a restart: the
embedded database (re-ingest by `appliance kb ingest`) and a real `chroma run` server shared by
two boxes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.config import Settings, load_settings
from appliance.kb.store import ChromaKnowledgeBase
from tests.servers import chroma_server

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
PARROT = "# Our parrot\n\nCaptain Blue, the clinic's parrot, greets patients in the lobby.\n"
QUESTION = "what is the name of the parrot in the lobby"


def settings_for(tmp: Path, **overrides: str) -> Settings:
    return load_settings(environ={}, data_dir=str(tmp / "data"), **overrides)


def ingest_elsewhere(settings: Settings, *paths: Path) -> None:
    """`appliance kb ingest` in its own process, as another box or an operator would run it."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "APPLIANCE_DATA_DIR": settings.data_dir,
           "APPLIANCE_KB_URL": settings.kb_url}
    subprocess.run([sys.executable, "-m", "appliance", "kb", "ingest", *map(str, paths)],
                   env=env, check=True, capture_output=True, timeout=300)


def top_source(kb: ChromaKnowledgeBase) -> tuple[str, str]:
    hit = kb.search(QUESTION, 1)[0]
    return hit.source, hit.text


def check_shared(tmp_path: Path, settings: Settings) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hours.md").write_text((ROOT / "kb" / "hours.md").read_text())
    ingest_elsewhere(settings, docs)
    kb = ChromaKnowledgeBase.open(settings)  # the serving box, already up
    assert top_source(kb)[0] == "hours.md"

    (docs / "parrot.md").write_text(PARROT)
    ingest_elsewhere(settings, docs)
    assert top_source(kb) == ("parrot.md", PARROT.split("\n\n")[1].strip())

    (docs / "parrot.md").write_text(PARROT.replace("Captain Blue", "Admiral Green"))
    ingest_elsewhere(settings, docs)  # changed in place: same chunk ids, new text
    assert "Admiral Green" in top_source(kb)[1]


def test_embedded_kb_sees_another_process_ingest_without_restart(tmp_path: Path) -> None:
    check_shared(tmp_path, settings_for(tmp_path))


def test_chroma_server_is_shared_by_every_box(tmp_path: Path) -> None:
    with chroma_server(tmp_path) as url:
        settings = settings_for(tmp_path, kb_url=url)
        check_shared(tmp_path, settings)
        assert ChromaKnowledgeBase.open(settings).info.path == url
        assert not (tmp_path / "data" / "kb").exists()  # nothing embedded on the box
