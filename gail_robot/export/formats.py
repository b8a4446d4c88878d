"""The exported files: ``meta.json``, writing TorchScript / ONNX / pt2, and loading them back.

Every format carries the same ``meta.json`` (env id and kwargs, dims, bounds, normalisation
statistics, control timestep, the C++ controller's observation layout and task rules, the training
run, versions; docs/DESIGN.md §5): inside the TorchScript archive (``extra/meta.json``), in the ONNX
model's ``metadata_props`` and in the pt2 package (``extra/meta.json``). Files are written to a
temporary name and renamed, so a failed export never leaves a half-written policy behind.

Which format a file holds is decided by :func:`gail_robot.policy_io.exported_format`, the one rule
the rest of the project uses too.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import math
import os
import sys
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gail_robot.envs.make import make_env
from gail_robot.errors import UserError
from gail_robot.export.controller_spec import controller_spec
from gail_robot.export.module import (
    MODES,
    ExportedDiscretePolicy,
    ExportedPolicy,
    build_module,
    example_batch,
    to_torchscript,
    torchscript_calls,
)
from gail_robot.export.native import BLOB_RECORD, JSON_RECORD, native_records
from gail_robot.policy_io import PolicyBundle, exported_format
from gail_robot.versions import versions

FORMATS = ("torchscript", "onnx", "pt2")
META_FORMAT = "gail_robot.policy"
META_FORMAT_VERSION = 1


# --------------------------------------------------------------------------------------------------
# meta.json
# --------------------------------------------------------------------------------------------------


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


def build_meta(bundle: PolicyBundle, env: Any, fmt: str, mode: str, source: str | None) -> dict[str, Any]:
    """The ``meta.json`` of an exported policy, read from ``bundle`` and its env (raw action units).

    Raises:
        UserError: the env's observation width differs from the policy's.
    """
    base = env.unwrapped
    obs_dim = int(np.asarray(bundle.obs_mean).shape[0])
    act_dim = int(np.asarray(bundle.action_low).shape[0])
    if env.observation_space.shape != (obs_dim,):
        raise UserError(
            f"the policy expects {obs_dim} observations, {bundle.env_id} gives {env.observation_space.shape}"
        )
    layout, task, controller_note = controller_spec(env)
    if bundle.discrete:
        # Refused in Python (gail-robot controller run reads this note): no C++ change needed.
        layout, task = None, None
        controller_note = (
            "the C++ controller runs continuous-control policies; "
            f"this one has {bundle.describe_actions()} actions"
        )
    model = getattr(base, "model", None)  # None: not a MuJoCo env (classic control)
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
        "output": "action index int64 (B,): the argmax of the logits"
        if bundle.discrete
        else "action float32 (B, act_dim) in env units, clipped to [action_low, action_high]",
        "env_id": bundle.env_id,
        "env_kwargs": _jsonable(dict(bundle.env_kwargs)),
        "obs_dim": obs_dim,
        "act_dim": act_dim,
        "n_actions": bundle.n_actions,
        "action_space": {"type": "Discrete", "n": bundle.n_actions}
        if bundle.discrete
        else {"type": "Box", "shape": [act_dim]},
        "obs_low": _jsonable(np.asarray(getattr(obs_space, "low", []), dtype=np.float64)),
        "obs_high": _jsonable(np.asarray(getattr(obs_space, "high", []), dtype=np.float64)),
        # The normalisation in full precision: gail_robot.policy_io rebuilds a PolicyBundle from these.
        "obs_mean": _jsonable(np.asarray(bundle.obs_mean, dtype=np.float64)),
        "obs_var": _jsonable(np.asarray(bundle.obs_var, dtype=np.float64)),
        "obs_clip": float(bundle.obs_clip),
        "action_low": _jsonable(np.asarray(bundle.action_low, dtype=np.float64)),
        "action_high": _jsonable(np.asarray(bundle.action_high, dtype=np.float64)),
        # classic control has no dt attribute: its step is `tau` (CartPole, MountainCar has none)
        "dt": float(getattr(base, "dt", getattr(base, "tau", float("nan")))),
        "frame_skip": int(getattr(base, "frame_skip", 1)),
        "timestep": float(model.opt.timestep) if model is not None else None,
        "model_file": os.path.basename(model_path) if model_path else None,
        "model_path": str(model_path) if model_path else None,
        "model_sha256": model_sha,
        "observation_layout": layout,
        "task": task,
        "controller_note": controller_note,
        "training": _jsonable(_training_meta(dict(bundle.meta))),
        "source": source,
        "versions": versions(),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------------
# Writing the three formats
# --------------------------------------------------------------------------------------------------


def require_onnx_extra() -> None:
    """Raise a UserError naming the extra to install when the ONNX exporter is missing."""
    for name in ("onnx", "onnxscript"):
        if importlib.util.find_spec(name) is None:
            raise UserError(
                f"--format onnx needs the optional extra: pip install 'gail-robot[onnx]' ({name} missing)"
            )


def _atomic_target(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.tmp-{os.getpid()}")


def save_torchscript(
    module: ExportedPolicy | ExportedDiscretePolicy, meta: dict[str, Any], out: Path, mode: str = "script"
) -> None:
    """Script (or trace) ``module`` and write it with ``meta.json`` to ``out`` (atomic rename)."""
    scripted = to_torchscript(module, mode)
    tmp = _atomic_target(out)
    with torchscript_calls():
        torch.jit.save(scripted, str(tmp), _extra_files={"meta.json": json.dumps(meta, indent=1)})
    os.replace(tmp, out)


def save_onnx(module: torch.nn.Module, meta: dict[str, Any], out: Path) -> None:
    """Export to ONNX (dynamic batch) with ``meta.json`` in the model's metadata_props."""
    require_onnx_extra()
    import onnx

    example = example_batch(int(meta["obs_dim"]))
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

    The package holds a shared library compiled for *this* machine's CPU and this torch version. It
    also carries the MLP actor's weights for the C++ library's native kernels (``extra/native_mlp.json``
    and ``gail_robot/native_mlp.bin``, :mod:`gail_robot.export.native`).
    """
    description, blob = native_records(module)
    example = example_batch(int(meta["obs_dim"]))  # batch 2: a batch of 1 would be specialised
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
        archive.writestr(f"{root}/{JSON_RECORD}", json.dumps(description, indent=1))
        if blob:
            archive.writestr(f"{root}/{BLOB_RECORD}", blob)
    os.replace(path, out)


def export_policy(
    bundle: PolicyBundle,
    out: str | Path,
    fmt: str = "torchscript",
    mode: str = "script",
    source: str | None = None,
) -> dict[str, Any]:
    """Export ``bundle`` to ``out`` in ``fmt``; returns the metadata written into the file.

    Raises:
        UserError: unknown format or mode, an ONNX / pt2 export of an already scripted actor, an
            unknown env, or an actor TorchScript cannot compile.
    """
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
    # Raw action units: the layout check steps the env with actions drawn from its own bounds.
    env = make_env(bundle.env_id, dict(bundle.env_kwargs), normalize_actions=False)
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


def detect_format(path: str | Path) -> str:
    """``torchscript``, ``pt2`` or ``onnx`` (:func:`gail_robot.policy_io.exported_format`), else UserError."""
    fmt = exported_format(path)
    if fmt is None:
        raise UserError(f"{path} is not an exported gail-robot policy (TorchScript, pt2 or ONNX)")
    return fmt


def check_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` if this version can run the file; UserError for a newer format or an inconsistent layout.

    The same refusals as the C++ library's (csrc/policy/src/meta.cpp), so both sides agree on a file.
    """
    version = meta.get("format_version")
    if isinstance(version, int) and version > META_FORMAT_VERSION:
        raise UserError(
            f"{path} was written by a newer gail-robot (policy format version {version}; this version "
            f"reads up to {META_FORMAT_VERSION}): upgrade gail-robot"
        )
    layout, obs_dim = meta.get("observation_layout"), meta.get("obs_dim")
    if isinstance(layout, list) and isinstance(obs_dim, int):
        total = sum(int(segment.get("size", 0)) for segment in layout)
        if total != obs_dim:
            raise UserError(
                f"{path}: meta.json's observation_layout has {total} values but obs_dim is {obs_dim} "
                "(mismatched file)"
            )
    return meta


def _zip_meta(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.endswith("/extra/meta.json")]
        if not names:
            raise UserError(f"{path} has no meta.json: it was not exported by gail-robot")
        return check_meta(path, dict(json.loads(archive.read(names[0]))))


def _onnx_meta(path: Path) -> dict[str, Any]:
    if importlib.util.find_spec("onnx") is None:
        raise UserError("reading an ONNX policy needs onnx: pip install 'gail-robot[onnx]'")
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    if "meta.json" not in props:
        raise UserError(f"{path} has no meta.json: it was not exported by gail-robot")
    return check_meta(path, dict(json.loads(props["meta.json"])))


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such file: {path}")
    return path


def load_exported(path: str | Path) -> LoadedPolicy:
    """Load an exported policy of any format with nothing but torch (and onnxruntime for ONNX).

    Raises:
        UserError: missing file, not an exported policy, or onnxruntime missing for ONNX.
    """
    path = _existing_file(path)
    fmt = detect_format(path)
    if fmt == "onnx":
        if importlib.util.find_spec("onnxruntime") is None:
            raise UserError("running an ONNX policy needs onnxruntime: pip install onnxruntime")
        import onnxruntime

        meta = _onnx_meta(path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(obs: np.ndarray) -> np.ndarray:
            return np.asarray(session.run(None, {"obs": np.ascontiguousarray(obs, dtype=np.float32)})[0])

        return LoadedPolicy(run_onnx, meta, fmt)
    meta = _zip_meta(path)
    if fmt == "pt2":
        compiled = torch._inductor.aoti_load_package(str(path))

        def run_pt2(obs: np.ndarray) -> np.ndarray:
            return np.asarray(compiled(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))).numpy())

        return LoadedPolicy(run_pt2, meta, fmt)
    with torchscript_calls():
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()
    module_obs_dim = getattr(module, "obs_dim", meta.get("obs_dim"))
    if module_obs_dim != meta.get("obs_dim"):
        raise UserError(
            f"{path}: the module takes {module_obs_dim} observations, meta.json says obs_dim "
            f"{meta.get('obs_dim')} (mismatched file)"
        )

    def run_ts(obs: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return np.asarray(module(torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))).numpy())

    return LoadedPolicy(run_ts, meta, fmt)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``meta.json`` of an exported file of any format, without loading the module.

    Raises:
        UserError: missing file, not an exported policy, or no meta.json in it.
    """
    path = _existing_file(path)
    return _onnx_meta(path) if detect_format(path) == "onnx" else _zip_meta(path)
