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
    ({"APPLIANCE_STT_PAD_MS": "-1"}, "APPLIANCE_STT_PAD_MS"),
    ({"APPLIANCE_STT_PAD_MS": "60000"}, "APPLIANCE_STT_PAD_MS"),
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
    settings = load_settings(environ={"APPLIANCE_HOME": "/opt/appliance",
                                      "APPLIANCE_MAX_CALLS": "2"})
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


def test_api_token_is_a_secret_and_must_be_long(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    token = "api-token-0123456789abcdef"
    settings = load_settings(environ={"APPLIANCE_API_TOKEN": token})
    assert settings.redacted()["api_token"] == REDACTED and token in settings.secrets()
    with pytest.raises(ConfigError, match="APPLIANCE_API_TOKEN") as err:
        load_settings(environ={"APPLIANCE_API_TOKEN": "short-one"})
    assert "short-one" not in str(err.value)
    monkeypatch.setenv("APPLIANCE_API_TOKEN", token)
    assert main(["config", "show"]) == 0
    assert token not in capsys.readouterr().out


def test_without_an_api_token_processes_share_one_private_local_token(tmp_path: Path) -> None:
    import stat
    from concurrent.futures import ThreadPoolExecutor

    from appliance.config import api_headers, api_token

    data = tmp_path / "data"
    settings = load_settings(environ={"APPLIANCE_DATA_DIR": str(data)})
    with ThreadPoolExecutor(8) as pool:  # the bench and the server it spawned, at once
        tokens = set(pool.map(lambda _: api_token(settings), range(32)))
    assert len(tokens) == 1 and len(tokens.pop()) == 32
    assert stat.S_IMODE((data / "local-api-token").stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert sorted(p.name for p in data.iterdir()) == ["local-api-token"]  # no drafts left
    configured = load_settings(environ={"APPLIANCE_API_TOKEN": "x" * 16})
    assert api_headers(configured) == {"Authorization": "Bearer " + "x" * 16}


@pytest.mark.parametrize("value, ok", [
    ("", True), ("127.0.0.1", True), ("10.0.0.0/8, ::1", True), ("proxy.local", False),
    ("*", False),
])
def test_trusted_proxies_are_addresses_or_networks(value: str, ok: bool) -> None:
    if ok:
        load_settings(environ={"APPLIANCE_TRUSTED_PROXIES": value})
    else:
        with pytest.raises(ConfigError, match="APPLIANCE_TRUSTED_PROXIES"):
            load_settings(environ={"APPLIANCE_TRUSTED_PROXIES": value})


def test_forwarded_headers_are_believed_only_from_configured_proxies() -> None:
    from appliance.cli.serve_cmd import uvicorn_options

    default = uvicorn_options(load_settings(environ={}))
    assert default["proxy_headers"] is False and default["forwarded_allow_ips"] == []
    proxied = uvicorn_options(load_settings(environ={"APPLIANCE_TRUSTED_PROXIES": "10.1.2.3"}))
    assert proxied["proxy_headers"] is True and proxied["forwarded_allow_ips"] == ["10.1.2.3"]


def test_log_lines_cannot_be_forged_with_control_characters() -> None:
    import logging

    from appliance.config import OneLineFilter

    forged = "CA1\n2026-12-01 12:00:00 INFO appliance: call CA2 transferred\x1b[2K\u2028"
    record = logging.LogRecord("x", logging.INFO, "f", 1, "call %s: closed", (forged,), None)
    OneLineFilter().filter(record)
    line = record.getMessage()
    assert "\n" not in line and "\x1b" not in line and "\u2028" not in line
    assert line.startswith("call CA1\\n2026-12-01") and line.endswith(": closed")
    tail = logging.LogRecord("x", logging.INFO, "f", 1, "its log:\n%s", ("a\nb",), None)
    OneLineFilter().filter(tail)  # the message's own line break stays; what went in is escaped
    assert tail.getMessage() == "its log:\na\\nb"
