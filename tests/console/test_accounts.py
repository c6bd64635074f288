"""Accounts, tokens, sessions, audit and the login limiter, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.auth import AccountError, Accounts, open_accounts_db
from appliance.auth.ratelimit import LoginLimiter
from appliance.config import load_settings
from appliance.console.queries import DECLINED_PREFIX
from appliance.core.agent import Agent
from appliance.core.workers import Workers
from appliance.engines.fakes import FakeLlm


@pytest.fixture
def accounts(tmp_path: Path) -> Accounts:
    return Accounts(open_accounts_db(tmp_path / "calls.db"))


def test_password_is_hashed_with_argon2_and_verified(accounts: Accounts) -> None:
    accounts.add_user("ada", "long enough pw", "admin", actor="t")
    stored = accounts.db.execute("SELECT password_hash FROM users").fetchone()[0]
    assert stored.startswith("$argon2id$") and "long enough pw" not in stored
    user = accounts.verify_password("ada", "long enough pw")
    assert user is not None and user.role == "admin"
    assert accounts.verify_password("ada", "wrong password") is None
    assert accounts.verify_password("nobody", "long enough pw") is None


def test_refusals(accounts: Accounts) -> None:
    with pytest.raises(AccountError, match="too short"):
        accounts.add_user("ada", "short", "admin", actor="t")
    with pytest.raises(AccountError, match="unknown role"):
        accounts.add_user("ada", "long enough pw", "root", actor="t")
    accounts.add_user("ada", "long enough pw", "viewer", actor="t")
    with pytest.raises(AccountError, match="already exists"):
        accounts.add_user("ada", "long enough pw", "viewer", actor="t")
    with pytest.raises(AccountError, match="no user"):
        accounts.remove_user("bob", actor="t")


def test_tokens_are_stored_hashed_and_revocable(accounts: Accounts) -> None:
    token, secret = accounts.create_token("crm", "viewer", actor="ada")
    assert secret.startswith("apl_") and len(secret) > 40
    assert secret not in str(list(accounts.db["api_tokens"].rows))
    principal = accounts.token_principal(secret)
    assert principal and principal.role == "viewer" and principal.via == "token"
    assert accounts.token_principal(secret + "x") is None
    accounts.revoke_token(token.id, actor="ada")
    assert accounts.token_principal(secret) is None
    with pytest.raises(AccountError):
        accounts.revoke_token(token.id, actor="ada")


def test_sessions_expire_and_end_with_password_change_or_removal(accounts: Accounts) -> None:
    accounts.add_user("ada", "long enough pw", "admin", actor="t")
    expired = accounts.open_session("ada", -1)
    assert accounts.session_principal(expired) is None
    live = accounts.open_session("ada", 3600)
    principal = accounts.session_principal(live)
    assert principal and principal.csrf and principal.via == "session"
    accounts.set_password("ada", "another long pw", actor="t")
    assert accounts.session_principal(live) is None
    live = accounts.open_session("ada", 3600)
    accounts.remove_user("ada", actor="t")
    assert accounts.session_principal(live) is None


def test_audit_log_records_admin_actions(accounts: Accounts) -> None:
    accounts.add_user("ada", "long enough pw", "admin", actor="cli")
    accounts.create_token("crm", "viewer", actor="ada")
    actions = [(r["actor"], r["action"]) for r in accounts.audit_log()]
    assert actions == [("ada", "token.create"), ("cli", "user.add")]


def test_login_limiter_locks_a_pair_then_forgives() -> None:
    now = [0.0]
    limiter = LoginLimiter(max_failures=3, window_s=60, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("1.2.3.4", "ada") == 0
        limiter.failed("1.2.3.4", "ada")
    assert limiter.retry_after("1.2.3.4", "ADA") == 60
    assert limiter.retry_after("5.6.7.8", "ada") == 0  # another address is not locked out
    now[0] = 59.0
    assert limiter.retry_after("1.2.3.4", "ada") == pytest.approx(1.0)
    now[0] = 60.0
    assert limiter.retry_after("1.2.3.4", "ada") == 0


def test_declined_filter_matches_the_agents_decline_phrase(tmp_path: Path) -> None:
    settings = load_settings(environ={}, data_dir=str(tmp_path))
    workers = Workers.sized(1, 1)
    try:
        agent = Agent(settings, FakeLlm([]), None, workers)
        assert agent.unknown_answer.startswith(DECLINED_PREFIX)
    finally:
        workers.shutdown()
