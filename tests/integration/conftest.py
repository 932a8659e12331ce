"""Fixtures for integration tests: the DNS test world (NSD + Unbound on loopback).

``dns_world``: the default world (tests/world/zones.py), started once per session.
``world_factory``: ``world_factory(zones, name="world") -> World`` starts a world for any
zone list (e.g. the default zones plus zones with TLSA records for certificates made at test
time); every world it made is stopped at the end of the session.

A missing binary fails the test (naming the Debian package); it never skips.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.world import MissingTool, World, Zone, default_zones, start_world

WorldFactory = Callable[..., World]


def _start(path_factory: pytest.TempPathFactory, zones: Sequence[Zone], name: str) -> World:
    try:
        return start_world(path_factory.mktemp(name), zones)
    except MissingTool as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def dns_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The default world: signed root, test., and one zone per DNSSEC variant."""
    world = _start(tmp_path_factory, default_zones(), "dns-world")
    try:
        yield world
    finally:
        world.stop()


@pytest.fixture(scope="session")
def world_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorldFactory]:
    """Start extra worlds from zone lists; all are stopped at the end of the session."""
    worlds: list[World] = []

    def make(zones: Sequence[Zone], name: str = "world") -> World:
        world = _start(tmp_path_factory, zones, name)
        worlds.append(world)
        return world

    try:
        yield make
    finally:
        for world in worlds:
            world.stop()
