"""The spoken-set measurements (turn taking, Whisper's window) refuse what they cannot do with a
clear error, not a traceback."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from appliance.bench import stt_window, turn_taking

Main = Callable[[Sequence[str] | None], int]


@pytest.mark.parametrize("main", [stt_window.main, turn_taking.main])
def test_an_unknown_voice_is_refused_by_name(main: Main,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--voices", "piper,bogus"])
    assert exited.value.code == 2
    assert "unknown voice bogus (choose from piper, espeak-ng)" in capsys.readouterr().err


@pytest.mark.parametrize("main", [stt_window.main, turn_taking.main])
def test_a_voice_not_installed_says_how_to_get_it(main: Main,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(turn_taking.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exited:
        main(["--voices", "espeak-ng"])
    assert exited.value.code == 2
    assert "espeak-ng is not installed (Debian: apt-get install espeak-ng)" in (
        capsys.readouterr().err)
