"""Fixtures the connectors' tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.serve import FakeServer, fake_server


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    """One loopback server per test module; each test serves its own fake on it."""
    with fake_server() as server:
        yield server
