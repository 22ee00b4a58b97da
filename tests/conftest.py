from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import RedisServer, Replica, replicas


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server of the test run's own, shared by tests that do not stop it."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def two_replicas(redis_server: RedisServer) -> Iterator[list[Replica]]:
    """Two relay processes (uvicorn) sharing the test redis-server.

    Rooms there may hold several candidates (tests of many typists); the one-candidate default is
    tested in tests/test_api.py and tests/test_frontend_contract.py.
    """
    with replicas(2, {"REDIS_URL": redis_server.url, "RELAY_MAX_CANDIDATES": "10"}) as started:
        yield started
