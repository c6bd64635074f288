"""Settings → model paths; ``appliance models verify`` says what is wrong and how to fix it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import Settings
from appliance.models.locate import SLOTS, ModelMissing, default_path
from appliance.models.manifest import find_manifest
from appliance.models.resolve import resolve_models

CONTENT = b"not really a model"
FAKE = f"""
[presets.fake]
description = "a preset whose llm is downloaded"
[presets.fake.slots.llm]
name = "fake llm"
path = "llm/fake.gguf"
files = [{{ path = "llm/fake.gguf", size = {len(CONTENT)}, \
sha256 = "{hashlib.sha256(CONTENT).hexdigest()}", url = "https://example.invalid/fake.gguf" }}]
"""


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    """A models folder whose manifest is the shipped one plus the ``fake`` preset."""
    shipped = find_manifest(tmp_path).read_text()
    (tmp_path / "manifest.toml").write_text(shipped + FAKE)
    return tmp_path


@pytest.fixture
def env(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean environment for ``appliance.cli.main``, pointed at ``models_dir``."""
    for key in list(os.environ):
        if key.startswith("APPLIANCE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("APPLIANCE_MODELS_DIR", str(models_dir))
    return models_dir


def test_default_preset_resolves_to_the_installed_packages(tmp_path):
    paths = resolve_models(Settings(models_dir=str(tmp_path)))
    for slot in SLOTS:
        assert getattr(paths, slot) == default_path(slot)
        assert getattr(paths, slot).exists()
    assert paths.stt.is_dir() and paths.llm.suffix == ".gguf"


def test_explicit_path_overrides_the_preset(tmp_path):
    model = tmp_path / "mine.gguf"
    model.write_bytes(CONTENT)
    paths = resolve_models(Settings(models_dir=str(tmp_path), llm_model=str(model)))
    assert paths.llm == model and paths.tts == default_path("tts")


def test_missing_override_names_the_slot_and_the_fix(tmp_path):
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelMissing) as err:
        resolve_models(Settings(models_dir=str(tmp_path), llm_model=str(missing)))
    assert err.value.slot == "llm" and err.value.path == str(missing)
    assert "APPLIANCE_LLM_MODEL" in err.value.fix and "fix:" in str(err.value)


def test_preset_resolves_under_models_dir_once_fetched(models_dir):
    settings = Settings(models_dir=str(models_dir), models="fake")
    with pytest.raises(ModelMissing) as err:
        resolve_models(settings)
    assert err.value.slot == "llm" and err.value.fix == "appliance models fetch fake"

    model = models_dir / "fake" / "llm" / "fake.gguf"
    model.parent.mkdir(parents=True)
    model.write_bytes(CONTENT[:-1])  # truncated: still missing
    with pytest.raises(ModelMissing):
        resolve_models(settings)

    model.write_bytes(CONTENT)
    paths = resolve_models(settings)
    assert paths.llm == model and paths.vad == default_path("vad")


def test_unknown_preset_says_which_exist(tmp_path):
    with pytest.raises(ModelMissing) as err:
        resolve_models(Settings(models_dir=str(tmp_path), models="huge"))
    assert err.value.slot == "models"
    assert "APPLIANCE_MODELS" in err.value.fix and "gpu-small" in err.value.fix


def test_cli_verify_passes_with_the_defaults(env, capsys):
    assert main(["models", "verify"]) == 0
    assert "verified" in capsys.readouterr().out


def test_cli_verify_fails_on_a_missing_override(env, monkeypatch, capsys):
    missing = env / "missing.gguf"
    monkeypatch.setenv("APPLIANCE_LLM_MODEL", str(missing))
    assert main(["models", "verify"]) != 0
    err = capsys.readouterr().err
    assert "llm" in err and str(missing) in err and "APPLIANCE_LLM_MODEL" in err


def test_cli_verify_names_an_absent_preset_file_and_the_fetch(env, monkeypatch, capsys):
    monkeypatch.setenv("APPLIANCE_MODELS", "fake")
    assert main(["models", "verify"]) != 0
    err = capsys.readouterr().err
    assert "fake/llm [fake llm]" in err and "appliance models fetch fake" in err

    monkeypatch.delenv("APPLIANCE_MODELS")
    assert main(["models", "verify", "fake"]) != 0


def test_cli_list_shows_presets_and_state(env, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "default (configured)" in out and "gpu-large" in out
    assert "installed" in out and "missing" in out


@pytest.mark.parametrize("argv", [[], ["list"], ["fetch"], ["verify"]])
def test_every_models_verb_has_help(argv, capsys):
    with pytest.raises(SystemExit) as done:
        main(["models", *argv, "--help"])
    assert done.value.code == 0
    assert "usage: appliance models" in capsys.readouterr().out
