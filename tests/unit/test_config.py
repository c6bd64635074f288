from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import REDACTED, ConfigError, SecretFilter, load_settings


def test_environment_and_toml_layer_over_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "a.toml"
    toml.write_text('port = 9001\nbusiness_name = "Acme"\n')
    settings = load_settings(toml, environ={"APPLIANCE_MAX_CALLS": "7", "APPLIANCE_PORT": "9002"})
    assert (settings.port, settings.max_calls, settings.business_name) == (9002, 7, "Acme")


@pytest.mark.parametrize("env, named", [
    ({"APPLIANCE_PORT": "eighty"}, "APPLIANCE_PORT"),
    ({"APPLIANCE_PORT": "0"}, "APPLIANCE_PORT"),
    ({"APPLIANCE_DEVICE": "tpu"}, "APPLIANCE_DEVICE"),
    ({"APPLIANCE_VAD_THRESHOLD": "2"}, "APPLIANCE_VAD_THRESHOLD"),
    ({"APPLIANCE_NO_SUCH": "1"}, "APPLIANCE_NO_SUCH"),
])
def test_invalid_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_vendor_variables_and_redaction() -> None:
    settings = load_settings(environ={"TWILIO_AUTH_TOKEN": "sekrit-token",
                                      "ELEVENLABS_API_KEY": "xi-key-123"})
    assert settings.twilio_auth_token == "sekrit-token"
    shown = settings.redacted()
    assert shown["twilio_auth_token"] == REDACTED and shown["elevenlabs_api_key"] == REDACTED


def test_config_show_never_prints_secrets(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "sekrit-token")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "sekrit-token" not in out and "TWILIO_AUTH_TOKEN" in out and REDACTED in out


def test_bad_setting_exits_with_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_MAX_CALLS", "lots")
    with pytest.raises(SystemExit, match="APPLIANCE_MAX_CALLS"):
        main(["config", "show"])


def test_secret_filter_scrubs_log_records() -> None:
    import logging
    record = logging.LogRecord("x", logging.INFO, "f", 1, "token is %s", ("sekrit-token",), None)
    SecretFilter(["sekrit-token"]).filter(record)
    assert record.getMessage() == f"token is {REDACTED}"


def test_without_a_twilio_token_a_private_local_token_is_kept(tmp_path: Path) -> None:
    import stat

    from appliance.config import signing_token

    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path)})
    token = signing_token(settings)
    assert len(token) == 32 and signing_token(settings) == token  # stable across restarts
    path = tmp_path / "local-twilio-auth-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    real = load_settings(environ={"APPLIANCE_DATA_DIR": str(tmp_path), "TWILIO_AUTH_TOKEN": "t0k"})
    assert signing_token(real) == "t0k"
