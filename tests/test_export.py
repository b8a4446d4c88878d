"""Export: the TorchScript module is the whole policy, its metadata, --verify, other formats, errors."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from cli_runner import run_cli
from policy_factory import make_checkpoint

from gail_robot import export
from gail_robot.core import NORM_EPSILON, normalize
from gail_robot.errors import UserError
from gail_robot.export import cli as export_cli
from gail_robot.nets import normalization_std, normalize_torch
from gail_robot.policy_io import PolicyBundle, load_policy

ATOL = 1e-5


def jit_load(path: Path, extra: dict[str, Any] | None = None) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.[\w.]+` is deprecated", category=DeprecationWarning
        )
        return torch.jit.load(str(path), _extra_files=extra if extra is not None else {})


@pytest.fixture(scope="module")
def hopper_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "final.pt")


@pytest.fixture(scope="module")
def hopper_bundle(hopper_checkpoint: Path) -> PolicyBundle:
    return load_policy(hopper_checkpoint)


@pytest.fixture(scope="module")
def hopper_observations() -> np.ndarray:
    """(1200, 11) float32 env observations plus wide random ones (beyond the clip range)."""
    env = gym.make("Hopper-v5")
    rng = np.random.default_rng(1)
    obs, _ = env.reset(seed=1)
    out = []
    for t in range(1000):
        out.append(obs)
        obs, _, terminated, truncated, _ = env.step(
            env.action_space.sample() if t % 2 else np.zeros(3, np.float32)
        )
        if terminated or truncated:
            obs, _ = env.reset(seed=t)
    env.close()
    wide = rng.normal(scale=30.0, size=(200, 11))
    return np.concatenate([np.asarray(out), wide]).astype(np.float32)


@pytest.mark.parametrize("mode", ["script", "trace"])
def test_exported_module_equals_bundle_act(
    tmp_path: Path, hopper_bundle: PolicyBundle, hopper_observations: np.ndarray, mode: str
) -> None:
    out = tmp_path / "policy.pt"
    export.export_policy(hopper_bundle, out, mode=mode)
    module = jit_load(out)
    with torch.inference_mode():
        got = module(torch.from_numpy(hopper_observations)).numpy()
        single = module(torch.from_numpy(hopper_observations[:1])).numpy()
        as_double = module(torch.from_numpy(hopper_observations.astype(np.float64))).numpy()
    expected = hopper_bundle.act(hopper_observations)
    assert got.dtype == np.float32 and got.shape == (len(hopper_observations), 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    # Batch 1 works; GEMM kernels differ by batch size, so only round-off may differ.
    np.testing.assert_allclose(single, got[:1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(as_double, got)  # float64 input is accepted (rounded to float32 first)
    with pytest.raises(Exception, match=r"expected observations of shape \(B, 11\)"):
        module(torch.zeros(2, 12))


def test_normalisation_unscaling_and_clipping_are_inside(tmp_path: Path) -> None:
    """Asymmetric bounds, a saturating actor and normalisation: the module equals the formula."""
    obs_dim = 5
    linear = torch.nn.Linear(obs_dim, 3)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(3, obs_dim, generator=torch.Generator().manual_seed(0)) * 3)
    bundle = PolicyBundle(
        actor=linear,
        obs_mean=np.linspace(-1, 1, obs_dim),
        obs_var=np.linspace(0.1, 4.0, obs_dim),
        obs_clip=2.0,
        action_low=np.array([-0.4, 0.0, 2.0], np.float32),
        action_high=np.array([0.4, 3.0, 5.0], np.float32),
        env_id="none",
    )
    scripted = export.to_torchscript(export.build_module(bundle), "script")
    obs = np.random.default_rng(0).normal(scale=5.0, size=(4000, obs_dim)).astype(np.float32)
    with torch.inference_mode():
        got = scripted(torch.from_numpy(obs)).numpy()
    std = np.sqrt(bundle.obs_var + NORM_EPSILON)
    norm = np.clip((obs - bundle.obs_mean) / std, -2.0, 2.0).astype(np.float32)
    mean = linear(torch.from_numpy(norm)).detach().numpy()
    expected = bundle.action_low + (np.clip(mean, -1, 1) + 1) / 2 * (bundle.action_high - bundle.action_low)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got, bundle.act(obs), rtol=0, atol=ATOL)
    assert np.all(got >= bundle.action_low) and np.all(got <= bundle.action_high)
    saturated = np.isclose(got, bundle.action_low) | np.isclose(got, bundle.action_high)
    assert saturated.mean() > 0.3  # the clip was exercised, not only the linear part


class _RecordingActor(torch.nn.Module):
    """Keeps its (normalised) input and returns zeros: shows what the exported module feeds the actor."""

    def __init__(self, obs_dim: int, act_dim: int) -> None:
        super().__init__()
        self.act_dim = act_dim
        self.seen = torch.zeros(0, obs_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.clone()
        return torch.zeros(x.size(0), self.act_dim)


def test_exported_normalisation_is_core_normalize() -> None:
    """The torch mirror equals ``core.normalize`` bit for bit, eager and scripted (both compute in float64).

    Tolerance: none (exact float32 equality) on a probe batch with large, tiny, clipped and float64 values.
    """
    obs_dim = 9
    rng = np.random.default_rng(3)
    mean = rng.normal(scale=5.0, size=obs_dim)
    var = np.concatenate([[0.0, 1e-12, 1e-6], rng.uniform(0.01, 100.0, obs_dim - 3)])  # tiny: the epsilon
    clip = 4.0
    probe = np.concatenate(
        [
            rng.normal(scale=1.0, size=(500, obs_dim)) * np.sqrt(var) + mean,
            rng.normal(scale=1e4, size=(500, obs_dim)),  # clipped
            rng.uniform(-1e-3, 1e-3, size=(24, obs_dim)) + mean,
        ]
    ).astype(np.float32)
    expected = normalize(probe, mean, var, clip)
    assert np.any(np.abs(expected) == clip) and np.any(np.abs(expected) < clip)  # both branches probed

    std = normalization_std(var)
    with export.torchscript_calls():
        scripted_fn = torch.jit.script(normalize_torch)
    for fn in (normalize_torch, scripted_fn):
        got = fn(torch.from_numpy(probe), torch.from_numpy(mean), std, clip).numpy()
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected)
    # float64 input: core.normalize and the module both round to float32 only once, at the end.
    probe64 = probe.astype(np.float64) + 1e-9
    np.testing.assert_array_equal(
        normalize_torch(torch.from_numpy(probe64), torch.from_numpy(mean), std, clip).numpy(),
        normalize(probe64, mean, var, clip),
    )

    # What the exported module (eager and scripted) feeds its actor is exactly core.normalize.
    bundle = PolicyBundle(
        actor=_RecordingActor(obs_dim, 2),
        obs_mean=mean,
        obs_var=var,
        obs_clip=clip,
        action_low=-np.ones(2, np.float32),
        action_high=np.ones(2, np.float32),
        env_id="none",
    )
    eager = export.build_module(bundle)
    scripted = export.to_torchscript(export.build_module(bundle), "script")
    for module in (eager, scripted):
        with torch.inference_mode():
            module(torch.from_numpy(probe))
        np.testing.assert_array_equal(module.actor.seen.numpy(), expected)


def test_meta_json_and_policy_io_round_trip(
    tmp_path: Path, hopper_bundle: PolicyBundle, hopper_observations: np.ndarray
) -> None:
    out = tmp_path / "policy.pt"
    export.export_policy(hopper_bundle, out, source="run/final.pt")
    extra = {"meta.json": ""}
    jit_load(out, extra)
    meta = json.loads(extra["meta.json"])
    assert meta == export.read_meta(out)
    assert meta["format"] == "gail_robot.policy" and meta["format_version"] == 1
    assert meta["env_id"] == "Hopper-v5" and meta["obs_dim"] == 11 and meta["act_dim"] == 3
    assert meta["action_low"] == [-1.0, -1.0, -1.0] and meta["action_high"] == [1.0, 1.0, 1.0]
    assert meta["frame_skip"] == 4 and meta["dt"] == pytest.approx(0.008)
    assert meta["model_file"] == "hopper.xml"
    assert [s["field"] for s in meta["observation_layout"]] == ["qpos", "qvel"]
    assert meta["observation_layout"][1]["clip"] == [-10.0, 10.0]
    assert meta["task"]["family"] == "hopper" and meta["task"]["healthy_z_range"] == [0.7, None]
    assert meta["training"]["algo"] == "test" and meta["source"] == "run/final.pt"
    assert set(meta["versions"]) >= {"gail_robot", "torch", "mujoco", "gymnasium"}
    # The exported file is itself a policy source for the rest of the project (docs/DESIGN.md §5).
    reloaded = load_policy(out)
    assert reloaded.env_id == "Hopper-v5"
    np.testing.assert_allclose(
        reloaded.act(hopper_observations), hopper_bundle.act(hopper_observations), rtol=0, atol=ATOL
    )


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("Hopper-v5", {}),
        ("Hopper-v5", {"exclude_current_positions_from_observation": False}),
        ("Walker2d-v5", {}),
        ("HalfCheetah-v5", {}),
        ("Ant-v5", {}),
        ("Ant-v5", {"include_cfrc_ext_in_observation": False, "contact_force_range": (-0.5, 0.5)}),
        ("Humanoid-v5", {}),
        ("Humanoid-v5", {"include_cinert_in_observation": False, "include_cvel_in_observation": False}),
    ],
)
def test_observation_layout_rebuilds_the_env_observation(env_id: str, kwargs: dict[str, Any]) -> None:
    env = gym.make(env_id, **kwargs)
    layout = export.observation_layout(env)
    assert layout is not None
    assert sum(s["size"] for s in layout) == env.observation_space.shape[0]
    export.check_layout(env, layout, steps=40)  # raises on the first differing observation
    env.close()


def test_layout_check_catches_a_wrong_layout() -> None:
    env = gym.make("Hopper-v5")
    layout = export.observation_layout(env)
    assert layout is not None
    layout[0]["offset"] = 0  # Hopper-v5 skips qpos[0] (x); observing x instead of the last joint is wrong
    with pytest.raises(RuntimeError, match="disagrees"):
        export.check_layout(env, layout, steps=5)
    env.close()


def _write_demos(path: Path, bundle: PolicyBundle, episodes: int = 3) -> Path:
    from gail_robot.data import DemoWriter
    from gail_robot.envs.physics import get_physics_state

    env = gym.make(bundle.env_id)
    with DemoWriter(path, env) as writer:
        for ep in range(episodes):
            obs, _ = env.reset(seed=100 + ep)
            writer.start_episode(seed=100 + ep, source="policy:test")
            for _ in range(200):
                state = get_physics_state(env)
                action = bundle.act(obs)
                next_obs, reward, terminated, truncated, _ = env.step(action)
                writer.add_step(obs, action, float(reward), next_obs, terminated, truncated, state)
                obs = next_obs
                if terminated or truncated:
                    break
            writer.end_episode(success=False, final_state=get_physics_state(env), cut=True)
    env.close()
    return path


def test_cli_export_verify_passes(
    tmp_path: Path, hopper_checkpoint: Path, hopper_bundle: PolicyBundle
) -> None:
    demos = _write_demos(tmp_path / "demos.hdf5", hopper_bundle)
    out = tmp_path / "policy.pt"
    proc = run_cli(
        "export",
        str(hopper_checkpoint.parent),
        "--out",
        str(out),
        "--verify",
        "--demos",
        str(demos),
        "--verify-steps",
        "300",
    )
    assert proc.returncode == 0, proc.stderr
    assert "C++ controller: yes" in proc.stdout
    assert "1000 env + " in proc.stdout and "demo observations in a fresh process" in proc.stdout
    assert proc.stdout.strip().endswith("verify: OK")
    assert proc.stderr == ""


def test_verify_detects_a_different_policy(tmp_path: Path, hopper_bundle: PolicyBundle) -> None:
    out = tmp_path / "policy.pt"
    export.export_policy(hopper_bundle, out)
    other = load_policy(make_checkpoint(tmp_path / "other.pt", seed=1))
    report = export.verify_export(other, out, n_obs=1000, rollout_steps=50)
    assert not report["ok"]
    assert report["open_loop_max_abs_diff"] > 1e-2
    assert report["n_env_obs"] == 1000


def test_cli_errors_are_one_line(tmp_path: Path, hopper_checkpoint: Path) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"this is not a checkpoint" * 10)
    other_version = tmp_path / "v99.pt"
    data = torch.load(hopper_checkpoint, weights_only=True)
    data["format_version"] = 99
    torch.save(data, other_version)
    cases = [
        (["export", str(corrupt), "--out", str(tmp_path / "a.pt")], "cannot read checkpoint"),
        (["export", str(other_version), "--out", str(tmp_path / "b.pt")], "format version 99"),
        (["export", str(tmp_path / "missing"), "--out", str(tmp_path / "c.pt")], "no such file or directory"),
        (
            ["export", str(hopper_checkpoint), "--out", str(tmp_path / "d.pt"), "--format", "tflite"],
            "unknown format 'tflite'",
        ),
        (
            ["export", str(hopper_checkpoint), "--out", str(tmp_path / "e.pt"), "--mode", "freeze"],
            "unknown --mode 'freeze'",
        ),
    ]
    for argv, message in cases:
        proc = run_cli(*argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gail-robot export: error: "), proc.stderr
        assert message in lines[0]
    assert not any(p.name in {"a.pt", "b.pt", "c.pt", "d.pt", "e.pt"} for p in tmp_path.iterdir())


def test_missing_onnx_extra_is_a_user_error(
    monkeypatch: pytest.MonkeyPatch, hopper_checkpoint: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the [onnx] extra were not installed
    args = argparse.Namespace(
        source=str(hopper_checkpoint),
        out=str(tmp_path / "p.onnx"),
        format="onnx",
        mode="script",
        verify=False,
        demos=None,
        verify_obs=1000,
        verify_steps=100,
        seed=0,
    )
    with pytest.raises(UserError, match=r"pip install 'gail-robot\[onnx\]'"):
        export_cli.main(args)


def test_non_scriptable_actor_suggests_trace(tmp_path: Path) -> None:
    class PythonOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)
            self.table = {("a", 1): object()}  # TorchScript cannot type this attribute

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            _ = self.table[("a", 1)]
            return torch.tanh(self.linear(x))

    bundle = PolicyBundle(
        actor=PythonOnly(),
        obs_mean=np.zeros(4),
        obs_var=np.ones(4),
        obs_clip=5.0,
        action_low=-np.ones(2, np.float32),
        action_high=np.ones(2, np.float32),
        env_id="none",
    )
    with pytest.raises(UserError, match="try --mode trace"):
        export.to_torchscript(export.build_module(bundle), "script")
    traced = export.to_torchscript(export.build_module(bundle), "trace")
    obs = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with torch.inference_mode():
        np.testing.assert_allclose(traced(torch.from_numpy(obs)).numpy(), bundle.act(obs), rtol=0, atol=ATOL)


@pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnxruntime") is None,
    reason="needs the [onnx] extra and onnxruntime",
)
def test_onnx_export_matches(
    tmp_path: Path, hopper_bundle: PolicyBundle, hopper_observations: np.ndarray
) -> None:
    out = tmp_path / "policy.onnx"
    export.export_policy(hopper_bundle, out, fmt="onnx")
    loaded = export.load_exported(out)
    assert loaded.fmt == "onnx" and loaded.meta["env_id"] == "Hopper-v5"
    np.testing.assert_allclose(
        loaded.fn(hopper_observations), hopper_bundle.act(hopper_observations), rtol=0, atol=ATOL
    )
    np.testing.assert_allclose(
        loaded.fn(hopper_observations[:1]), hopper_bundle.act(hopper_observations[:1]), rtol=0, atol=ATOL
    )


def test_pt2_export_matches(
    tmp_path: Path, hopper_bundle: PolicyBundle, hopper_observations: np.ndarray
) -> None:
    """AOTInductor compiles C++ for this CPU (about 25 s on two cores): kept in the default suite."""
    out = tmp_path / "policy.pt2"
    export.export_policy(hopper_bundle, out, fmt="pt2")
    loaded = export.load_exported(out)
    assert loaded.fmt == "pt2" and loaded.meta["module_format"] == "pt2"
    for batch in (hopper_observations, hopper_observations[:1], hopper_observations[:7]):
        np.testing.assert_allclose(loaded.fn(batch), hopper_bundle.act(batch), rtol=0, atol=ATOL)


@pytest.mark.parametrize("env_id", ["gail_robot/ArmReach-v0", "gail_robot/ArmPickPlace-v0"])
def test_project_arm_task_exports_for_the_controller(tmp_path: Path, env_id: str) -> None:
    """An arm task exports and verifies; meta.json carries its named-field layout and the arm task spec."""
    import gail_robot.envs
    from gail_robot.envs import arm

    bundle = load_policy(
        make_checkpoint(tmp_path / "arm.pt", env_id=env_id, env_kwargs={"reward_type": "sparse"})
    )
    out = tmp_path / "arm_policy.pt"
    meta = export.export_policy(bundle, out)
    assert [s["field"] for s in meta["observation_layout"]] == list(arm.OBS_SLICES)
    assert sum(s["size"] for s in meta["observation_layout"]) == meta["obs_dim"] == arm.OBS_DIM
    task = meta["task"]
    assert task["family"] == "arm" and task["reward_type"] == "sparse" and task["terminate_on_success"]
    assert task["task"] == ("reach" if "Reach" in env_id else "pick_place")
    assert task["max_episode_steps"] == gail_robot.envs.ARM_TASKS[env_id].max_episode_steps
    assert task["ik"]["rest_qpos"] == pytest.approx(gym.make(env_id).unwrapped.ik.rest_qpos.tolist())
    assert meta["controller_note"] is None and meta["model_file"] == "arm_table.xml"
    obs = export.collect_env_observations(bundle, 200)
    with torch.inference_mode():
        got = jit_load(out)(torch.from_numpy(obs)).numpy()
    np.testing.assert_allclose(got, bundle.act(obs), rtol=0, atol=ATOL)


def test_arm_layout_check_catches_a_wrong_layout() -> None:
    import gail_robot.envs  # noqa: F401

    env = gym.make("gail_robot/ArmPush-v0")
    layout = export.observation_layout(env)
    assert layout is not None
    export.check_layout(env, layout, steps=10)
    layout[10]["field"], layout[12]["field"] = "goal_rel_cube", "goal_pos"  # both 3 wide, order swapped
    with pytest.raises(RuntimeError, match="disagrees"):
        export.check_layout(env, layout, steps=5)
    env.close()


def test_one_rule_recognises_exported_files(tmp_path: Path, hopper_checkpoint: Path) -> None:
    """``policy_io.exported_format`` is the only rule: export, the controller and load_policy agree."""
    import zipfile

    from gail_robot.policy_io import exported_format

    script = tmp_path / "policy.pt"
    with export.torchscript_calls():
        torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    pt2 = tmp_path / "policy.pt2"
    with zipfile.ZipFile(pt2, "w") as archive:
        archive.writestr("policy/data/aotinductor/model/model.so", b"")
    onnx_file = tmp_path / "policy.onnx"
    onnx_file.write_bytes(b"\x08\x07")
    assert exported_format(script) == "torchscript"
    assert exported_format(pt2) == "pt2"
    assert exported_format(onnx_file) == "onnx"
    assert exported_format(hopper_checkpoint) is None  # a torch.save zip: data.pkl but no code/
    assert exported_format(tmp_path / "missing.pt") is None
    for path, fmt in ((script, "torchscript"), (pt2, "pt2"), (onnx_file, "onnx")):
        assert export.detect_format(path) == fmt
    with pytest.raises(UserError, match="is not an exported gail-robot policy"):
        export.read_meta(hopper_checkpoint)
    with pytest.raises(UserError, match=r"has no meta\.json"):
        export.read_meta(script)
