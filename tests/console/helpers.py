"""A real server with the console, seeded accounts, and a logged-in httpx client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from appliance.auth import Accounts, open_accounts_db
from appliance.config import Settings
from appliance.web.app import create_app
from tests.conftest import running_server
from tests.web.fake_engines import FakeSet

ADMIN, VIEWER, PASSWORD = "ada", "vic", "correct horse battery"


def seed_accounts(settings: Settings) -> Accounts:
    accounts = Accounts(open_accounts_db(settings.db_path))
    accounts.add_user(ADMIN, PASSWORD, "admin", actor="test")
    accounts.add_user(VIEWER, PASSWORD, "viewer", actor="test")
    return accounts


@contextmanager
def console_server(settings: Settings, fakes: FakeSet | None = None) -> Iterator[str]:
    seed_accounts(settings).db.conn.close()
    with running_server(create_app(settings, (fakes or FakeSet()).load), settings) as base:
        yield base


def login_form_token(client: httpx.Client, base: str) -> str:
    page = client.get(f"{base}/console/login")
    return re.search(r'name="_csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]


def login(base: str, username: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
    """A client holding a session cookie, and the session's CSRF token from a page."""
    client = httpx.Client(base_url=base, timeout=30)
    token = login_form_token(client, base)
    response = client.post("/console/login", data={"username": username, "password": password,
                                                    "_csrf": token, "next": "/console/calls"})
    assert response.status_code == 303, response.text
    page = client.get("/console/calls")
    csrf = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    return client, csrf
