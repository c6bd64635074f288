"""Fixtures for the shared servers (PostgreSQL, Redis): real ones, each test in its own namespace.

A server that is not running skips its tests with the reason, except under ``CI=true``, where a
missing server is a failure: CI must never pass by skipping what it is there to prove.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest
import redis

from appliance.bench.services import redis_namespace

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require(server: str, err: Exception) -> None:
    """Skip (fail under CI=true) because ``server`` is unreachable."""
    reason = f"{server} is not reachable ({type(err).__name__}: {err})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must run these tests", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as err:
        require("PostgreSQL at " + POSTGRES_URL, err)
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        sep = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{sep}options={quote(f'-c search_path={schema}')}"
        admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def postgres_server() -> str:
    """The PostgreSQL URL itself, for code that makes (and drops) its own schema in it."""
    try:
        psycopg.connect(POSTGRES_URL, connect_timeout=3).close()
    except psycopg.OperationalError as err:
        require("PostgreSQL at " + POSTGRES_URL, err)
    return POSTGRES_URL


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The Redis URL; the test keeps its keys under its own cluster name (see ``cluster_name``)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as err:
        require("Redis at " + REDIS_URL, err)
    yield REDIS_URL
    client.close()


@pytest.fixture
def cluster_name(redis_url: str) -> Iterator[str]:
    """A unique cluster name (Redis key prefix); its keys are deleted afterwards."""
    with redis_namespace(redis_url, "test") as name:
        yield name
