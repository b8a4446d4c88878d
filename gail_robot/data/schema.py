"""Demo file schema v1/v2: constants, env metadata, space <-> JSON, demo naming, opening files safely.

The layout (documented in ``datasets/README.md``) follows robomimic's ``/data/demo_<i>`` groups,
stricter where robomimic is loose: terminations and truncations are stored separately, every step
carries the MuJoCo physics state, and readers check ``format`` / ``format_version``.

Version 2 is version 1 plus ``Discrete(n)`` action spaces (``action_space`` ``{"type": "Discrete",
"n": n}``, ``actions`` int64 ``(N,)``). Files with a Box action space are still written as version 1,
so older readers keep reading them; a Discrete file is version 2, which they refuse with one line
instead of misreading its actions.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.errors import UserError

FORMAT = "gail_robot.demos"
FORMAT_VERSION = 1
#: the version of files whose action space is Discrete (docs/DESIGN.md §3)
DISCRETE_FORMAT_VERSION = 2
#: the versions this code reads
READ_VERSIONS = (FORMAT_VERSION, DISCRETE_FORMAT_VERSION)
#: robomimic's EnvType.GYM_TYPE; robomimic reads ``env_args["type"]`` to pick its env wrapper.
ROBOMIMIC_GYM_TYPE = 2
#: observation key used when the env's observation space is a flat Box.
FLAT_OBS_KEY = "state"

_DEMO_RE = re.compile(r"^demo_(\d+)$")


def demo_name(index: int) -> str:
    """``demo_<index>``."""
    return f"demo_{index}"


def demo_index(name: str) -> int:
    """The integer of ``demo_<i>``; ``ValueError`` for any other name."""
    match = _DEMO_RE.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a demo name (expected demo_<integer>)")
    return int(match.group(1))


def sorted_demo_names(names: Any) -> list[str]:
    """Demo names in numeric order (``demo_10`` after ``demo_9``); other names are dropped."""
    return sorted((n for n in names if _DEMO_RE.match(n)), key=demo_index)


# ----------------------------------------------------------------------------------------------
# spaces <-> JSON
# ----------------------------------------------------------------------------------------------


def _bound_to_json(values: np.ndarray) -> Any:
    """Bounds as JSON: one number when all equal, else a nested list; infinities as strings."""

    def one(x: float) -> Any:
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return float(x)

    flat = values.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return one(float(flat[0]))
    return [one(float(x)) for x in flat]


def _bound_from_json(value: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    def one(x: Any) -> float:
        return float(x)  # float("inf") / float("-inf") parse the string forms

    if isinstance(value, list):
        arr = np.array([one(x) for x in value], dtype=np.float64).reshape(shape)
    else:
        arr = np.full(shape, one(value), dtype=np.float64)
    return arr.astype(dtype)


def space_to_json(space: gym.Space[Any]) -> dict[str, Any]:
    """A JSON-able description of a Box, a flat Dict of Boxes or a ``Discrete(n)`` (action spaces)."""
    if isinstance(space, gym.spaces.Discrete):
        if int(space.start) != 0:
            raise UserError(
                f"{space} starts at {space.start}; only Discrete spaces starting at 0 are supported"
            )
        return {"type": "Discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "Box",
            "shape": list(space.shape),
            "dtype": np.dtype(space.dtype).name,
            "low": _bound_to_json(space.low),
            "high": _bound_to_json(space.high),
        }
    if isinstance(space, gym.spaces.Dict):
        spaces = {}
        for key, sub in space.spaces.items():
            if not isinstance(sub, gym.spaces.Box):
                raise UserError(
                    f"observation key {key!r} is a {type(sub).__name__}; only Box keys are supported"
                )
            spaces[key] = space_to_json(sub)
        return {"type": "Dict", "keys": list(spaces), "spaces": spaces}
    raise UserError(f"{type(space).__name__} spaces are not supported (use Box or a Dict of Boxes)")


def space_from_json(desc: dict[str, Any]) -> gym.Space[Any]:
    """Inverse of :func:`space_to_json`."""
    kind = desc.get("type")
    if kind == "Box":
        shape = tuple(int(s) for s in desc["shape"])
        dtype = np.dtype(desc["dtype"])
        low = _bound_from_json(desc["low"], shape, dtype)
        high = _bound_from_json(desc["high"], shape, dtype)
        return gym.spaces.Box(low=low, high=high, shape=shape, dtype=dtype.type)
    if kind == "Dict":
        # gymnasium sorts plain-dict keys; the stored key order is authoritative, so keep it.
        from collections import OrderedDict

        return gym.spaces.Dict(OrderedDict((k, space_from_json(desc["spaces"][k])) for k in desc["keys"]))
    if kind == "Discrete":
        return gym.spaces.Discrete(int(desc["n"]))
    raise ValueError(f"unknown space type {kind!r}")


def obs_keys(space: gym.Space[Any]) -> list[str]:
    """Observation keys in storage (and flattening) order."""
    if isinstance(space, gym.spaces.Dict):
        return list(space.spaces)
    return [FLAT_OBS_KEY]


def obs_key_spaces(space: gym.Space[Any]) -> dict[str, gym.spaces.Box]:
    """``{key: Box}`` for a Box (key ``"state"``) or a Dict observation space."""
    if isinstance(space, gym.spaces.Dict):
        return {k: v for k, v in space.spaces.items() if isinstance(v, gym.spaces.Box)}
    if isinstance(space, gym.spaces.Box):
        return {FLAT_OBS_KEY: space}
    raise UserError(f"{type(space).__name__} observation spaces are not supported")


def same_space(a: gym.Space[Any], b: gym.Space[Any]) -> bool:
    """Equal type, keys, shapes and dtypes (bounds are not compared: envs may widen them)."""
    if isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box):
        return a.shape == b.shape and np.dtype(a.dtype) == np.dtype(b.dtype)
    if isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict):
        return list(a.spaces) == list(b.spaces) and all(same_space(a[k], b[k]) for k in a.spaces)
    if isinstance(a, gym.spaces.Discrete) and isinstance(b, gym.spaces.Discrete):
        return int(a.n) == int(b.n) and int(a.start) == int(b.start)
    return False


def same_shapes(a: gym.Space[Any], b: gym.Space[Any]) -> bool:
    """Equal type, keys and shapes; dtypes may differ (a float32-casting wrapper is compatible)."""
    if isinstance(a, gym.spaces.Box) and isinstance(b, gym.spaces.Box):
        return a.shape == b.shape
    if isinstance(a, gym.spaces.Dict) and isinstance(b, gym.spaces.Dict):
        return sorted(a.spaces) == sorted(b.spaces) and all(same_shapes(a[k], b[k]) for k in a.spaces)
    return False


def describe_space(space: gym.Space[Any]) -> str:
    """Short text: ``Box(11,) float32`` or ``Dict(a: Box(3,) float32, ...)``."""
    if isinstance(space, gym.spaces.Box):
        return f"Box{tuple(space.shape)} {np.dtype(space.dtype).name}"
    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {describe_space(v)}" for k, v in space.spaces.items()) + ")"
    if isinstance(space, gym.spaces.Discrete):
        return f"Discrete({int(space.n)})"
    return repr(space)


def is_discrete(space: gym.Space[Any]) -> bool:
    """Whether an action space is ``Discrete`` (actions stored as int64 indices ``(N,)``)."""
    return isinstance(space, gym.spaces.Discrete)


def format_version_for(action_space: gym.Space[Any]) -> int:
    """The schema version a file with this action space is written as (2 for Discrete, else 1)."""
    return DISCRETE_FORMAT_VERSION if is_discrete(action_space) else FORMAT_VERSION


# ----------------------------------------------------------------------------------------------
# env metadata
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvMeta:
    """What a demo file says about the env it was recorded on.

    Attributes:
        env_id: Gymnasium id, e.g. ``"gail_robot/ArmPush-v0"``.
        env_kwargs: keyword arguments for ``gym.make`` (JSON-able).
        observation_space: Box or Dict of Boxes.
        action_space: Box, or ``Discrete(n)`` (schema version 2).
        env_version: Gymnasium version the demos were recorded with.
        state_size: length S of the MuJoCo physics state (0: an env without MuJoCo physics, such as
            the classic-control tasks), or None when unknown.
    """

    env_id: str
    env_kwargs: dict[str, Any]
    observation_space: gym.Space[Any]
    action_space: gym.spaces.Box | gym.spaces.Discrete
    env_version: str = field(default_factory=lambda: gym.__version__)
    state_size: int | None = None

    @classmethod
    def from_env(cls, env: gym.Env[Any, Any]) -> EnvMeta:
        """Read id, kwargs, spaces and physics state size off a (wrapped) Gymnasium env."""
        from gail_robot.envs.make import SUPPORTED_ACTIONS
        from gail_robot.envs.physics import has_physics, state_size

        spec = env.spec
        if spec is None:
            raise UserError("the env has no spec (make it with gym.make so its id can be stored)")
        act = env.action_space
        if not (
            isinstance(act, gym.spaces.Box) or (isinstance(act, gym.spaces.Discrete) and int(act.start) == 0)
        ):
            raise UserError(
                f"{spec.id} has action space {act}; demos can be recorded for {SUPPORTED_ACTIONS}"
            )
        obs_key_spaces(env.observation_space)  # raises for unsupported observation spaces
        space_to_json(env.observation_space)
        kwargs = {k: v for k, v in (spec.kwargs or {}).items() if k != "render_mode"}
        try:
            json.dumps(kwargs)
        except TypeError as exc:
            raise UserError(f"env kwargs of {spec.id} are not JSON-serialisable: {exc}") from None
        return cls(
            env_id=spec.id,
            env_kwargs=kwargs,
            observation_space=env.observation_space,
            action_space=act,
            state_size=state_size(env) if has_physics(env) else 0,
        )

    def env_args_json(self) -> str:
        """robomimic's ``env_args`` attribute."""
        return json.dumps(
            {
                "env_name": self.env_id,
                "type": ROBOMIMIC_GYM_TYPE,
                "env_kwargs": self.env_kwargs,
                "env_version": self.env_version,
            }
        )

    def mismatch(self, other: EnvMeta) -> str | None:
        """One line naming the first difference that makes demos incompatible, or None."""
        if self.env_id != other.env_id:
            return f"env '{other.env_id}' differs from '{self.env_id}'"
        if not same_space(self.observation_space, other.observation_space):
            return (
                f"observation space {describe_space(other.observation_space)} differs from "
                f"{describe_space(self.observation_space)}"
            )
        if not same_space(self.action_space, other.action_space):
            return (
                f"action space {describe_space(other.action_space)} differs from "
                f"{describe_space(self.action_space)}"
            )
        if (
            self.state_size is not None
            and other.state_size is not None
            and self.state_size != other.state_size
        ):
            return f"physics state size {other.state_size} differs from {self.state_size}"
        if self.env_kwargs != other.env_kwargs:
            return f"env kwargs {other.env_kwargs} differ from {self.env_kwargs}"
        return None

    def make_env(self, **extra: Any) -> gym.Env[Any, Any]:
        """``gym.make(env_id, **env_kwargs, **extra)`` after registering the project's tasks.

        Rendered to arrays, walkers are seen from their ``track`` camera (see ``follow_robot``).
        """
        import gail_robot.envs  # noqa: F401  (registers gail_robot/* ids)
        from gail_robot.envs.make import follow_robot

        try:
            env = gym.make(self.env_id, **{**self.env_kwargs, **extra})
        except gym.error.Error as exc:
            raise UserError(f"cannot make env '{self.env_id}': {exc}") from None
        if extra.get("render_mode") == "rgb_array":
            follow_robot(env)
        return env


def header_attrs(meta: EnvMeta) -> dict[str, Any]:
    """The ``/data`` attributes of a new file (schema v1, v2 for a Discrete action space; ``total`` 0)."""
    import datetime

    import mujoco

    from gail_robot import __version__

    attrs: dict[str, Any] = {
        "format": FORMAT,
        "format_version": format_version_for(meta.action_space),
        "total": 0,
        "env_args": meta.env_args_json(),
        "observation_space": json.dumps(space_to_json(meta.observation_space)),
        "action_space": json.dumps(space_to_json(meta.action_space)),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gail_robot_version": __version__,
        "mujoco_version": mujoco.__version__,
    }
    if meta.state_size is not None:
        attrs["state_size"] = meta.state_size
    return attrs


def _attr_str(attrs: h5py.AttributeManager, name: str) -> str:
    value = attrs[name]
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def read_header(f: h5py.File, path: str | os.PathLike[str]) -> EnvMeta:
    """Check ``format`` / ``format_version`` and parse the env metadata; UserError when wrong."""
    name = os.fspath(path)
    if "data" not in f:
        raise UserError(f"{name}: no /data group (not a demo file)")
    attrs = f["data"].attrs
    if "format" not in attrs:
        raise UserError(
            f"{name}: /data has no 'format' attribute (a robomimic file? import it with "
            f"'gail-robot data convert {name} --from robomimic --out FILE')"
        )
    if _attr_str(attrs, "format") != FORMAT:
        raise UserError(f"{name}: format '{_attr_str(attrs, 'format')}' is not '{FORMAT}'")
    version = int(attrs.get("format_version", -1))
    if version not in READ_VERSIONS:
        raise UserError(
            f"{name}: format_version {version} is not supported "
            f"(this gail_robot reads versions {', '.join(map(str, READ_VERSIONS))})"
        )
    try:
        env_args = json.loads(_attr_str(attrs, "env_args"))
        obs_space = space_from_json(json.loads(_attr_str(attrs, "observation_space")))
        act_space = space_from_json(json.loads(_attr_str(attrs, "action_space")))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{name}: damaged /data attributes ({exc})") from None
    if not isinstance(act_space, gym.spaces.Box | gym.spaces.Discrete):
        raise UserError(f"{name}: action space must be a Box or Discrete")
    if version != format_version_for(act_space):
        raise UserError(
            f"{name}: format_version {version} does not match its {describe_space(act_space)} action "
            f"space (version {format_version_for(act_space)} expected)"
        )
    return EnvMeta(
        env_id=str(env_args.get("env_name", "")),
        env_kwargs=dict(env_args.get("env_kwargs") or {}),
        observation_space=obs_space,
        action_space=act_space,
        env_version=str(env_args.get("env_version", "")),
        state_size=int(attrs["state_size"]) if "state_size" in attrs else None,
    )


def open_h5(path: str | os.PathLike[str], mode: str = "r") -> h5py.File:
    """Open an HDF5 file with one-line UserErrors for missing, non-HDF5 and damaged files."""
    p = Path(path)
    if mode == "r" and not p.exists():
        raise UserError(f"{p}: no such file")
    if mode == "r" and p.is_dir():
        raise UserError(f"{p}: is a directory, not an HDF5 file")
    if p.exists() and p.is_file() and not h5py.is_hdf5(p):
        raise UserError(f"{p}: not an HDF5 file")
    try:
        return h5py.File(p, mode)
    except OSError as exc:
        text = str(exc)
        if "truncated" in text or "eof" in text.lower():
            raise UserError(f"{p}: truncated or damaged HDF5 file") from None
        if "lock" in text.lower():
            raise UserError(f"{p}: locked by another process ({text.splitlines()[0]})") from None
        raise UserError(f"{p}: cannot open HDF5 file ({text.splitlines()[0]})") from None
