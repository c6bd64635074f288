"""Model downloads from a real HTTP server on 127.0.0.1: verified, atomic, never half-written."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import cast

import httpx
import pytest

from appliance.cli import main
from appliance.models import fetch as fetch_module
from appliance.models.fetch import FetchError, fetch_preset, verify
from appliance.models.locate import DEFAULT_FILES, SLOTS
from appliance.models.manifest import (
    Manifest,
    ManifestError,
    ModelFile,
    Preset,
    Slot,
    find_manifest,
    load_manifest,
)

BODY = random.Random(7).randbytes(300_000)
SHA = hashlib.sha256(BODY).hexdigest()
DEST = "llm/model.gguf"


class Server(ThreadingHTTPServer):
    routes: dict[str, tuple[int, bytes, int | None]]
    hits: list[str]


class Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = (status, body, declared length)``, then closes; a declared
    length of -1 sends no Content-Length (the body ends when the connection closes)."""

    def do_GET(self) -> None:  # http.server calls it by this name
        server = cast(Server, self.server)
        server.hits.append(self.path)
        status, body, declared = server.routes.get(self.path, (404, b"not found", None))
        self.send_response(status)
        if declared != -1:
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = Server(("127.0.0.1", 0), Handler)
    httpd.routes, httpd.hits = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as c:  # loopback only, never a proxy
        yield c


def serve(httpd: Server, body: bytes = BODY, declared: int | None = None) -> str:
    httpd.routes["/model.gguf"] = (200, body, declared)
    return f"http://127.0.0.1:{httpd.server_port}/model.gguf"


def manifest_for(url: str, sha256: str = SHA, size: int = len(BODY)) -> Manifest:
    file = ModelFile(path=DEST, size=size, sha256=sha256, url=url)
    slot = Slot(name="test model", path=DEST, files=(file,))
    return Manifest(presets={"test": Preset(description="test", slots={"llm": slot})})


def leftovers(models: Path) -> list[str]:
    return sorted(str(p.relative_to(models)) for p in models.rglob("*") if p.is_file())


def test_good_download_is_verified_and_moved_into_place(server, client, tmp_path, monkeypatch):
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(fetch_module.os, "replace", spy)

    result = fetch_preset(manifest_for(serve(server)), "test", tmp_path, client=client)

    dest = tmp_path / "test" / DEST
    assert result == [(dest, True)]
    assert dest.read_bytes() == BODY and dest.stat().st_mode & 0o777 == 0o644
    assert leftovers(tmp_path) == ["test/" + DEST]
    [(src, dst)] = replaced  # written beside the destination, then renamed over it in one step
    assert dst == dest and src.parent == dest.parent and src.name.endswith(".part")


def test_bad_checksum_raises_and_leaves_nothing(server, client, tmp_path):
    manifest = manifest_for(serve(server), sha256=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(FetchError, match="checksum mismatch") as err:
        fetch_preset(manifest, "test", tmp_path, client=client)
    assert "model.gguf" in str(err.value)
    assert leftovers(tmp_path) == []


def test_dropped_connection_raises_and_leaves_nothing(server, client, tmp_path):
    url = serve(server, body=BODY[:100_000], declared=len(BODY))
    with pytest.raises(FetchError, match="model.gguf"):
        fetch_preset(manifest_for(url), "test", tmp_path, client=client)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("declared", [None, -1])
def test_a_download_larger_than_the_manifest_says_is_cut_off(server, client, tmp_path, declared):
    url = serve(server, body=BODY * 20, declared=declared)  # 6 MB where 300 KB are expected
    reason = "announces 6000000 bytes" if declared is None else "more than the manifest's"
    with pytest.raises(FetchError, match=reason):
        fetch_preset(manifest_for(url), "test", tmp_path, client=client)
    assert leftovers(tmp_path) == []


def test_a_manifest_built_in_code_cannot_write_outside_the_preset(server, client, tmp_path):
    file = ModelFile(path="../../escaped.gguf", size=len(BODY), sha256=SHA, url=serve(server))
    slot = Slot(name="test model", path=file.path, files=(file,))
    manifest = Manifest(presets={"test": Preset(description="t", slots={"llm": slot})})
    with pytest.raises(FetchError, match="resolves outside"):
        fetch_preset(manifest, "test", tmp_path / "models", client=client)
    assert server.hits == [] and not (tmp_path / "escaped.gguf").exists()


def test_http_error_names_the_status(server, client, tmp_path):
    url = f"http://127.0.0.1:{server.server_port}/gone.gguf"
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch_preset(manifest_for(url), "test", tmp_path, client=client)
    assert leftovers(tmp_path) == []


def test_present_file_with_right_checksum_is_skipped(server, client, tmp_path):
    dest = tmp_path / "test" / DEST
    dest.parent.mkdir(parents=True)
    dest.write_bytes(BODY)
    result = fetch_preset(manifest_for(serve(server)), "test", tmp_path, client=client)
    assert result == [(dest, False)]
    assert server.hits == []


def test_damaged_file_is_downloaded_again(server, client, tmp_path):
    dest = tmp_path / "test" / DEST
    dest.parent.mkdir(parents=True)
    dest.write_bytes(bytes(len(BODY)))
    fetch_preset(manifest_for(serve(server)), "test", tmp_path, client=client)
    assert dest.read_bytes() == BODY and server.hits == ["/model.gguf"]


def test_file_without_checksum_needs_allow_unverified(server, client, tmp_path):
    manifest = manifest_for(serve(server), sha256="")
    with pytest.raises(FetchError, match="--allow-unverified"):
        fetch_preset(manifest, "test", tmp_path, client=client)
    assert server.hits == [] and leftovers(tmp_path) == []

    fetch_preset(manifest, "test", tmp_path, allow_unverified=True, client=client)
    assert (tmp_path / "test" / DEST).read_bytes() == BODY


def test_verify_names_the_model_and_the_fix(server, client, tmp_path):
    manifest = manifest_for(serve(server))
    [problem] = verify(manifest, "test", tmp_path)
    assert problem.model == "test/llm [test model]" and problem.reason == "missing"
    assert problem.fix == "appliance models fetch test"

    fetch_preset(manifest, "test", tmp_path, client=client)
    assert verify(manifest, "test", tmp_path) == []

    (tmp_path / "test" / DEST).write_bytes(bytes(len(BODY)))
    [problem] = verify(manifest, "test", tmp_path)
    assert problem.reason.startswith("sha256 ")


def test_cli_fetch_downloads_a_preset(server, tmp_path, monkeypatch, capsys):
    for key in list(os.environ):
        if key.startswith("APPLIANCE_") or key.lower().endswith("_proxy"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(tmp_path))
    shipped = find_manifest(tmp_path).read_text()
    url = serve(server)
    (tmp_path / "manifest.toml").write_text(shipped + f"""
[presets.test]
description = "loopback"
[presets.test.slots.llm]
name = "test model"
path = "{DEST}"
files = [{{ path = "{DEST}", size = {len(BODY)}, sha256 = "{SHA}", url = "{url}" }}]
""")
    assert main(["models", "fetch", "test"]) == 0
    assert (tmp_path / "test" / DEST).read_bytes() == BODY
    assert "fetched" in capsys.readouterr().out


def test_shipped_manifest_pins_every_download():
    manifest = load_manifest(find_manifest("/nonexistent"))
    assert {"default", "gpu-small", "gpu-large"} <= set(manifest.presets)
    for slot_name, (package, inner, _) in DEFAULT_FILES.items():
        slot = manifest.presets["default"].slots[slot_name]
        assert (slot.package, slot.path) == (package, inner)
    for name in ("gpu-small", "gpu-large"):
        slots = manifest.presets[name].slots
        assert tuple(slots) == SLOTS
        assert slots["vad"] == manifest.presets["default"].slots["vad"]
        for slot_name in ("stt", "llm", "tts"):
            for file in slots[slot_name].files:
                assert file.url.startswith("https://huggingface.co/")
                assert "/resolve/main/" not in file.url
                assert len(file.sha256) == 64 and file.size > 0


def test_manifest_refuses_paths_outside_the_preset_folder(tmp_path):
    bad = tmp_path / "manifest.toml"
    bad.write_text(find_manifest(tmp_path).read_text() + """
[presets.evil]
description = "writes outside its folder"
[presets.evil.slots.llm]
name = "x"
path = "../../etc/x"
files = [{ path = "../../etc/x", size = 1, url = "https://example.invalid/x" }]
""")
    with pytest.raises(ManifestError, match="relative path"):
        load_manifest(bad)
