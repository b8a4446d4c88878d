"""Re-simulating recorded demos: from their stored physics states, or open loop from the first one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from gail_robot.data.reader import Demo, DemoDataset
from gail_robot.envs.physics import STATE_SPEC, get_physics_state, mujoco_env, set_physics_state
from gail_robot.errors import UserError


@dataclass(frozen=True)
class ReplayResult:
    """How closely a re-simulation reproduced a demo.

    Attributes:
        demo: demo name.
        mode: ``"states"`` (each step starts from its stored state) or ``"actions"`` (open loop).
        steps: steps simulated.
        max_state_error: max |state - stored state| over the whole physics state vector.
        max_qpos_error: max |qpos - stored qpos| (joint positions: metres / radians).
        final_qpos_error: max |qpos - stored qpos| after the last step.
        max_obs_error: max |next_obs - stored next_obs| (flattened, float64).
        frames: frames written to the video (0 without one).
    """

    demo: str
    mode: str
    steps: int
    max_state_error: float
    max_qpos_error: float
    final_qpos_error: float
    max_obs_error: float
    frames: int = 0


class _QposOf:
    """Reads qpos out of a stored state vector through a scratch MjData."""

    def __init__(self, env: Any) -> None:
        base = mujoco_env(env)
        self.model = base.model
        self.scratch = mujoco.MjData(self.model)

    def __call__(self, state: np.ndarray) -> np.ndarray:
        mujoco.mj_setState(self.model, self.scratch, np.ascontiguousarray(state), STATE_SPEC)
        return self.scratch.qpos.copy()


def _flat(obs: Any) -> np.ndarray:
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in obs.values()])
    return np.asarray(obs, dtype=np.float64).reshape(-1)


def _stored_next_obs(demo: Demo, t: int) -> np.ndarray:
    return np.concatenate([demo.next_obs[k][t].astype(np.float64).reshape(-1) for k in demo.next_obs])


def replay_demo(
    dataset: DemoDataset,
    demo: int | str,
    mode: str = "states",
    video: str | os.PathLike[str] | None = None,
    width: int = 640,
    height: int = 480,
) -> ReplayResult:
    """Re-simulate one demo and measure how far the simulation is from the recording.

    Args:
        dataset: the demo file.
        demo: demo index or name.
        mode: ``"states"``: before every step the stored state is restored, so each step is checked
            in isolation (errors should be ~0: the recording is exactly replayable); ``"actions"``:
            only the first state is restored and the actions are played open loop (errors show how
            far the trajectory drifts; exact when the env is deterministic).
        video: write an MP4 of the replay here (rendered offscreen).
        width: video width in pixels.
        height: video height in pixels.
    """
    if mode not in ("states", "actions"):
        raise UserError(f"--mode must be 'states' or 'actions', got '{mode}'")
    d = dataset.demo(demo)
    extra: dict[str, Any] = {}
    if video is not None:
        extra = {"render_mode": "rgb_array", "width": width, "height": height}
    env = dataset.meta.make_env(**extra)
    writer = None
    frames = 0
    try:
        seed = int(d.attrs.get("seed", -1))
        env.reset(seed=seed if seed >= 0 else None)
        expected = get_physics_state(env).shape
        if d.states.shape[1:] != expected:
            raise UserError(
                f"{dataset.path}: {d.name} stores states of size {d.states.shape[1]}, "
                f"but '{dataset.env_id}' has {expected[0]} (recorded with another model?)"
            )
        qpos_of = _QposOf(env)
        if video is not None:
            import imageio.v2 as imageio

            fps = max(1, round(1.0 / float(getattr(env.unwrapped, "dt", 1 / 30))))
            writer = imageio.get_writer(os.fspath(video), fps=fps, codec="libx264", macro_block_size=1)
        set_physics_state(env, d.states[0])
        if writer is not None:
            writer.append_data(np.asarray(env.render()))
            frames += 1
        max_state = max_qpos = max_obs = final_qpos = 0.0
        n = len(d)
        for t in range(n):
            if mode == "states" and t > 0:
                set_physics_state(env, d.states[t])
            next_obs, *_ = env.step(d.actions[t])
            stored = d.states[t + 1] if t + 1 < n else d.final_state
            state = get_physics_state(env)
            max_state = max(max_state, float(np.max(np.abs(state - stored))))
            final_qpos = float(np.max(np.abs(qpos_of(state) - qpos_of(stored))))
            max_qpos = max(max_qpos, final_qpos)
            max_obs = max(max_obs, float(np.max(np.abs(_flat(next_obs) - _stored_next_obs(d, t)))))
            if writer is not None:
                writer.append_data(np.asarray(env.render()))
                frames += 1
    finally:
        if writer is not None:
            writer.close()
        env.close()
    return ReplayResult(d.name, mode, n, max_state, max_qpos, final_qpos, max_obs, frames)
