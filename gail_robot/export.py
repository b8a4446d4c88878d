"""Export a trained policy for deployment: TorchScript (primary), ONNX or AOTInductor pt2.

The exported module is the *whole* policy: raw observation ``(B, obs_dim) float32`` in, action
``(B, act_dim) float32`` in the environment's own units out, clipped to the action bounds,
deterministic (the mean action). The frozen observation normalisation, the action unscaling and the
clipping live inside the module, so a C++ controller needs nothing from Python. Metadata (env id,
dims, bounds, control timestep, the observation layout the C++ controller rebuilds, the reward and
termination rules it reports, training run, versions) travels inside the file as ``meta.json``.

Scripted, not traced, is the default (``--mode script``): the wrapper's checks (observation width,
dtype conversion) survive in the graph, nothing depends on the example batch, and an actor with
data-dependent control flow is exported faithfully or refused loudly rather than silently frozen to
one branch. ``--mode trace`` traces the actor alone (for actors TorchScript cannot compile) and still
scripts the wrapper around it, so both modes keep the same interface and checks.

TorchScript is deprecated on the Python side from torch 2.13. All of its Python calls are in this
module and wrapped in :func:`_torchscript_calls`, which silences exactly that deprecation warning;
libtorch in C++ is unaffected. ``--verify`` reloads the file in a *fresh* Python process (so nothing
from the training code can leak in) and compares it with the Python policy on observations from the
env and the demo file, and on a closed-loop rollout.
"""

# No ``from __future__ import annotations`` here: TorchScript resolves ExportedPolicy's annotations
# at runtime and cannot evaluate them as strings.
import argparse
import contextlib
import copy
import hashlib
import importlib
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from gail_robot import __version__
from gail_robot.errors import UserError

FORMATS = ("torchscript", "onnx", "pt2")
MODES = ("script", "trace")
META_FORMAT = "gail_robot.policy"
META_FORMAT_VERSION = 1
# Tolerances of --verify: open-loop batch (the contract) and closed loop (float32 round-off in the
# policy can be amplified by contact dynamics over a long rollout, so the loop is compared over its
# first `CLOSED_LOOP_COMPARE_STEPS` steps, where that amplification is still negligible).
VERIFY_ATOL = 1e-5
CLOSED_LOOP_ATOL = 1e-4
CLOSED_LOOP_COMPARE_STEPS = 100
_OBS_EPSILON = 1e-8  # the normalisation epsilon of the PolicyBundle contract


class PolicyLike(Protocol):
    """What export needs from :class:`gail_robot.policy_io.PolicyBundle` (HELPERS.md contract 4)."""

    actor: nn.Module
    obs_mean: np.ndarray
    obs_var: np.ndarray
    obs_clip: float
    action_low: np.ndarray
    action_high: np.ndarray
    env_id: str
    env_kwargs: dict[str, Any]
    meta: dict[str, Any]

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action in env units for ``(obs_dim,)`` or ``(B, obs_dim)`` observations."""
        ...


@contextlib.contextmanager
def _torchscript_calls() -> Iterator[None]:
    """Silence torch 2.13's "`torch.jit.*` is deprecated" warnings: TorchScript is our chosen format."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.[\w.]+` is deprecated", category=DeprecationWarning
        )
        yield


# --------------------------------------------------------------------------------------------------
# The exported module
# --------------------------------------------------------------------------------------------------


class ExportedPolicy(nn.Module):
    """Raw observation ``(B, obs_dim)`` -> clipped action ``(B, act_dim) float32`` in env units.

    ``obs_n = clip((obs - mean) / sqrt(var + 1e-8), -obs_clip, obs_clip)``;
    ``action = low + (clip(actor(obs_n), -1, 1) + 1) / 2 * (high - low)``, clipped to [low, high]
    again because the affine map can overshoot a bound by one float32 rounding.

    The normalisation runs in float64 with float64 statistics and is rounded to float32 once, which
    is exactly what ``PolicyBundle.normalize_obs`` does: given the same float32 observation the module
    and the Python policy feed the actor bit-identical inputs, so closed loops do not drift apart
    through round-off that contact dynamics would amplify.
    """

    obs_mean: torch.Tensor  # (obs_dim,) float64
    obs_std: torch.Tensor  # (obs_dim,) float64, sqrt(var + 1e-8)
    action_low: torch.Tensor  # (act_dim,) float32
    action_high: torch.Tensor  # (act_dim,) float32
    action_range: torch.Tensor  # (act_dim,) float32, high - low (the same float32 subtraction, done once)

    def __init__(
        self,
        actor: nn.Module,
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        obs_clip: float,
        action_low: np.ndarray,
        action_high: np.ndarray,
    ) -> None:
        super().__init__()
        self.actor = actor
        self.obs_dim = int(obs_mean.shape[0])
        self.act_dim = int(action_low.shape[0])
        self.obs_clip = float(obs_clip)
        std = np.sqrt(np.asarray(obs_var, dtype=np.float64) + _OBS_EPSILON)
        self.register_buffer(
            "obs_mean", torch.as_tensor(np.asarray(obs_mean, np.float64), dtype=torch.float64)
        )
        self.register_buffer("obs_std", torch.as_tensor(std, dtype=torch.float64))
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))
        self.register_buffer("action_range", self.action_high - self.action_low)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.dim() != 2 or obs.size(1) != self.obs_dim:
            raise ValueError(f"expected observations of shape (B, {self.obs_dim}), got {list(obs.shape)}")
        x = torch.clamp((obs.to(torch.float64) - self.obs_mean) / self.obs_std, -self.obs_clip, self.obs_clip)
        a = torch.clamp(self.actor(x.to(torch.float32)), -1.0, 1.0)
        # Every op here runs once per control step: at batch 1 each costs ~1 us of dispatch, so the
        # range is precomputed and the final clip is one op (the same float32 arithmetic as the contract).
        action = self.action_low + (a + 1.0) * 0.5 * self.action_range
        return torch.clamp(action, self.action_low, self.action_high)


def build_module(bundle: PolicyLike) -> ExportedPolicy:
    """The eager wrapper module (deep copy of the actor, eval mode, no gradients)."""
    obs_mean = np.asarray(bundle.obs_mean, dtype=np.float64)
    obs_var = np.asarray(bundle.obs_var, dtype=np.float64)
    low = np.asarray(bundle.action_low, dtype=np.float32)
    high = np.asarray(bundle.action_high, dtype=np.float32)
    if obs_mean.ndim != 1 or obs_var.shape != obs_mean.shape:
        raise ValueError(f"obs_mean/obs_var must be (obs_dim,), got {obs_mean.shape} and {obs_var.shape}")
    if low.ndim != 1 or high.shape != low.shape or not np.all(np.isfinite(low) & np.isfinite(high)):
        raise ValueError("action_low/action_high must be finite (act_dim,) arrays")
    actor = copy.deepcopy(bundle.actor).eval()
    for param in actor.parameters():  # (ScriptModules, e.g. a re-exported actor, lack requires_grad_)
        param.requires_grad_(False)
    return ExportedPolicy(actor, obs_mean, obs_var, float(bundle.obs_clip), low, high).eval()


def _example_batch(obs_dim: int, batch: int = 2) -> torch.Tensor:
    """A deterministic example input; batch >= 2 so that nothing specialises on a batch of 1."""
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, obs_dim, generator=gen)


def to_torchscript(module: torch.nn.Module, mode: str = "script") -> torch.jit.ScriptModule:
    """Compile the wrapper to TorchScript (see the module docstring for script vs trace)."""
    if mode not in MODES:
        raise UserError(f"unknown --mode '{mode}' (choose from {', '.join(MODES)})")
    with _torchscript_calls():
        if mode == "trace":
            obs_dim = int(module.obs_dim)  # type: ignore[arg-type]
            example = torch.clamp(_example_batch(obs_dim), -1.0, 1.0)
            module.actor = torch.jit.trace(module.actor, example, check_trace=True)
        try:
            scripted = torch.jit.script(module)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(
                f"the actor cannot be compiled by TorchScript ({first}); try --mode trace"
            ) from exc
    return scripted.eval()


# --------------------------------------------------------------------------------------------------
# Metadata: observation layout and task rules of the Gymnasium v5 locomotion family
# --------------------------------------------------------------------------------------------------

_V5_FAMILIES = {
    "gymnasium.envs.mujoco.hopper_v5": "hopper",
    "gymnasium.envs.mujoco.walker2d_v5": "walker2d",
    "gymnasium.envs.mujoco.half_cheetah_v5": "half_cheetah",
    "gymnasium.envs.mujoco.ant_v5": "ant",
    "gymnasium.envs.mujoco.humanoid_v5": "humanoid",
}


def _range(values: Any) -> list[float | None]:
    """A (low, high) pair for JSON: infinite bounds become null (JSON has no infinity)."""
    return [None if not math.isfinite(float(v)) else float(v) for v in values]


def locomotion_family(env: Any) -> str | None:
    """``hopper`` ... ``humanoid`` for a Gymnasium v5 locomotion env, else None."""
    return _V5_FAMILIES.get(type(getattr(env, "unwrapped", env)).__module__)


def observation_layout(env: Any) -> list[dict[str, Any]] | None:
    """The observation as slices of mjData arrays, in the v5 env's order, or None if unsupported.

    Each segment is ``{"field", "offset", "size", "clip"}``: ``field`` is an mjData array (flattened
    row-major), ``offset``/``size`` select elements, ``clip`` is ``[low, high]`` or null. The C++
    controller builds the observation from this list alone.
    """
    family = locomotion_family(env)
    if family is None:
        return None
    base = env.unwrapped
    nq, nv, nbody = int(base.model.nq), int(base.model.nv), int(base.model.nbody)
    skip = 0
    if base._exclude_current_positions_from_observation:
        skip = 2 if family in ("ant", "humanoid") else 1
    layout: list[dict[str, Any]] = [{"field": "qpos", "offset": skip, "size": nq - skip, "clip": None}]
    qvel_clip = [-10.0, 10.0] if family in ("hopper", "walker2d") else None
    layout.append({"field": "qvel", "offset": 0, "size": nv, "clip": qvel_clip})
    rest = nbody - 1  # the world body (row 0) is never observed
    if family == "ant" and base._include_cfrc_ext_in_observation:
        layout.append(
            {"field": "cfrc_ext", "offset": 6, "size": 6 * rest, "clip": _range(base._contact_force_range)}
        )
    if family == "humanoid":
        if base._include_cinert_in_observation:
            layout.append({"field": "cinert", "offset": 10, "size": 10 * rest, "clip": None})
        if base._include_cvel_in_observation:
            layout.append({"field": "cvel", "offset": 6, "size": 6 * rest, "clip": None})
        if base._include_qfrc_actuator_in_observation:
            layout.append({"field": "qfrc_actuator", "offset": 6, "size": nv - 6, "clip": None})
        if base._include_cfrc_ext_in_observation:
            layout.append({"field": "cfrc_ext", "offset": 6, "size": 6 * rest, "clip": None})
    return layout


def observation_from_layout(data: Any, layout: list[dict[str, Any]]) -> np.ndarray:
    """Rebuild the observation ``(obs_dim,) float64`` from ``mjData`` as the C++ controller does."""
    parts = []
    for seg in layout:
        values = np.asarray(getattr(data, seg["field"]), dtype=np.float64).reshape(-1)
        part = values[seg["offset"] : seg["offset"] + seg["size"]]
        if seg["clip"] is not None:
            lo, hi = (-np.inf if v is None else v for v in seg["clip"])
            part = np.clip(part, lo, hi)
        parts.append(part)
    return np.concatenate(parts)


def check_layout(env: Any, layout: list[dict[str, Any]], steps: int = 30, seed: int = 0) -> None:
    """Check that ``layout`` reproduces ``env``'s observation exactly over a short random rollout.

    Raises:
        RuntimeError: the layout disagrees with the env (a Gymnasium version this code does not know).
    """
    base = env.unwrapped
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    for t in range(steps + 1):
        rebuilt = observation_from_layout(base.data, layout)
        if rebuilt.shape != np.shape(obs) or not np.array_equal(rebuilt, obs):
            raise RuntimeError(
                f"observation layout disagrees with {env.spec.id if env.spec else base} at step {t}"
            )
        if t < steps:
            obs, _, terminated, truncated, _ = env.step(rng.uniform(low, high).astype(np.float32))
            if terminated or truncated:
                obs, _ = env.reset(seed=seed + t + 1)


def task_spec(env: Any) -> dict[str, Any] | None:
    """Reward weights and health rules of a v5 locomotion env with its actual kwargs, or None."""
    family = locomotion_family(env)
    if family is None:
        return None
    base = env.unwrapped
    spec: dict[str, Any] = {
        "family": family,
        "forward_reward_weight": float(base._forward_reward_weight),
        "ctrl_cost_weight": float(base._ctrl_cost_weight),
    }
    if family != "half_cheetah":
        spec["healthy_reward"] = float(base._healthy_reward)
        spec["terminate_when_unhealthy"] = bool(base._terminate_when_unhealthy)
        spec["healthy_z_range"] = _range(base._healthy_z_range)
    if family in ("hopper", "walker2d"):
        spec["healthy_angle_range"] = _range(base._healthy_angle_range)
    if family == "hopper":
        spec["healthy_state_range"] = _range(base._healthy_state_range)
    if family == "ant":
        import mujoco

        body = base._main_body
        if isinstance(body, str):
            body = mujoco.mj_name2id(base.model, mujoco.mjtObj.mjOBJ_BODY, body)
        spec["main_body"] = int(body)
        spec["contact_cost_weight"] = float(base._contact_cost_weight)
        spec["contact_force_range"] = _range(base._contact_force_range)
    if family == "humanoid":
        spec["contact_cost_weight"] = float(base._contact_cost_weight)
        spec["contact_cost_range"] = _range(base._contact_cost_range)
    return spec


def _versions() -> dict[str, str]:
    import gymnasium
    import mujoco

    return {
        "gail_robot": __version__,
        "torch": torch.__version__,
        "mujoco": mujoco.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _jsonable(value: Any) -> Any:
    """Plain JSON data from numpy / Path values in training metadata (anything else becomes str)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _training_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The training run's metadata; re-exporting an exported file keeps the original run's, not a nest."""
    if meta.get("format") == META_FORMAT and isinstance(meta.get("training"), dict):
        return dict(meta["training"])
    return meta


def make_env(env_id: str, env_kwargs: dict[str, Any]) -> Any:
    """``gymnasium.make`` with the project's own envs registered; UserError for unknown ids."""
    import gymnasium

    with contextlib.suppress(ImportError):  # registers gail_robot/Arm*-v0 where that package exists
        importlib.import_module("gail_robot.envs")
    try:
        return gymnasium.make(env_id, **env_kwargs)
    except gymnasium.error.Error as exc:
        raise UserError(f"cannot make env '{env_id}': {exc}") from exc


def build_meta(bundle: PolicyLike, env: Any, fmt: str, mode: str, source: str | None) -> dict[str, Any]:
    """The ``meta.json`` of an exported policy (see the module docstring)."""
    base = env.unwrapped
    obs_dim = int(np.asarray(bundle.obs_mean).shape[0])
    act_dim = int(np.asarray(bundle.action_low).shape[0])
    if env.observation_space.shape != (obs_dim,):
        raise UserError(
            f"the policy expects {obs_dim} observations, {bundle.env_id} gives {env.observation_space.shape}"
        )
    layout = observation_layout(env)
    controller_note = None
    if layout is not None:
        try:
            check_layout(env, layout)
        except RuntimeError as exc:  # an unknown Gymnasium variant: refuse in C++, keep the export
            layout, controller_note = None, str(exc)
    elif locomotion_family(env) is None:
        controller_note = "the C++ controller supports the Gymnasium v5 locomotion envs only"
    model_path = getattr(base, "fullpath", None)
    model_sha = None
    if model_path and os.path.exists(model_path):
        model_sha = hashlib.sha256(Path(model_path).read_bytes()).hexdigest()
    obs_space = env.observation_space
    return {
        "format": META_FORMAT,
        "format_version": META_FORMAT_VERSION,
        "module_format": fmt,
        "module_mode": mode if fmt == "torchscript" else None,
        "input": "raw observation float32 (B, obs_dim)",
        "output": "action float32 (B, act_dim) in env units, clipped to [action_low, action_high]",
        "env_id": bundle.env_id,
        "env_kwargs": _jsonable(dict(bundle.env_kwargs)),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "obs_low": _jsonable(np.asarray(getattr(obs_space, "low", []), dtype=np.float64)),
        "obs_high": _jsonable(np.asarray(getattr(obs_space, "high", []), dtype=np.float64)),
        # The normalisation in full precision: gail_robot.policy_io rebuilds a PolicyBundle from these.
        "obs_mean": _jsonable(np.asarray(bundle.obs_mean, dtype=np.float64)),
        "obs_var": _jsonable(np.asarray(bundle.obs_var, dtype=np.float64)),
        "obs_clip": float(bundle.obs_clip),
        "action_low": _jsonable(np.asarray(bundle.action_low, dtype=np.float64)),
        "action_high": _jsonable(np.asarray(bundle.action_high, dtype=np.float64)),
        "dt": float(getattr(base, "dt", float("nan"))),
        "frame_skip": int(getattr(base, "frame_skip", 1)),
        "timestep": float(base.model.opt.timestep),
        "model_file": os.path.basename(model_path) if model_path else None,
        "model_path": str(model_path) if model_path else None,
        "model_sha256": model_sha,
        "observation_layout": layout,
        "task": task_spec(env) if layout is not None else None,
        "controller_note": controller_note,
        "training": _jsonable(_training_meta(dict(bundle.meta))),
        "source": source,
        "versions": _versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------------
# Writing the three formats
# --------------------------------------------------------------------------------------------------


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def save_torchscript(module: torch.nn.Module, meta: dict[str, Any], out: Path, mode: str = "script") -> None:
    """Script (or trace) ``module`` and write it with ``meta.json`` to ``out`` (atomic rename)."""
    scripted = to_torchscript(module, mode)
    tmp = _atomic_target(out)
    with _torchscript_calls():
        torch.jit.save(scripted, str(tmp), _extra_files={"meta.json": json.dumps(meta, indent=1)})
    os.replace(tmp, out)


def save_onnx(module: torch.nn.Module, meta: dict[str, Any], out: Path) -> None:
    """Export to ONNX (dynamic batch) with ``meta.json`` in the model's metadata_props."""
    for name in ("onnx", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            raise UserError(
                f"--format onnx needs the optional extra: pip install 'gail-robot[onnx]' ({name} missing)"
            )
    import onnx

    example = _example_batch(int(meta["obs_dim"]))
    tmp = _atomic_target(out)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        # The dynamo exporter reports its progress and torch-internal deprecations; neither is ours.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            input_names=["obs"],
            output_names=["action"],
            dynamic_shapes={"obs": {0: torch.export.Dim("batch", min=1, max=1 << 16)}},
            dynamo=True,
            external_data=False,
        )
    model = onnx.load(str(tmp))
    entry = model.metadata_props.add()
    entry.key, entry.value = "meta.json", json.dumps(meta, indent=1)
    onnx.checker.check_model(model)
    onnx.save(model, str(tmp))
    os.replace(tmp, out)


def save_pt2(module: torch.nn.Module, meta: dict[str, Any], out: Path) -> None:
    """torch.export (dynamic batch) + AOTInductor package, with ``meta.json`` added to the archive.

    The package holds a shared library compiled for *this* machine's CPU and this torch version.
    """

    example = _example_batch(int(meta["obs_dim"]))  # batch 2: a batch of 1 would be specialised
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    tmp = _atomic_target(out).with_suffix(".pt2")
    with warnings.catch_warnings():
        # torch-internal deprecations raised while compiling (jit script_method, pytree LeafSpec).
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
        path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp))
    with zipfile.ZipFile(path, "a") as archive:
        root = archive.namelist()[0].split("/")[0]
        archive.writestr(f"{root}/extra/meta.json", json.dumps(meta, indent=1))
    os.replace(path, out)


def export_policy(
    bundle: PolicyLike,
    out: str | Path,
    fmt: str = "torchscript",
    mode: str = "script",
    source: str | None = None,
) -> dict[str, Any]:
    """Export ``bundle`` to ``out`` in ``fmt``; returns the metadata written into the file."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}' (choose from {', '.join(FORMATS)})")
    if mode not in MODES:
        raise UserError(f"unknown --mode '{mode}' (choose from {', '.join(MODES)})")
    if fmt != "torchscript" and isinstance(bundle.actor, torch.jit.ScriptModule):
        raise UserError(
            f"--format {fmt} needs the eager actor: export from a run directory or training checkpoint, "
            "not from an exported TorchScript file"
        )
    out = Path(out)
    env = make_env(bundle.env_id, dict(bundle.env_kwargs))
    try:
        meta = build_meta(bundle, env, fmt, mode, source)
    finally:
        env.close()
    module = build_module(bundle)
    if fmt == "torchscript":
        save_torchscript(module, meta, out, mode)
    elif fmt == "onnx":
        save_onnx(module, meta, out)
    else:
        save_pt2(module, meta, out)
    return meta


# --------------------------------------------------------------------------------------------------
# Loading any exported file (used by --verify's fresh process and by the benchmark)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedPolicy:
    """An exported policy loaded back: ``fn`` maps ``(B, obs_dim) float32`` to ``(B, act_dim)``."""

    fn: Callable[[np.ndarray], np.ndarray]
    meta: dict[str, Any]
    fmt: str


def detect_format(path: Path) -> str:
    """torchscript, pt2 or onnx, from the file's content."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if any("/data/aotinductor/" in n for n in names):
            return "pt2"
        if any(n.endswith("/constants.pkl") or n.endswith("/data.pkl") for n in names):
            return "torchscript"
    elif path.suffix == ".onnx":
        return "onnx"
    raise UserError(f"{path} is not an exported gail-robot policy (TorchScript, pt2 or ONNX)")


def _zip_meta(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/meta.json")]
        if not names:
            raise UserError(f"{path} has no meta.json: it was not exported by gail-robot")
        return dict(json.loads(archive.read(names[0])))


def load_exported(path: str | Path) -> LoadedPolicy:
    """Load an exported policy of any format with nothing but torch (and onnxruntime for ONNX)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    fmt = detect_format(path)
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError("running an ONNX policy needs onnxruntime: pip install onnxruntime")
        import onnx
        import onnxruntime

        props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(obs: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {"obs": np.ascontiguousarray(obs, dtype=np.float32)})[0])

        return LoadedPolicy(run_onnx, json.loads(props["meta.json"]), fmt)
    meta = _zip_meta(path)
    if fmt == "pt2":
        compiled = torch._inductor.aoti_load_package(str(path))

        def run_pt2(obs: np.ndarray) -> np.ndarray:
            return np.asarray(compiled(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))).numpy())

        return LoadedPolicy(run_pt2, meta, fmt)
    with _torchscript_calls():
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def run_ts(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(module(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))).numpy())

    return LoadedPolicy(run_ts, meta, fmt)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of an exported TorchScript or pt2 file, without loading the module."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    if detect_format(path) == "onnx":
        return load_exported(path).meta
    return _zip_meta(path)


# --------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------


def rollout(
    policy: Callable[[np.ndarray], np.ndarray], env_id: str, env_kwargs: dict[str, Any], seed: int, steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """One deterministic closed-loop episode: actions ``(T, act_dim) float32`` and rewards ``(T,)``.

    ``policy`` maps a batch ``(1, obs_dim)`` to ``(1, act_dim)``; the episode ends on termination,
    truncation or after ``steps`` steps.
    """
    env = make_env(env_id, env_kwargs)
    actions, rewards = [], []
    try:
        obs, _ = env.reset(seed=seed)
        for _ in range(steps):
            action = np.asarray(policy(np.asarray(obs, dtype=np.float32)[None]), dtype=np.float32)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            actions.append(action)
            rewards.append(float(reward))
            if terminated or truncated:
                break
    finally:
        env.close()
    return np.asarray(actions, dtype=np.float32), np.asarray(rewards, dtype=np.float64)


def collect_env_observations(bundle: PolicyLike, n: int, seed: int = 0, noise: float = 0.3) -> np.ndarray:
    """``(n, obs_dim) float32`` observations visited by the policy with uniform action noise.

    The noise (a fraction of the action range) spreads the states beyond the policy's own narrow
    distribution, which is what a deployment check should cover.
    """
    env = make_env(bundle.env_id, dict(bundle.env_kwargs))
    rng = np.random.default_rng(seed)
    low, high = np.asarray(bundle.action_low), np.asarray(bundle.action_high)
    out: list[np.ndarray] = []
    try:
        obs, _ = env.reset(seed=seed)
        episode = 0
        while len(out) < n:
            out.append(np.asarray(obs, dtype=np.float32))
            action = bundle.act(np.asarray(obs, dtype=np.float32))
            action = np.clip(
                action + noise * (high - low) / 2 * rng.uniform(-1, 1, size=low.shape), low, high
            )
            obs, _, terminated, truncated, _ = env.step(action.astype(np.float32))
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
    finally:
        env.close()
    return np.stack(out)


def demo_observations(demos: str | Path, n: int, env_id: str) -> np.ndarray:
    """Up to ``n`` observations ``(m, obs_dim) float32`` spread evenly over the demo file."""
    from gail_robot.data import DemoDataset

    dataset = DemoDataset(demos)
    if dataset.env_id != env_id:
        raise UserError(f"{demos} holds demos of {dataset.env_id}, the policy is for {env_id}")
    obs = dataset.transitions().obs
    if len(obs) > n:
        obs = obs[np.linspace(0, len(obs) - 1, n).round().astype(int)]
    return np.asarray(obs, dtype=np.float32)


def _demos_from_meta(meta: dict[str, Any]) -> str | None:
    """The training run's demo file (``demos`` in its config.yaml), when it exists on this machine."""

    def find(tree: Any) -> list[str]:
        if isinstance(tree, dict):
            found = [v for k, v in tree.items() if k == "demos" and isinstance(v, str)]
            return found + [f for v in tree.values() for f in find(v)]
        return []

    candidates = find(meta)
    run_dir = meta.get("run_dir")
    config = Path(run_dir) / "config.yaml" if isinstance(run_dir, str) else None
    if config is not None and config.is_file():
        import yaml

        with contextlib.suppress(yaml.YAMLError, OSError):
            candidates += find(yaml.safe_load(config.read_text()))
    for value in candidates:
        for path in (Path(value), Path(str(run_dir)) / value):
            if path.is_file():
                return str(path)
    return None


def _fresh_process(request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run :func:`_worker` in a new interpreter and return its JSON result."""
    request_file = workdir / "request.json"
    request_file.write_text(json.dumps(request))
    proc = subprocess.run(
        [sys.executable, "-m", "gail_robot.export", "--worker", str(request_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"verification process failed to run the exported policy: {last}")
    return dict(json.loads((workdir / "result.json").read_text()))


def verify_export(
    bundle: PolicyLike,
    path: str | Path,
    demos: str | Path | None = None,
    n_obs: int = 1000,
    rollout_steps: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Compare the exported file, reloaded in a fresh process, with the Python policy.

    Open loop: ``n_obs`` env observations plus up to ``n_obs`` demo observations, max abs action
    difference <= :data:`VERIFY_ATOL`. Closed loop: the same seeded episode run by each policy in its
    own env; actions must agree within :data:`CLOSED_LOOP_ATOL` over the first
    :data:`CLOSED_LOOP_COMPARE_STEPS` steps (the whole episode is reported).

    Returns:
        A report dict with ``ok`` (bool) and the measured differences.
    """
    env_obs = collect_env_observations(bundle, n_obs, seed=seed)
    demo_file = str(demos) if demos is not None else _demos_from_meta(dict(bundle.meta))
    demo_obs = (
        demo_observations(demo_file, n_obs, bundle.env_id)
        if demo_file
        else np.zeros((0, env_obs.shape[1]), np.float32)
    )
    obs = np.concatenate([env_obs, demo_obs]).astype(np.float32)
    expected = np.asarray(bundle.act(obs), dtype=np.float32)
    py_actions, py_rewards = rollout(bundle.act, bundle.env_id, dict(bundle.env_kwargs), seed, rollout_steps)

    with tempfile.TemporaryDirectory(prefix="gail-robot-verify-") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "obs.npy", obs)
        result = _fresh_process(
            {"policy": str(Path(path).resolve()), "seed": seed, "steps": rollout_steps, "workdir": tmp},
            workdir,
        )
        got = np.load(workdir / "actions.npy")
        ts_actions = np.load(workdir / "rollout_actions.npy")
        ts_rewards = np.load(workdir / "rollout_rewards.npy")

    open_diff = float(np.max(np.abs(got - expected))) if len(obs) else 0.0
    n_cmp = min(len(py_actions), len(ts_actions), CLOSED_LOOP_COMPARE_STEPS)
    loop_diff_head = float(np.max(np.abs(py_actions[:n_cmp] - ts_actions[:n_cmp]))) if n_cmp else 0.0
    n_all = min(len(py_actions), len(ts_actions))
    loop_diff_all = float(np.max(np.abs(py_actions[:n_all] - ts_actions[:n_all]))) if n_all else 0.0
    report = {
        "n_env_obs": len(env_obs),
        "n_demo_obs": len(demo_obs),
        "demos": demo_file,
        "open_loop_max_abs_diff": open_diff,
        "closed_loop_steps_python": len(py_actions),
        "closed_loop_steps_exported": len(ts_actions),
        "closed_loop_max_abs_diff_head": loop_diff_head,
        "closed_loop_max_abs_diff_all": loop_diff_all,
        "return_python": float(py_rewards.sum()),
        "return_exported": float(ts_rewards.sum()),
        "fresh_process_torch": result["torch"],
    }
    report["ok"] = bool(
        open_diff <= VERIFY_ATOL
        and n_cmp == min(CLOSED_LOOP_COMPARE_STEPS, len(py_actions))
        and loop_diff_head <= CLOSED_LOOP_ATOL
    )
    return report


def _worker(request_file: str) -> int:
    """The fresh process of --verify: loads the exported file with torch only and runs it."""
    request = json.loads(Path(request_file).read_text())
    workdir = Path(request["workdir"])
    loaded = load_exported(request["policy"])
    obs = np.load(workdir / "obs.npy")
    np.save(workdir / "actions.npy", loaded.fn(obs).astype(np.float32))
    meta = loaded.meta
    actions, rewards = rollout(
        loaded.fn, meta["env_id"], dict(meta["env_kwargs"]), int(request["seed"]), int(request["steps"])
    )
    np.save(workdir / "rollout_actions.npy", actions)
    np.save(workdir / "rollout_rewards.npy", rewards)
    (workdir / "result.json").write_text(json.dumps({"torch": torch.__version__}))
    return 0


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gail-robot export``."""
    parser.add_argument("source", help="run directory, training checkpoint or exported TorchScript file")
    parser.add_argument("--out", required=True, help="output file (policy.pt, policy.onnx or policy.pt2)")
    parser.add_argument(
        "--format", default="torchscript", help="torchscript (default), onnx (needs the [onnx] extra) or pt2"
    )
    parser.add_argument(
        "--mode", default="script", help="TorchScript compilation: script (default) or trace (actor only)"
    )
    parser.add_argument("--verify", action="store_true", help="reload in a fresh process and compare")
    parser.add_argument("--demos", default=None, help="demo file whose observations --verify also checks")
    parser.add_argument("--verify-obs", type=int, default=1000, help="env (and demo) observations to compare")
    parser.add_argument("--verify-steps", type=int, default=1000, help="closed-loop rollout length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verification rollouts")


def load_bundle(source: str) -> PolicyLike:
    """``gail_robot.policy_io.load_policy`` with every load failure turned into one UserError line."""
    import pickle

    from gail_robot.policy_io import load_policy

    if not os.path.exists(source):
        raise UserError(f"no such file or directory: {source}")
    try:
        return load_policy(source)
    except UserError:
        raise
    except (
        RuntimeError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        OSError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
    ) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load a policy from {source}: {first}") from exc


def main(args: argparse.Namespace) -> int:
    """Run ``gail-robot export``."""
    fmt = str(args.format).lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{args.format}' (choose from {', '.join(FORMATS)})")
    if fmt == "onnx":
        for name in ("onnx", "onnxscript"):
            if importlib.util.find_spec(name) is None:
                raise UserError(
                    f"--format onnx needs the optional extra: pip install 'gail-robot[onnx]' ({name} missing)"
                )
    if args.mode not in MODES:
        raise UserError(f"unknown --mode '{args.mode}' (choose from {', '.join(MODES)})")
    if args.verify_obs < 1000 and args.verify:
        raise UserError("--verify-obs must be at least 1000")
    bundle = load_bundle(args.source)
    meta = export_policy(bundle, args.out, fmt=fmt, mode=args.mode, source=str(args.source))
    if fmt != "torchscript":
        controller = "no (it runs TorchScript files)"
    elif meta["observation_layout"] is None:
        controller = f"no ({meta['controller_note']})"
    else:
        controller = "yes"
    print(
        f"exported {meta['env_id']} policy ({meta['obs_dim']} obs -> {meta['act_dim']} actions, "
        f"dt {meta['dt']:.4g} s) to {args.out} [{fmt}]; C++ controller: {controller}"
    )
    if fmt == "pt2":
        print(
            f"note: {args.out} holds machine code compiled for this CPU ({platform.machine()}, its best SIMD "
            f"level) and torch {torch.__version__}; rebuild it on the target machine"
        )
    if not args.verify:
        return 0
    report = verify_export(bundle, args.out, args.demos, args.verify_obs, args.verify_steps, args.seed)
    demos = f" + {report['n_demo_obs']} demo" if report["n_demo_obs"] else " (no demo file: pass --demos)"
    print(
        f"verify: {report['n_env_obs']} env{demos} observations in a fresh process: "
        f"max |a_export - a_python| = {report['open_loop_max_abs_diff']:.3g} (tolerance {VERIFY_ATOL:g})"
    )
    print(
        f"verify: closed loop seed {args.seed}: {report['closed_loop_steps_exported']} steps "
        f"(python {report['closed_loop_steps_python']}), max action diff first "
        f"{CLOSED_LOOP_COMPARE_STEPS} steps {report['closed_loop_max_abs_diff_head']:.3g} "
        f"(tolerance {CLOSED_LOOP_ATOL:g}), whole episode {report['closed_loop_max_abs_diff_all']:.3g}; "
        f"return {report['return_exported']:.2f} vs {report['return_python']:.2f}"
    )
    if not report["ok"]:
        print("verify: FAILED: the exported policy does not match the Python policy", file=sys.stderr)
        return 1
    print("verify: OK")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        try:
            sys.exit(_worker(sys.argv[2]))
        except UserError as exc:
            print(f"gail-robot export: error: {exc}", file=sys.stderr)
            sys.exit(2)
    print(
        "usage: gail-robot export SOURCE --out FILE [--verify]  (this module is run by the CLI)",
        file=sys.stderr,
    )
    sys.exit(2)
