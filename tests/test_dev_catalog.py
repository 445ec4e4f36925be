"""Every PostgreSQL version the dev stage's catalog offers works under `make run`: the local driver serves it."""

from __future__ import annotations

from orochi_agent.drivers.local.binaries import find_installations

from chalicelib.settings import Settings
from devstack.run import stage_environment


def test_the_dev_catalog_offers_exactly_the_versions_the_local_driver_serves_here() -> None:
    offered = sorted(version for version, _ in Settings.from_env(stage_environment()).postgres_images)
    assert offered == sorted(find_installations())
