"""Learned reward files (``gail-robot export-reward``): loading, checking, evaluating (docs/DESIGN.md §5.2).

A reward file is one TorchScript module with ``meta.json`` beside it in the archive (written by
:mod:`gail_robot.export.reward`). Its ``meta["inputs"]`` says how it is called:

* ``"obs"``: ``r(obs)``, raw observations ``float32 (B, obs_dim)`` -> ``float32 (B,)``
  (AIRL's state-only ``g(s)``);
* ``"obs_action_next_obs"``: ``r(obs, action, next_obs)`` with actions in the env's units
  (``float32 (B, act_dim)``, or int64 indices ``(B,)`` for ``Discrete``).

``meta["absorbing_reward"]`` (or null) is the reward of the absorbing state that follows a true
termination (DAC, Kostrikov et al. 2019): a learner bootstraps a terminated step with
``absorbing_reward / (1 - gamma)`` instead of 0, as the adversarial run that learned it did.

A shaped AIRL file (``meta["shaped"]``, ``export-reward --shaping``, format version 2) pays
``f = g + gamma h(s') - h(s)``; on a terminated step the successor is the absorbing state, so its
``h(s')`` is replaced by ``meta["absorbing_potential"]`` (the ``terminated`` argument of the call).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from gail_robot.envs.make import PolicyActions
from gail_robot.envs.variants import original_of
from gail_robot.errors import UserError

REWARD_FORMAT = "gail_robot.reward"
REWARD_FORMAT_VERSION = 2  # 2: shaped AIRL files (they need the terminated-step correction)
INPUTS = ("obs", "obs_action_next_obs")


class LearnedReward:
    """A loaded reward file.

    Attributes:
        module: the TorchScript module.
        meta: its ``meta.json``.
        path: the file.
    """

    def __init__(self, module: Any, meta: dict[str, Any], path: Path):
        self.module = module
        self.meta = meta
        self.path = path

    @property
    def env_id(self) -> str:
        return str(self.meta["env_id"])

    @property
    def obs_dim(self) -> int:
        return int(self.meta["obs_dim"])

    @property
    def inputs(self) -> str:
        return str(self.meta["inputs"])

    @property
    def absorbing_reward(self) -> float | None:
        value = self.meta.get("absorbing_reward")
        return None if value is None else float(value)

    @property
    def shaped(self) -> bool:
        return bool(self.meta.get("shaped", False))

    def check_gamma(self, gamma: float) -> None:
        """Refuse, in one line, a learner whose discount is not a shaped file's own.

        Potential shaping ``gamma h(s') - h(s)`` keeps the optimal policy only under the same ``gamma``
        (Ng et al. 1999); an unshaped file does not care.
        """
        if self.shaped and abs(float(self.meta["gamma"]) - gamma) > 1e-12:
            raise UserError(
                f"reward file {self.path} is shaped with gamma {self.meta['gamma']}; this run discounts by "
                f"{gamma}: set its gamma to {self.meta['gamma']} or export the reward without --shaping"
            )

    def check_env(self, env_id: str, obs_dim: int, actions: PolicyActions) -> None:
        """Refuse, in one line, an env the reward was not learned for.

        The env must be the reward's own or a variant of it with changed dynamics
        (:mod:`gail_robot.envs.variants`), with the same observation width and, for a reward of
        actions, the same action space.
        """
        if original_of(env_id) != original_of(self.env_id):
            raise UserError(
                f"reward file {self.path} was learned on {self.env_id}, not {env_id} (nor a variant of it)"
            )
        if obs_dim != self.obs_dim:
            raise UserError(
                f"reward file {self.path} takes {self.obs_dim}-dim observations; {env_id} has {obs_dim}"
            )
        if self.inputs == "obs_action_next_obs":
            mine = f"Discrete({actions.n_actions})" if actions.discrete else f"Box({actions.act_dim},)"
            if mine != self.meta["action_space"]:
                raise UserError(
                    f"reward file {self.path} takes {self.meta['action_space']} actions; {env_id} has {mine}"
                )

    def __call__(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray | None = None,
    ) -> np.ndarray:
        """Rewards ``(M,) float32`` of ``M`` transitions (raw observations, env-unit actions).

        ``terminated`` ``(M,) bool`` marks true terminations; a shaped file then takes the absorbing
        state's potential for their ``h(s')`` (without it every successor is the observed one).
        """
        import torch

        with torch.inference_mode():
            obs_t = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32))
            if self.inputs == "obs":
                out = self.module(obs_t)
            else:
                act_t = torch.from_numpy(np.ascontiguousarray(actions))
                next_t = torch.from_numpy(np.ascontiguousarray(next_obs, dtype=np.float32))
                out = self.module(obs_t, act_t, next_t)
                potential = self.meta.get("absorbing_potential")
                if self.shaped and potential is not None and terminated is not None and terminated.any():
                    rows = torch.from_numpy(np.flatnonzero(terminated))
                    h_next = self.module.potential(next_t.index_select(0, rows))
                    gamma = float(self.meta["gamma"])
                    out = out.clone()
                    out[rows] += gamma * (float(potential) - h_next)
        return out.numpy().astype(np.float32)


def demo_transitions(path: str | Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(obs, actions, next_obs)`` of every episode of a demo file, as a reward file takes them.

    State observations ``float32``; continuous actions ``float32`` in env units, ``Discrete`` indices
    as integers. A missing or unreadable file: one line (:class:`UserError`).
    """
    from gail_robot.data import DemoDataset

    ds = DemoDataset(path)
    episodes = []
    try:
        for demo in ds:
            actions = np.asarray(demo.actions)
            if actions.dtype.kind not in "iu":
                actions = actions.astype(np.float32)
            obs = np.asarray(demo.obs["state"], np.float32)
            episodes.append((obs, actions, np.asarray(demo.next_obs["state"], np.float32)))
    finally:
        ds.close()
    return episodes


def load_reward(path: str | Path) -> LearnedReward:
    """Load a reward file.

    Raises:
        UserError: missing, corrupt or foreign file (e.g. a policy export), a newer format version.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"reward file not found: {path}")
    extra = {"meta.json": ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        try:
            module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{path} is not a reward file (gail-robot export-reward): {first}") from exc
    try:
        meta = json.loads(extra["meta.json"] or "{}")
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} has a corrupt meta.json: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != REWARD_FORMAT:
        raise UserError(f"{path} is not a reward file (gail-robot export-reward writes them)")
    if int(meta.get("format_version", 0)) > REWARD_FORMAT_VERSION:
        raise UserError(
            f"{path} has reward format version {meta['format_version']}; this version reads "
            f"{REWARD_FORMAT_VERSION}: upgrade gail-robot"
        )
    if meta.get("inputs") not in INPUTS:
        raise UserError(f"{path}: unknown reward inputs {meta.get('inputs')!r}")
    return LearnedReward(module.eval(), meta, path)


__all__ = ["INPUTS", "REWARD_FORMAT", "REWARD_FORMAT_VERSION", "LearnedReward", "load_reward"]
