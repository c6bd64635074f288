"""The console's tests that read the call log run on both back ends: SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import Settings
from tests.conftest import make_settings


@pytest.fixture(params=["sqlite", "postgres"])
def log_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings whose call log is SQLite or PostgreSQL (a fresh schema, dropped afterwards)."""
    if request.param == "sqlite":
        return make_settings(tmp_path)
    return make_settings(tmp_path, database_url=request.getfixturevalue("postgres_url"))
