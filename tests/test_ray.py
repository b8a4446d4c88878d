"""env.vectorization=ray on a real two-node Ray cluster (the session fixture ``ray_cluster``).

Same seed, same bits: GAIL-PPO trained with Ray rollout workers equals sync and batched; a worker
killed mid-round is replaced from the same env states; refusals are one line.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_runner import run_cli

from gail_robot.algos.config import config_from_dict
from gail_robot.algos.trainer import OnPolicyTrainer
from gail_robot.envs.ray_vector import RayVectorEnv, WorkersUnavailable
from gail_robot.errors import UserError

REPO = Path(__file__).resolve().parents[1]
HOPPER_DEMOS = REPO / "datasets" / "experts" / "Hopper-v5" / "demos.hdf5"


@pytest.fixture(autouse=True)
def _idle_cluster(ray_cluster: Any) -> None:
    """Start every test on an idle cluster: actors of a previous test may take a moment to free their CPUs."""
    import ray

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        total = ray.cluster_resources().get("CPU", 0.0)
        if total > 0 and ray.available_resources().get("CPU", 0.0) >= total:
            return
        time.sleep(0.2)


def _config(mode: str, n_steps: int = 32, rounds: int = 3, workers: int = 2, **env: Any) -> Any:
    """GAIL-PPO on Hopper: 4 envs x n_steps per round, evaluations after every round."""
    steps = 4 * n_steps * rounds
    return config_from_dict(
        {
            "algo": "gail",
            "env": {"id": "Hopper-v5", "num_envs": 4, "vectorization": mode, "num_workers": workers, **env},
            "policy": {"hidden_sizes": [32, 32]},
            "rollout": {"n_steps": n_steps},
            "ppo": {"epochs": 2, "minibatches": 4},
            "gail": {"demos": str(HOPPER_DEMOS), "max_demos": 2, "hidden_sizes": [32, 32], "batch_size": 64},
            "run": {
                "total_steps": steps,
                "seed": 3,
                "eval_interval": 4 * n_steps,
                "eval_episodes": 2,
                "checkpoint_interval": 10**9,
                "progress": False,
                "tensorboard": False,
            },
        }
    )


def _train(mode: str, run_dir: Path, **kwargs: Any) -> dict[str, Any]:
    path = OnPolicyTrainer(_config(mode, **kwargs), run_dir).train()  # type: ignore[arg-type]
    return torch.load(path, weights_only=False)


def _assert_same_run(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("actor", "critic"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs"
    for name, tensor in a["gail"]["disc"].items():
        assert torch.equal(tensor, b["gail"]["disc"][name]), f"discriminator.{name} differs"


def _metrics(run_dir: Path) -> list[dict[str, Any]]:
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_ray_equals_sync_and_batched_bit_for_bit(ray_cluster, tmp_path):
    ray_run = _train("ray", tmp_path / "ray")
    sync_run = _train("sync", tmp_path / "sync")
    batched_run = _train("batched", tmp_path / "batched")
    _assert_same_run(ray_run, sync_run)
    _assert_same_run(batched_run, sync_run)
    # evaluation episodes ran on the Ray workers and gave the in-process numbers
    ray_rows, sync_rows = _metrics(tmp_path / "ray"), _metrics(tmp_path / "sync")
    ray_evals = [r["eval_return"] for r in ray_rows if "eval_return" in r]
    assert len(ray_evals) == 3  # after rounds 1 and 2, and the final one
    assert ray_evals == [r["eval_return"] for r in sync_rows if "eval_return" in r]
    assert [r["episode_return"] for r in ray_rows if "episode_return" in r] == [
        r["episode_return"] for r in sync_rows if "episode_return" in r
    ]


def _kill_worker_after_submit(
    monkeypatch, worker: int, after_round: int, delay_s: float = 0.05
) -> dict[str, Any]:
    """SIGKILL Ray worker ``worker``'s process just after a rollout call was sent to it, once."""
    original = RayVectorEnv._get_with_replacement
    state: dict[str, Any] = {"killed": None}

    def killing(self: RayVectorEnv, indices: list[int], submit: Any) -> list[Any]:
        def submit_then_kill(i: int) -> Any:
            ref = submit(i)
            if state["killed"] is None and i == worker and len(self._history) == after_round:
                state["killed"] = self.pids[i]
                time.sleep(delay_s)
                os.kill(self.pids[i], signal.SIGKILL)
            return ref

        return original(self, indices, submit_then_kill)

    monkeypatch.setattr(RayVectorEnv, "_get_with_replacement", killing)
    return state


def test_a_worker_killed_mid_round_is_replaced_and_the_run_is_unchanged(ray_cluster, tmp_path, monkeypatch):
    reference = _train("sync", tmp_path / "sync", n_steps=128)
    state = _kill_worker_after_submit(monkeypatch, worker=1, after_round=1)
    faulty = _train("ray", tmp_path / "ray", n_steps=128)
    assert state["killed"] is not None
    _assert_same_run(faulty, reference)
    rows = _metrics(tmp_path / "ray")
    assert max(r.get("workers_replaced", 0) for r in rows) == 1


def test_a_lost_node_is_survived_bit_for_bit(ray_cluster, tmp_path, monkeypatch):
    """A third node joins, its worker's node is removed mid-round, a fourth node takes the worker over."""
    reference = _train("sync", tmp_path / "sync", n_steps=128, workers=3)
    doomed = ray_cluster.add_node(num_cpus=1)
    ray_cluster.wait_for_nodes()
    original = RayVectorEnv._get_with_replacement
    state: dict[str, Any] = {"removed": False}

    def lose_a_node(self: RayVectorEnv, indices: list[int], submit: Any) -> list[Any]:
        if state["removed"] or len(self._history) != 1:  # only during the second rollout
            return original(self, indices, submit)
        state["removed"] = True

        def submit_then_remove(i: int) -> Any:
            ref = submit(i)
            if i == len(self._workers) - 1 and "replacement" not in state:
                time.sleep(0.05)
                ray_cluster.remove_node(doomed)  # 3 workers on 3 one-CPU nodes: one was there
                state["replacement"] = ray_cluster.add_node(num_cpus=1)
            return ref

        return original(self, indices, submit_then_remove)

    monkeypatch.setattr(RayVectorEnv, "_get_with_replacement", lose_a_node)
    try:
        survived = _train("ray", tmp_path / "ray", n_steps=128, workers=3)
    finally:
        if "replacement" in state:  # back to the fixture's two nodes
            ray_cluster.remove_node(state["replacement"])
    assert state["removed"]
    _assert_same_run(survived, reference)
    assert max(r.get("workers_replaced", 0) for r in _metrics(tmp_path / "ray")) >= 1


def test_workers_that_cannot_be_replaced_stop_the_run_with_a_checkpoint(ray_cluster, tmp_path, monkeypatch):
    _kill_worker_after_submit(monkeypatch, worker=0, after_round=1)
    original_start = RayVectorEnv._start_worker

    def impossible_after_first(self: RayVectorEnv, i: int) -> Any:
        if self.pids and all(self.pids):  # a replacement: ask for more CPUs than any node has
            self._cpus_per_worker = 64.0
            self._timeout_s = 2.0  # (the first start keeps the default wait: a busy machine is slow)
        return original_start(self, i)

    monkeypatch.setattr(RayVectorEnv, "_start_worker", impossible_after_first)
    run_dir = tmp_path / "run"
    with pytest.raises(WorkersUnavailable, match=r"within 2 s.*continue with gail-robot train --resume"):
        _train("ray", run_dir)
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    monkeypatch.undo()
    # the saved state is the one before the abandoned round: the resumed run finishes
    resumed = OnPolicyTrainer(_config("sync"), run_dir, resume=True)
    assert resumed.run.env_steps == 4 * 32
    assert resumed.train().name == "final.pt"


def test_version_mismatch_and_unbuildable_env_are_refused_in_one_line(ray_cluster, monkeypatch):
    import gail_robot.cluster as cluster

    real = cluster.package_versions()
    monkeypatch.setattr(cluster, "package_versions", lambda: {**real, "torch": "0.0.1"})
    with pytest.raises(UserError, match=r"has torch .*, the driver has 0\.0\.1") as info:
        RayVectorEnv("Hopper-v5", 2, num_workers=1, timeout_s=30)
    assert "\n" not in str(info.value)
    monkeypatch.undo()

    # registered in this (driver) process only: the workers cannot build it
    gym.register(
        "DriverOnlyPendulum-v0", entry_point="gymnasium.envs.mujoco.inverted_pendulum_v5:InvertedPendulumEnv"
    )
    try:
        with pytest.raises(UserError, match=r"cannot build DriverOnlyPendulum-v0: .*") as info:
            RayVectorEnv("DriverOnlyPendulum-v0", 2, num_workers=1, timeout_s=30)
        assert "\n" not in str(info.value)
    finally:
        gym.registry.pop("DriverOnlyPendulum-v0")


def test_cli_refuses_unreachable_address_and_a_cluster_without_free_cpus(ray_cluster, tmp_path):
    start = time.monotonic()
    bad = run_cli(
        "train",
        "InvertedPendulum-v5",
        "--algo",
        "ppo",
        "--out",
        str(tmp_path / "a"),
        "--ray-address",
        "127.0.0.1:9",
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in bad.stderr
    assert time.monotonic() - start < 60

    full = run_cli(
        "train", "InvertedPendulum-v5", "--algo", "ppo", "--out", str(tmp_path / "b"),
        "--ray-address", ray_cluster.address,
        "--set", "env.cpus_per_worker=4", "--set", "env.worker_timeout_s=3",
    )  # fmt: skip
    assert full.returncode != 0 and "Traceback" not in full.stderr, full.stderr[-2000:]
    lines = [line for line in full.stderr.splitlines() if line.strip()]
    assert lines[-1].count("did not provide") == 1 and "4 CPU each" in lines[-1], full.stderr[-2000:]


def test_rollouts_continue_across_calls_and_direct_steps(ray_cluster):
    """Gymnasium's API on Ray workers: reset/step and whole-rollout calls share the env states."""
    envs = RayVectorEnv("InvertedPendulum-v5", 3, num_workers=2, timeout_s=30)
    try:
        from gymnasium.vector import AutoresetMode, SyncVectorEnv

        from gail_robot.envs.make import make_env

        local = SyncVectorEnv(
            [lambda: make_env("InvertedPendulum-v5") for _ in range(3)],
            autoreset_mode=AutoresetMode.SAME_STEP,
        )
        obs_r, _ = envs.reset(seed=5)
        obs_l, _ = local.reset(seed=[5, 6, 7])
        np.testing.assert_array_equal(obs_r, obs_l)
        rng = np.random.default_rng(0)
        for _ in range(40):
            a = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
            r, l_ = envs.step(a), local.step(a)
            for x, y in zip(r[:4], l_[:4], strict=True):
                np.testing.assert_array_equal(x, y)
        assert envs.parts == [slice(0, 2), slice(2, 3)]
        assert len(envs._history) == 40
    finally:
        envs.close()
