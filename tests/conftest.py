"""Shared fixtures. ``ray_cluster``: one real two-node Ray cluster on localhost for the whole session;
``controller_build``: the C++ policy library and controller, built once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: The longest test files (measured: pytest --junitxml, 2 cores), run first. ``pytest -n 2 --dist
#: loadfile --no-loadscope-reorder`` hands out files in collection order, so long files first lets the
#: two workers finish together instead of one running a long file alone at the end. The controller
#: build comes first so that test_policy_lib.py, which needs it, runs after it instead of waiting on it.
LONGEST_FIRST = (
    "test_controller.py",
    "test_sweep_ray.py",
    "test_policy_lib.py",
    "test_train_cli.py",
    "test_airl.py",
    "test_ray.py",
    "test_record_crash.py",
    "test_interventions.py",
    "test_dagger_gail.py",
    "test_export.py",
    "test_discrete.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (stable: each file keeps its own order, the others their collection order)."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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
    """Build the policy library (installed into ``BUILD/prefix``) and the controller once per session
    (once per ``pytest -n`` run: the workers share the build directory).

    Deliberately not skipped when cmake or a compiler is missing: CI must build the C++ side so that
    deployment cannot rot (cmake comes with the [dev] extra). Returns the build directory.
    ``GAIL_ROBOT_TEST_CONTROLLER_BUILD=DIR`` builds in DIR instead (incremental: seconds instead of
    minutes when iterating on csrc/).
    """
    import os

    from gail_robot import controller

    reuse = os.environ.get("GAIL_ROBOT_TEST_CONTROLLER_BUILD")
    if reuse:
        build_dir = Path(reuse)
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        # pytest -n: the workers share one build (the first builds, the others find it up to date)
        # instead of each compiling for a minute; the base temp's parent is common to the workers.
        build_dir = tmp_path_factory.getbasetemp().parent / "controller-build"
    else:
        build_dir = tmp_path_factory.mktemp("controller-build")
    from filelock import FileLock  # a torch dependency

    with FileLock(str(build_dir) + ".lock"):
        binary = controller.build_controller(build_dir)
    assert binary == build_dir.resolve() / "gail-robot-controller" and binary.is_file()
    return build_dir
