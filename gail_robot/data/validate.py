"""Checking a demo file against schema v1 / v2: every problem is listed, none is repaired."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.schema import (
    EnvMeta,
    demo_index,
    obs_key_spaces,
    open_h5,
    read_header,
    sorted_demo_names,
)

_PER_STEP = {
    "actions": np.float32,
    "rewards": np.float32,
    "terminated": np.bool_,
    "truncated": np.bool_,
    "dones": np.uint8,
    "states": np.float64,
}


def _check_demo(name: str, g: h5py.Group, meta: EnvMeta, problems: list[str]) -> int:
    """Append the problems of one demo group; return its length (0 when unknown)."""

    def bad(msg: str) -> None:
        problems.append(f"{name}: {msg}")

    n = g.attrs.get("num_samples")
    if n is None:
        bad("missing attribute num_samples")
        n = len(g["actions"]) if "actions" in g else 0
    n = int(n)
    if n < 1:
        bad(f"num_samples is {n}")
    for attr in ("seed", "source", "success", "return"):
        if attr not in g.attrs:
            bad(f"missing attribute {attr}")
    arrays: dict[str, np.ndarray] = {}
    # schema v2: a Discrete action space stores int64 indices (read_header checked the version)
    action_dtype = np.int64 if isinstance(meta.action_space, gym.spaces.Discrete) else np.float32
    for key, dtype in {**_PER_STEP, "actions": action_dtype}.items():
        if key not in g:
            bad(f"missing dataset {key}")
            continue
        ds = g[key]
        if not isinstance(ds, h5py.Dataset):
            bad(f"{key} is not a dataset")
            continue
        if ds.dtype != np.dtype(dtype):
            bad(f"{key} has dtype {ds.dtype}, expected {np.dtype(dtype).name}")
        if ds.shape[:1] != (n,):
            bad(f"{key} has {ds.shape[0] if ds.shape else 0} rows, num_samples is {n}")
        arrays[key] = ds[()]
    act_shape = tuple(meta.action_space.shape or ())
    if "actions" in arrays:
        a = arrays["actions"]
        if a.shape[1:] != act_shape:
            bad(f"actions have shape {a.shape[1:]} per step, the action space is {act_shape}")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad(f"actions contain NaN/inf (first at step {int(np.argwhere(~np.isfinite(a))[0][0])})")
        if isinstance(meta.action_space, gym.spaces.Discrete) and a.dtype.kind == "i" and a.size:
            n_actions = int(meta.action_space.n)
            outside = (a < 0) | (a >= n_actions)
            if outside.any():
                step = int(np.argmax(outside))
                bad(f"actions[{step}] is {int(a[step])}, outside the Discrete({n_actions}) action space")
    _check_interventions(g, n, action_dtype, act_shape, bad)
    if (
        "rewards" in arrays
        and arrays["rewards"].dtype.kind == "f"
        and not np.all(np.isfinite(arrays["rewards"]))
    ):
        bad("rewards contain NaN/inf")
    term, trunc = arrays.get("terminated"), arrays.get("truncated")
    if term is not None and trunc is not None and len(term) == n and len(trunc) == n and n > 0:
        ends = term.astype(bool) | trunc.astype(bool)
        if np.any(ends[:-1]):
            bad(f"episode ends (terminated/truncated) before its last step, at step {int(np.argmax(ends))}")
        if (
            "dones" in arrays
            and len(arrays["dones"]) == n
            and not np.array_equal(arrays["dones"].astype(bool), ends)
        ):
            bad("dones differ from terminated | truncated")
    state_size = meta.state_size
    if "states" in arrays:
        s = arrays["states"]
        if s.ndim != 2 or (state_size is not None and s.shape[1] != state_size):
            bad(f"states have shape {s.shape}, expected ({n}, {state_size})")
        if not np.all(np.isfinite(s)):
            bad("states contain NaN/inf")
        state_size = s.shape[1] if s.ndim == 2 else state_size
    if "final_state" not in g:
        bad("missing dataset final_state")
    else:
        fs = g["final_state"]
        if fs.dtype != np.float64 or (state_size is not None and fs.shape != (state_size,)):
            bad(f"final_state is {fs.dtype} {fs.shape}, expected float64 ({state_size},)")
    for part in ("obs", "next_obs"):
        if part not in g or not isinstance(g[part], h5py.Group):
            bad(f"missing group {part}")
            continue
        for key, box in obs_key_spaces(meta.observation_space).items():
            if key not in g[part]:
                bad(f"missing dataset {part}/{key}")
                continue
            ds = g[part][key]
            expected = (n, *box.shape)
            if ds.shape != expected:
                bad(f"{part}/{key} has shape {ds.shape}, expected {expected}")
            if ds.dtype != np.dtype(box.dtype):
                bad(
                    f"{part}/{key} has dtype {ds.dtype}, the observation space has {np.dtype(box.dtype).name}"
                )
            if ds.dtype.kind == "f":
                values = ds[()]
                if not np.all(np.isfinite(values)):
                    bad(f"{part}/{key} contains NaN/inf")
    return n


def _check_interventions(
    g: h5py.Group, n: int, action_dtype: Any, act_shape: tuple[int, ...], bad: Any
) -> None:
    """The optional intervention datasets (docs/DESIGN.md §3): both or neither, shapes, dtypes, flags 0/1,
    finite policy actions; a demo whose source says ``intervention:`` must have them."""
    has = [key for key in ("policy_actions", "interventions") if key in g]
    source = g.attrs.get("source", "")
    source = source.decode() if isinstance(source, bytes) else str(source)
    if not has:
        if source.startswith("intervention:"):
            bad(f"source is '{source}' but policy_actions / interventions are missing")
        return
    if len(has) == 1:
        missing = "interventions" if has[0] == "policy_actions" else "policy_actions"
        bad(f"{has[0]} without {missing} (intervention datasets come together)")
    for key in has:
        if not isinstance(g[key], h5py.Dataset):
            bad(f"{key} is not a dataset")
            return
    if "policy_actions" in g:
        ds = g["policy_actions"]
        if ds.dtype != np.dtype(action_dtype):
            bad(f"policy_actions has dtype {ds.dtype}, expected {np.dtype(action_dtype).name}")
        if ds.shape != (n, *act_shape):
            bad(f"policy_actions has shape {ds.shape}, expected {(n, *act_shape)}")
        values = ds[()]
        if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
            step = int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)))[0][0])
            bad(f"policy_actions contain NaN/inf (first at step {step})")
    if "interventions" in g:
        ds = g["interventions"]
        if ds.dtype not in (np.dtype(np.uint8), np.dtype(np.bool_)):
            bad(f"interventions has dtype {ds.dtype}, expected uint8 (or bool)")
        if ds.shape != (n,):
            bad(f"interventions has shape {ds.shape}, expected ({n},)")
        flags = ds[()]
        if flags.dtype.kind in "iu" and flags.size and (flags.min() < 0 or flags.max() > 1):
            step = int(np.argmax((flags < 0) | (flags > 1)))
            bad(f"interventions[{step}] is {int(flags[step])}, flags are 0 or 1")


def validate_file(path: str | os.PathLike[str]) -> list[str]:
    """All problems of a demo file, one line each (empty when valid).

    Raises:
        UserError: the file cannot be opened at all (missing, not HDF5, truncated) or its header
            is not a schema v1 header; nothing else is checkable then.
    """
    problems: list[str] = []
    with open_h5(path) as f:
        meta = read_header(f, path)
        data = f["data"]
        if not meta.env_id:
            problems.append("/data: env_args has no env_name")
        names = [n for n in data if isinstance(data[n], h5py.Group)]
        others = [n for n in names if not n.startswith("demo_")]
        for n in others:
            problems.append(f"/data/{n}: unexpected group (demo groups are demo_<integer>)")
        demos = sorted_demo_names(names)
        for n in names:
            if n.startswith("demo_") and n not in demos:
                problems.append(f"/data/{n}: bad demo name (expected demo_<integer>)")
        total = 0
        for name in demos:
            try:
                total += _check_demo(name, data[name], meta, problems)
            except (OSError, KeyError, ValueError) as exc:  # damaged chunk / object header
                problems.append(f"{name}: unreadable ({str(exc).splitlines()[0]})")
        if "total" not in data.attrs:
            problems.append("/data: missing attribute total")
        elif int(data.attrs["total"]) != total:
            problems.append(
                f"/data: attribute total is {int(data.attrs['total'])}, the demos hold {total} steps"
            )
        if "mask" in f:
            known = set(demos)
            for mask_name in f["mask"]:
                values: Any = f["mask"][mask_name][()]
                listed = [v.decode() if isinstance(v, bytes) else str(v) for v in np.atleast_1d(values)]
                missing = [v for v in listed if v not in known]
                if missing:
                    problems.append(f"/mask/{mask_name}: names missing demos {', '.join(missing[:5])}")
        indices = [demo_index(n) for n in demos]
        if len(set(indices)) != len(indices):
            problems.append("/data: duplicate demo indices")
    return problems
