"""Fixtures shared by the verifier's test modules (each defines its own module-scoped ``world``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from verifier_fixtures import SiteServer, World


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[SiteServer]:
    """The module's ``world`` site served over HTTP for the whole module."""
    with SiteServer(world.site) as srv:
        yield srv


@pytest.fixture()
def srv(server: SiteServer) -> Iterator[SiteServer]:
    """The served site with no overrides, reset again after the test."""
    server.reset()
    yield server
    server.reset()
