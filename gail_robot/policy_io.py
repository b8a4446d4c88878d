"""Saving training checkpoints and loading policies from run dirs, checkpoints or exported files.

Checkpoint format (``format = "gail_robot.checkpoint"``, ``format_version = 1``): one dict of
tensors and plain data (``torch.load(path, weights_only=True)`` loads it) with at least

- ``actor_spec`` (actor kind, obs/act dims and MLP shape; ``gail_robot.nets.actor_from_spec``),
  ``actor`` (state dict),
- ``obs_norm``: ``{"mean": (obs_dim,) float64, "var": (obs_dim,) float64, "clip": float}``,
- ``action_low`` / ``action_high``: ``(act_dim,) float32``,
- ``env_id``, ``env_kwargs``, ``meta`` (algo, run dir, env steps, versions),

plus whatever the trainer needs to resume (critic, discriminator, optimisers, RNG states, ...).
Writes are atomic (temp file in the same directory, then ``os.replace``): a crash never leaves a
half-written checkpoint behind.

A run directory means its ``final.pt``; a run that has not finished yet falls back to
``checkpoints/latest.pt``.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gail_robot import core
from gail_robot.errors import UserError

CHECKPOINT_FORMAT = "gail_robot.checkpoint"
CHECKPOINT_VERSION = 1
FINAL_NAME = "final.pt"
LATEST_NAME = "latest.pt"
CHECKPOINT_DIR = "checkpoints"

# The keys every checkpoint carries, whatever algorithm wrote it.
_REQUIRED_KEYS = (
    "actor_spec",
    "actor",
    "obs_norm",
    "action_low",
    "action_high",
    "env_id",
    "env_kwargs",
    "meta",
)


@dataclass
class PolicyBundle:
    """A deterministic policy with its frozen observation normalisation and action bounds.

    Attributes:
        actor: maps normalised observations ``(B, obs_dim) float32`` to the mean action
            ``(B, act_dim)`` in normalised ``[-1, 1]`` units, before clipping; for a ``Discrete``
            action space (``n_actions > 0``) to the logits ``(B, n_actions)``.
        obs_mean: ``(obs_dim,) float64`` running mean of observations.
        obs_var: ``(obs_dim,) float64`` running variance of observations.
        obs_clip: clip bound applied to normalised observations.
        action_low: ``(act_dim,) float32`` lower action bound of the env (``(0,)`` for Discrete).
        action_high: ``(act_dim,) float32`` upper action bound of the env (``(0,)`` for Discrete).
        env_id: Gymnasium id of the env the policy was trained on.
        env_kwargs: keyword arguments given to ``gymnasium.make``.
        meta: plain data about the policy's origin (algo, run dir, env steps, versions).
        n_actions: ``n`` of a ``Discrete(n)`` action space (the action is the argmax of the
            logits, an int64 index); 0 for continuous actions.
    """

    actor: Any  # torch.nn.Module (or a TorchScript module); Any keeps torch out of the import
    obs_mean: np.ndarray
    obs_var: np.ndarray
    obs_clip: float
    action_low: np.ndarray
    action_high: np.ndarray
    env_id: str
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    n_actions: int = 0

    @property
    def obs_dim(self) -> int:
        return int(self.obs_mean.shape[0])

    @property
    def act_dim(self) -> int:
        """Continuous action dimensions (0 for a Discrete action space)."""
        return int(self.action_low.shape[0])

    @property
    def discrete(self) -> bool:
        return self.n_actions > 0

    def describe_actions(self) -> str:
        """``Discrete(2)`` or ``Box(6,)``: the action space the policy acts in."""
        return f"Discrete({self.n_actions})" if self.discrete else f"Box({self.act_dim},)"

    def normalize_obs(self, obs: np.ndarray) -> np.ndarray:
        """``core.normalize`` with the frozen statistics: float32, the shape of ``obs (..., obs_dim)``."""
        return core.normalize(obs, self.obs_mean, self.obs_var, self.obs_clip)

    def unscale_action(self, action: np.ndarray) -> np.ndarray:
        """Normalised action ``(..., act_dim)`` -> env units, clipped to the bounds (float32)."""
        clipped = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        return (self.action_low + (clipped + 1.0) * 0.5 * (self.action_high - self.action_low)).astype(
            np.float32
        )

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic action in env units for ``obs`` of shape ``(obs_dim,)`` or ``(B, obs_dim)``.

        For a Discrete action space: the argmax of the logits, int64 (a scalar, or ``(B,)``).
        """
        import torch

        obs = np.asarray(obs)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if batch.ndim != 2 or batch.shape[1] != self.obs_dim:
            raise ValueError(f"obs must have shape ({self.obs_dim},) or (B, {self.obs_dim}), got {obs.shape}")
        with torch.inference_mode():
            mean = self.actor(torch.from_numpy(self.normalize_obs(batch))).numpy()
        action = np.argmax(mean, axis=1).astype(np.int64) if self.discrete else self.unscale_action(mean)
        return action[0] if single else action


# ----------------------------------------------------------------------------------- saving


def to_plain(value: Any) -> Any:
    """Recursively turn numpy arrays/scalars into tensors/Python scalars so ``weights_only`` loads it."""
    import torch

    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, order="C", copy=True))  # keeps 0-d arrays 0-d
    if isinstance(value, np.generic):
        return value.item()
    if type(value) in (bool, int, float, str):  # (bool first: True is also an int)
        return value
    # Subclasses of plain types (torch.__version__ is a TorchVersion str) would pickle as their
    # class, which weights_only loading refuses: store the plain value.
    for plain in (bool, int, float, str):
        if isinstance(value, plain) and type(value) is not plain:
            return plain(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        converted = [to_plain(v) for v in value]
        return converted if isinstance(value, list) else tuple(converted)
    return value


def to_numpy_tree(value: Any) -> Any:
    """Inverse of :func:`to_plain` for tensors: tensors become numpy arrays, recursively."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):
        return {k: to_numpy_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_numpy_tree(v) for v in value]
    return value


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Atomically write a checkpoint: ``payload`` plus the format header, via temp file + ``os.replace``.

    Args:
        path: destination file; its directory is created if missing.
        payload: tensors and plain data (numpy arrays are converted to tensors).

    Returns:
        The path written.
    """
    import torch

    path = Path(path)
    missing = [k for k in _REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"checkpoint payload lacks keys {missing}")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **to_plain(payload)}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


# ----------------------------------------------------------------------------------- loading


def resolve_checkpoint(path: str | Path) -> Path:
    """A run directory -> its final checkpoint (or ``checkpoints/latest.pt``); a file -> itself."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"no such file or directory: {path}")
    if path.is_dir():
        for candidate in (path / FINAL_NAME, path / CHECKPOINT_DIR / LATEST_NAME):
            if candidate.is_file():
                return candidate
        raise UserError(
            f"{path} is not a run directory: it has no {FINAL_NAME} or {CHECKPOINT_DIR}/{LATEST_NAME}"
        )
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a training checkpoint (a file or a run directory).

    Raises:
        UserError: missing or corrupt file, not a gail_robot checkpoint, or another format version.
    """
    import torch

    file = resolve_checkpoint(path)
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt / foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {file}: {reason}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{file} is not a gail_robot checkpoint")
    version = data.get("format_version")
    if version != CHECKPOINT_VERSION:
        raise UserError(
            f"{file} has checkpoint format version {version}; "
            f"this gail_robot reads version {CHECKPOINT_VERSION}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise UserError(f"checkpoint {file} is incomplete: missing {', '.join(missing)}")
    data["_path"] = str(file)
    return data


def bundle_from_checkpoint(data: dict[str, Any]) -> PolicyBundle:
    """Build the deterministic :class:`PolicyBundle` from a loaded checkpoint dict.

    Raises:
        UserError: an actor kind this version does not know.
    """
    from gail_robot.nets import actor_from_spec  # torch: imported only when a policy is loaded

    actor = actor_from_spec(data["actor_spec"])
    actor.load_state_dict(data["actor"])
    actor.eval()
    norm = data["obs_norm"]
    meta = dict(data["meta"])
    meta.setdefault("checkpoint", data.get("_path"))
    return PolicyBundle(
        actor=actor,
        obs_mean=np.asarray(norm["mean"], dtype=np.float64).copy(),
        obs_var=np.asarray(norm["var"], dtype=np.float64).copy(),
        obs_clip=float(norm["clip"]),
        action_low=np.asarray(data["action_low"], dtype=np.float32).copy(),
        action_high=np.asarray(data["action_high"], dtype=np.float32).copy(),
        env_id=str(data["env_id"]),
        env_kwargs=dict(data["env_kwargs"]),
        meta=meta,
        n_actions=int(data["actor_spec"].get("n_actions", 0)),
    )


def exported_format(file: str | Path) -> str | None:
    """The exported-policy format of ``file``: ``"torchscript"``, ``"pt2"``, ``"onnx"``, or None.

    The one rule for recognising exported files (docs/DESIGN.md §5), used by :func:`load_policy` and
    ``gail_robot.export``. TorchScript archives hold ``code/`` and ``constants.pkl`` (a ``torch.save``
    checkpoint only ``data.pkl``); AOTInductor packages hold ``data/aotinductor/``; ONNX protobuf has
    no magic number, so it is recognised by its ``.onnx`` suffix. None means anything else (e.g. a
    training checkpoint).
    """
    import zipfile

    file = Path(file)
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as zf:
            names = zf.namelist()
        if any("/data/aotinductor/" in n for n in names):
            return "pt2"
        if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
            return "torchscript"
        return None
    return "onnx" if file.suffix == ".onnx" else None


def _load_torchscript(file: Path) -> PolicyBundle:
    """Bundle from an exported TorchScript file (see ``gail_robot.export``).

    The export keeps the normalised actor as the submodule ``actor``; normalisation statistics and
    action bounds come from ``meta.json`` (keys ``obs_mean``, ``obs_var``, ``obs_clip``,
    ``action_low``, ``action_high``, ``env_id``, ``env_kwargs``) or, failing that, from the
    module's buffers of the same names.
    """
    import torch

    extra = {"meta.json": ""}
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch 2.13 but remains the deployment format (docs/DESIGN.md §5);
        # loading it is expected here, so the deprecation notice is not news to the user.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript.*")
        try:
            module = torch.jit.load(str(file), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            raise UserError(
                f"cannot read TorchScript file {file}: {str(exc).strip().splitlines()[0]}"
            ) from exc
    try:
        meta = json.loads(extra["meta.json"] or "{}")
    except json.JSONDecodeError as exc:
        raise UserError(f"{file} has a corrupt meta.json: {exc}") from exc

    def field_of(name: str) -> Any:
        if name in meta:
            return meta[name]
        if hasattr(module, name):
            value = getattr(module, name)
            return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        raise UserError(f"{file} is not a gail_robot policy export: it lacks '{name}'")

    actor = getattr(module, "actor", None)
    if actor is None:
        raise UserError(f"{file} is not a gail_robot policy export: it has no 'actor' submodule")
    env_kwargs = meta.get("env_kwargs", {})
    return PolicyBundle(
        actor=actor,
        obs_mean=np.asarray(field_of("obs_mean"), dtype=np.float64),
        obs_var=np.asarray(field_of("obs_var"), dtype=np.float64),
        obs_clip=float(field_of("obs_clip")),
        action_low=np.asarray(field_of("action_low"), dtype=np.float32),
        action_high=np.asarray(field_of("action_high"), dtype=np.float32),
        env_id=str(field_of("env_id")),
        env_kwargs=dict(env_kwargs) if isinstance(env_kwargs, dict) else {},
        meta={**meta, "exported_file": str(file)},
        n_actions=int(meta.get("n_actions") or 0),
    )


def load_policy(path: str | Path) -> PolicyBundle:
    """Load a deterministic policy from a run directory, a checkpoint file or an exported TorchScript file.

    Raises:
        UserError: missing, corrupt or foreign file, or an unsupported checkpoint version.
    """
    file = resolve_checkpoint(path)
    try:
        if exported_format(file) == "torchscript":
            return _load_torchscript(file)
        return bundle_from_checkpoint(load_checkpoint(file))
    except UserError:
        raise
    except (RuntimeError, ValueError, KeyError, TypeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        # a file that loads but does not hold a policy (a bad state dict, missing keys): one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"cannot load a policy from {path}: {first}") from exc
