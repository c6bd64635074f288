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
    ({"APPLIANCE_MAX_CALL": "1"}, "did you mean APPLIANCE_MAX_CALLS"),
    ({"APPLIANCE_LLM_THREAD": "2"}, "did you mean APPLIANCE_LLM_THREADS"),
    ({"APPLIANCE_PORT": "80x"}, "APPLIANCE_PORT must be a port number"),
])
def test_invalid_values_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=env)


def test_kubernetes_service_links_are_ignored_with_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Service named "appliance" injects these into every pod; start-up must survive them."""
    env = {
        "APPLIANCE_PORT": "tcp://10.96.0.12:8080",
        "APPLIANCE_PORT_8080_TCP": "tcp://10.96.0.12:8080",
        "APPLIANCE_PORT_8080_TCP_PROTO": "tcp",
        "APPLIANCE_PORT_8080_TCP_PORT": "8080",
        "APPLIANCE_PORT_8080_TCP_ADDR": "10.96.0.12",
        "APPLIANCE_SERVICE_HOST": "10.96.0.12",
        "APPLIANCE_SERVICE_PORT": "8080",
        "APPLIANCE_SERVICE_PORT_HTTP": "8080",
        "APPLIANCE_MAX_CALLS": "3",
    }
    settings = load_settings(environ=env)
    assert (settings.port, settings.max_calls) == (8080, 3)
    links = [r for r in caplog.records if "service link" in r.getMessage()]
    assert len(links) == 8


def test_variables_plainly_not_settings_only_warn(caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(environ={"APPLIANCE_HOME": "/opt/appliance", "APPLIANCE_MAX_CALLS": "2"})
    assert settings.max_calls == 2
    assert any("ignoring APPLIANCE_HOME" in r.getMessage() for r in caplog.records)


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
