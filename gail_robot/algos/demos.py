"""Expert demonstrations for GAIL and BC, read through ``gail_robot.data.DemoDataset``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from gail_robot.data import Demo, DemoDataset, Transitions
from gail_robot.data.reader import flatten_obs
from gail_robot.errors import UserError


def load_demo_episodes(
    path: str,
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    mask: str | None = None,
    max_demos: int | None = None,
    subsample: int = 1,
) -> list[Transitions]:
    """Per-episode transitions of a demo file, checked against the training env.

    Args:
        path: demo file (HDF5 schema v1).
        env_id: the env being trained; the file must hold demos of the same env and spaces.
        env_kwargs: its keyword arguments.
        mask: restrict to ``/mask/<mask>``.
        max_demos: keep at most the first ``max_demos`` demos (numeric order).
        subsample: keep every k-th pair of each demo.

    Returns:
        One :class:`Transitions` per demo, actions in env units (int64 indices for ``Discrete``).

    Raises:
        UserError: missing/corrupt file, another env, no demos, or a non-finite observation, next
            observation or action (one line naming the demo and the step).
    """
    from gail_robot.envs.make import ensure_registered

    dataset = DemoDataset(path)
    try:
        ensure_registered(env_id)
        env = gym.make(env_id, **(env_kwargs or {}))
        try:
            dataset.check_compatible(env)
        finally:
            env.close()
        names = dataset.mask_names(mask)
        if max_demos is not None:
            names = names[:max_demos]
        if not names:
            raise UserError(f"{path}: no demos to train on")
        keys = dataset.obs_keys
        episodes = []
        for name in names:
            demo = dataset.demo(name)
            check_finite(path, demo, keys)
            sel = slice(0, len(demo), subsample)
            episodes.append(
                Transitions(
                    obs=np.ascontiguousarray(flatten_obs(demo.obs, keys)[sel]),
                    actions=np.ascontiguousarray(demo.actions[sel], dtype=dataset.action_dtype),
                    next_obs=np.ascontiguousarray(flatten_obs(demo.next_obs, keys)[sel]),
                    terminated=np.ascontiguousarray(demo.terminated[sel], dtype=bool),
                )
            )
        return episodes
    finally:
        dataset.close()


@dataclass(frozen=True)
class LabelledEpisode:
    """One demo's transitions and, for intervention recordings, who drove each step.

    Attributes:
        pairs: the demo's transitions (actions in env units: the executed ones).
        interventions: ``(N,) bool``, True where the person drove; None for an ordinary demo
            (every step is the demonstrator's).
    """

    pairs: Transitions
    interventions: np.ndarray | None


def load_labelled_episodes(
    paths: str | list[str],
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    mask: str | None = None,
    max_demos: int | None = None,
    subsample: int = 1,
) -> list[LabelledEpisode]:
    """The demos of one or several files of the same env, with their intervention flags.

    Args:
        paths: one demo file or several (e.g. initial demos and intervention rounds).
        env_id, env_kwargs: the env being trained; every file must hold demos of it.
        mask: restrict each file to ``/mask/<mask>``.
        max_demos: at most this many demos of each file.
        subsample: keep every k-th pair of each demo (and its flag).

    Raises:
        UserError: as :func:`load_demo_episodes`, or two files of different envs or spaces (one line
            naming both), a file named twice.
    """
    files = [paths] if isinstance(paths, str) else list(paths)
    if not files:
        raise UserError("no demo files given")
    if len(set(files)) != len(files):
        twice = next(f for f in files if files.count(f) > 1)
        raise UserError(f"{twice} is given twice as --demos")
    first_meta = None
    out: list[LabelledEpisode] = []
    for path in files:
        with DemoDataset(path) as dataset:
            if first_meta is None:
                first_meta = dataset.meta
            else:
                problem = first_meta.mismatch(dataset.meta)
                if problem is not None:
                    raise UserError(f"{path} does not go with {files[0]}: {problem}")
            flagged = {}
            for name in dataset.mask_names(mask)[:max_demos]:
                demo = dataset.demo(name)
                if demo.interventions is not None:
                    flagged[name] = demo.interventions.astype(bool)
        episodes = load_demo_episodes(
            path, env_id, env_kwargs, mask=mask, max_demos=max_demos, subsample=subsample
        )
        with DemoDataset(path) as dataset:
            names = dataset.mask_names(mask)[:max_demos]
        for name, pairs in zip(names, episodes, strict=True):
            flags = flagged.get(name)
            out.append(LabelledEpisode(pairs, None if flags is None else flags[::subsample]))
    return out


def person_driven(episode: LabelledEpisode) -> Transitions:
    """The transitions a person (or the demonstrator) drove: every step of an ordinary demo, the
    intervention steps of an intervention recording (docs/DESIGN.md §3.1).

    A transition counts when its step was driven by the person; its successor is whatever followed
    (the next step may be the policy's)."""
    if episode.interventions is None:
        return episode.pairs
    return episode.pairs.index(np.flatnonzero(episode.interventions))


def load_expert_transitions(
    paths: str | list[str],
    env_id: str,
    env_kwargs: dict[str, Any] | None = None,
    *,
    mask: str | None = None,
    max_demos: int | None = None,
    subsample: int = 1,
) -> tuple[Transitions, int]:
    """The expert samples of GAIL's and AIRL's discriminators: the person-driven transitions of one or
    several demo files of the training env (:func:`person_driven`; docs/DESIGN.md §3.1).

    Args:
        paths, env_id, env_kwargs, mask, max_demos, subsample: as :func:`load_labelled_episodes`
            (subsampling picks every k-th step of a demo, then its person-driven ones stay).

    Returns:
        ``(transitions, demos)``: the concatenated expert transitions (actions in env units) and the
        number of demos they come from.

    Raises:
        UserError: as :func:`load_labelled_episodes`, or no person-driven step at all (intervention
            recordings where nobody took over).
    """
    episodes = load_labelled_episodes(
        paths, env_id, env_kwargs, mask=mask, max_demos=max_demos, subsample=subsample
    )
    kept = [person_driven(e) for e in episodes]
    if not any(len(k) for k in kept):
        files = [paths] if isinstance(paths, str) else list(paths)
        raise UserError(
            f"{', '.join(files)}: no expert samples: every step is policy-driven (interventions 0)"
        )
    return concatenate(kept), len(episodes)


def iwr_weights(interventions: np.ndarray) -> np.ndarray:
    """IWR's per-step loss weights (Mandlekar et al. 2020): each class carries half of the loss.

    ``w = M / (2 M_int)`` on intervention steps, ``M / (2 M_other)`` on the others, so the weights
    average 1 and the sum over each class is ``M / 2``; all ones when a class is empty.

    Args:
        interventions: ``(M,) bool`` True on intervention steps.

    Returns:
        ``(M,) float32`` weights.
    """
    flags = np.asarray(interventions, dtype=bool)
    m, m_int = len(flags), int(flags.sum())
    if m_int == 0 or m_int == m:
        return np.ones(m, np.float32)
    return np.where(flags, m / (2.0 * m_int), m / (2.0 * (m - m_int))).astype(np.float32)


def check_finite(path: str, demo: Demo, keys: list[str]) -> None:
    """Refuse a demo with a NaN or infinite observation, next observation or action.

    The recorder refuses them, but files from converters and other tools may hold them, and one
    NaN silently poisons the normaliser, BC's loss and the discriminator. Whole arrays are checked
    at once (no per-step loop); the earliest bad step is named.

    Args:
        path: the demo file (for the message).
        demo: one demo read in full (arrays ``(N, ...)``).
        keys: its observation keys.

    Raises:
        UserError: ``"<path>: demo_3 step 17: action is not finite ([nan, 0.1, ...]); fix or drop
            that demo"``.
    """
    named = [(f"observation {k!r}", demo.obs[k]) for k in keys]
    named += [("action", demo.actions)]
    named += [(f"next observation {k!r}", demo.next_obs[k]) for k in keys]
    first: tuple[int, str, np.ndarray] | None = None
    for what, values in named:
        if not np.issubdtype(values.dtype, np.floating) or len(values) == 0:
            continue  # integer images cannot hold NaN
        rows = values.reshape(len(values), -1)
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            step = int(np.argmax(bad))
            if first is None or step < first[0]:
                first = (step, what, rows[step])
    if first is not None:
        step, what, row = first
        shown = ", ".join(f"{float(v):.4g}" for v in row[:4]) + (", ..." if len(row) > 4 else "")
        raise UserError(
            f"{path}: {demo.name} step {step}: {what} is not finite ([{shown}]); fix or drop that demo"
        )


def concatenate(episodes: list[Transitions]) -> Transitions:
    """One :class:`Transitions` holding all ``episodes`` in order."""
    return Transitions(
        obs=np.concatenate([e.obs for e in episodes]),
        actions=np.concatenate([e.actions for e in episodes]),
        next_obs=np.concatenate([e.next_obs for e in episodes]),
        terminated=np.concatenate([e.terminated for e in episodes]),
    )


def expert_in_policy_units(
    expert: Transitions, low: np.ndarray, high: np.ndarray, n_actions: int = 0
) -> Transitions:
    """Expert transitions with Box actions in the policy's ``[-1, 1]`` units (what discriminators
    compare with the policy's own actions); Discrete indices (``n_actions > 0``) stay as they are."""
    return Transitions(
        obs=expert.obs,
        actions=expert.actions if n_actions else normalize_actions(expert.actions, low, high),
        next_obs=expert.next_obs,
        terminated=expert.terminated,
    )


def normalize_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Env-unit actions ``(M, A)`` -> ``[-1, 1]`` units, clipped.

    The inverse of the action scaling of docs/DESIGN.md §2.
    """
    scaled = 2.0 * (np.asarray(actions, dtype=np.float64) - low) / (high - low) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)
