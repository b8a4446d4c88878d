"""Shared fixtures. ``ray_cluster``: one real two-node Ray cluster on localhost for the whole session;
``controller_build``: the C++ policy library and controller, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
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


@pytest.fixture(scope="session")
def controller_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the policy library (installed into ``BUILD/prefix``) and the controller once per session.

    Deliberately not skipped when cmake or a compiler is missing: CI must build the C++ side so that
    deployment cannot rot (cmake comes with the [dev] extra). Returns the build directory.
    ``GAIL_ROBOT_TEST_CONTROLLER_BUILD=DIR`` builds in DIR instead (incremental: seconds instead of
    minutes when iterating on csrc/).
    """
    import os

    from gail_robot import controller

    reuse = os.environ.get("GAIL_ROBOT_TEST_CONTROLLER_BUILD")
    build_dir = Path(reuse) if reuse else tmp_path_factory.mktemp("controller-build")
    binary = controller.build_controller(build_dir)
    assert binary == build_dir.resolve() / "gail-robot-controller" and binary.is_file()
    return build_dir
