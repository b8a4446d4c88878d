"""Shared fixtures. ``ray_cluster``: one real two-node Ray cluster on localhost for the whole session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A two-node ``ray.cluster_utils.Cluster`` (1 CPU per node) with this process as its driver.

    Started once per session (a cluster costs ~10 s to start); tests that need a clean state kill
    only what they created. Yields the ``Cluster`` (``.address``, ``.add_node``, ``.remove_node``).
    """
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
