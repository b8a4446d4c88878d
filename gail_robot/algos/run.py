"""The run scaffold every trainer shares: directory, logs, schedules, checkpoints, resume (docs/DESIGN.md §4).

A run directory holds ``config.yaml``, ``metrics.jsonl`` (one JSON object per log step), ``tb/``
(TensorBoard), ``checkpoints/latest.pt`` + the newest ``checkpoints/step_<env steps>.pt`` and, at
the end, ``final.pt``. :class:`Run` owns all of it and the bookkeeping around it: the run's seeds
and RNGs, the env-step counter, the evaluation and checkpoint schedules, training wall time across
resumes and the progress bar. A trainer (on-policy, SAC, BC) composes one ``Run`` and adds only
its networks, its update and the extra entries of its checkpoint payload.

Resume is exact when a trainer resets its envs with :func:`reset_seed` right after every
checkpoint (and at the start of a resumed run): together with the RNG states saved by
:meth:`Run.payload`, the resumed run computes what the original would have.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from gail_robot.algos.config import TrainConfig
from gail_robot.errors import UserError
from gail_robot.evaluate import EvalResult, evaluate_policy
from gail_robot.policy_io import (
    CHECKPOINT_DIR,
    FINAL_NAME,
    LATEST_NAME,
    PolicyBundle,
    load_checkpoint,
    save_checkpoint,
)
from gail_robot.versions import versions

#: evaluation episode ``i`` resets with ``EVAL_SEED_OFFSET + run seed + i``: away from training's seeds
EVAL_SEED_OFFSET = 10_000


def reset_seed(seed: int, env_steps: int) -> int:
    """Env reset seed after ``env_steps`` steps: distinct per reset, identical on resume."""
    return int(np.random.SeedSequence([seed, env_steps]).generate_state(1)[0])


class MetricsLog:
    """``metrics.jsonl`` + optional TensorBoard, both appended one row at a time.

    Args:
        run_dir: the run directory.
        tensorboard: also write TensorBoard scalars to ``run_dir/tb``.
        resume_step: when resuming, the env steps of the checkpoint: rows written after it by the
            interrupted run are dropped (they will be redone).
    """

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r).get("env_steps", 0) <= resume_step]
            self.path.write_text("".join(r + "\n" for r in kept))
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for

            self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)

    def write(self, row: dict[str, Any]) -> None:
        # NaN / inf are not JSON: write null.
        row = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in row.items()}
        with self.path.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.writer is not None:
            step = int(row["env_steps"])
            for key, value in row.items():
                if key != "env_steps" and isinstance(value, int | float):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def write_checkpoints(
    run_dir: Path, payload: dict[str, Any], env_steps: int, keep: int, final: bool, latest: bool = True
) -> Path:
    """Write ``checkpoints/latest.pt`` and either ``final.pt`` or a numbered checkpoint (atomic writes).

    Only the newest ``keep`` numbered checkpoints are kept. ``latest=False`` skips ``latest.pt``
    (a run that cannot be resumed). Returns the path of the final or numbered one.
    """
    ckpt_dir = run_dir / CHECKPOINT_DIR
    if latest:
        save_checkpoint(ckpt_dir / LATEST_NAME, payload)
    if final:
        return save_checkpoint(run_dir / FINAL_NAME, payload)
    path = save_checkpoint(ckpt_dir / f"step_{env_steps:010d}.pt", payload)
    numbered = sorted(ckpt_dir.glob("step_*.pt"))
    for old in numbered[: max(0, len(numbered) - keep)]:
        old.unlink(missing_ok=True)
    return path


#: ``evaluator(policy, episodes, seed) -> EvalResult``: where evaluation episodes run
Evaluator = Callable[[PolicyBundle, int, int], EvalResult]


def _evaluate_here(bundle: PolicyBundle, episodes: int, seed: int) -> EvalResult:
    return evaluate_policy(bundle, episodes, seed=seed)


def evaluation_row(
    bundle: PolicyBundle, episodes: int, run_seed: int, evaluator: Evaluator = _evaluate_here
) -> dict[str, float]:
    """The ``eval_*`` metrics of ``episodes`` deterministic episodes (empty when ``episodes`` is 0)."""
    if episodes == 0:
        return {}
    result = evaluator(bundle, episodes, EVAL_SEED_OFFSET + run_seed)
    out = {"eval_return": result.mean_return, "eval_return_std": result.std_return}
    out["eval_length"] = result.mean_length
    if not np.isnan(result.success_rate):
        out["eval_success_rate"] = result.success_rate
    if not np.isnan(result.mean_forward_velocity):
        out["eval_forward_velocity"] = result.mean_forward_velocity
    return out


class Run:
    """One training run's directory, seeds, counters, schedules, logs and checkpoints.

    Creating it seeds torch (global RNG and thread count) and makes the run's RNGs, so a trainer
    creates its ``Run`` before it initialises any network.

    Args:
        config: the run's configuration (its ``run`` section drives the schedules).
        run_dir: the run directory (created by :meth:`session`).
        device: device of :attr:`torch_rng` (the device the trainer samples noise on).

    Attributes:
        torch_rng: the trainer's torch RNG (action noise, minibatch order), saved in checkpoints.
        np_rng: the trainer's NumPy RNG, saved in checkpoints.
        env_steps: env steps taken so far (the trainer advances it).
        last_eval: the latest evaluation row (stored in checkpoint meta).
    """

    def __init__(self, config: TrainConfig, run_dir: str | Path, device: torch.device | str = "cpu"):
        self.config = config
        self.dir = Path(run_dir)
        run = config.run
        torch.set_num_threads(run.torch_threads)
        torch.manual_seed(run.seed)
        self.torch_rng = torch.Generator(device=device).manual_seed(run.seed)
        self.np_rng = np.random.default_rng(run.seed)
        self.env_steps = 0
        self.next_eval: int | None = run.eval_interval if run.eval_interval > 0 else None
        self.next_checkpoint = run.checkpoint_interval
        self.last_eval: dict[str, float] = {}
        #: where evaluation episodes run (in this process by default; the Ray workers in ray mode)
        self.evaluator: Evaluator = _evaluate_here
        self._wall_offset = 0.0
        self._start: float | None = None  # perf_counter when the session began
        self._log: MetricsLog | None = None
        self._bar: Any = None

    # ------------------------------------------------------------------------------ session

    @contextlib.contextmanager
    def session(self, desc: str, total: int | None = None, unit: str = "step") -> Iterator[Run]:
        """Open the run directory for writing: ``config.yaml``, the metrics log, the progress bar, the clock.

        Args:
            desc: progress bar label.
            total: progress bar total (default: ``run.total_steps``).
            unit: progress bar unit (``step`` counts env steps, anything else counts as it is).
        """
        cfg = self.config
        total = cfg.run.total_steps if total is None else total
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config.yaml").write_text(cfg.to_yaml())
        self._log = MetricsLog(self.dir, cfg.run.tensorboard, self.env_steps if self.env_steps > 0 else None)
        initial = min(self.env_steps, total) if unit == "step" else 0
        self._bar = tqdm(
            total=total,
            initial=initial,
            unit=unit,
            unit_scale=unit == "step",
            disable=not cfg.run.progress,
            desc=desc,
        )
        self._start = time.perf_counter()
        try:
            yield self
        finally:
            self._bar.close()
            self._log.close()
            self._wall_offset = self.wall_time()
            self._start, self._bar, self._log = None, None, None

    def wall_time(self) -> float:
        """Training wall time in seconds, across resumes."""
        return self._wall_offset + (0.0 if self._start is None else time.perf_counter() - self._start)

    def write(self, row: dict[str, Any]) -> None:
        """Append one metrics row (it must hold ``env_steps``)."""
        if self._log is None:
            raise RuntimeError("Run.write outside Run.session")
        self._log.write(row)

    def progress(self, done: int, postfix: dict[str, str] | None = None) -> None:
        """Move the progress bar to ``done`` (env steps, or epochs) and show ``postfix``."""
        if self._bar is None:
            return
        self._bar.update(done - self._bar.n)
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    # ------------------------------------------------------------------------------ schedules

    def checkpoint_due(self) -> bool:
        """True when a numbered checkpoint is due now (never at the end: :meth:`finish` writes that one).

        Advances the schedule; the trainer then saves and resets its envs with :func:`reset_seed`.
        """
        run = self.config.run
        if self.env_steps < self.next_checkpoint or self.env_steps >= run.total_steps:
            return False
        while self.next_checkpoint <= self.env_steps:
            self.next_checkpoint += run.checkpoint_interval
        return True

    def evaluate(self, bundle: Callable[[], PolicyBundle]) -> dict[str, float]:
        """Evaluate the policy ``bundle()`` builds now (``run.eval_episodes`` episodes); empty if none."""
        episodes = self.config.run.eval_episodes
        return (
            evaluation_row(bundle(), episodes, self.config.run.seed, self.evaluator) if episodes > 0 else {}
        )

    def scheduled_evaluation(self, bundle: Callable[[], PolicyBundle]) -> dict[str, float]:
        """The evaluation row when one is due now, else ``{}``; advances the schedule.

        Args:
            bundle: builds the current policy (called only when an evaluation runs).
        """
        run = self.config.run
        if self.next_eval is None or self.env_steps < self.next_eval:
            return {}
        while self.next_eval <= self.env_steps:
            self.next_eval += run.eval_interval
        if self.env_steps >= run.total_steps:  # the final evaluation follows anyway
            return {}
        self.last_eval = self.evaluate(bundle)
        return self.last_eval

    def finish(
        self,
        bundle: Callable[[], PolicyBundle],
        payload: Callable[[], dict[str, Any]],
        resumable: bool = True,
    ) -> Path:
        """Final evaluation (logged), then ``final.pt`` (and ``latest.pt`` when ``resumable``); its path."""
        final_eval = self.evaluate(bundle)
        if final_eval:
            self.last_eval = final_eval
            self.write({"env_steps": self.env_steps, "wall_time": self.wall_time(), **final_eval})
        return self.save(payload(), final=True, resumable=resumable)

    # ------------------------------------------------------------------------------ checkpoints

    def bundle(
        self,
        *,
        actor: torch.nn.Module,
        obs_norm: dict[str, Any],
        action_low: np.ndarray,
        action_high: np.ndarray,
        meta: dict[str, Any] | None = None,
    ) -> PolicyBundle:
        """The deterministic policy a trainer evaluates: ``actor`` with frozen ``obs_norm`` statistics."""
        env = self.config.env
        return PolicyBundle(
            actor=actor,
            obs_mean=obs_norm["mean"],
            obs_var=obs_norm["var"],
            obs_clip=obs_norm["clip"],
            action_low=action_low,
            action_high=action_high,
            env_id=env.id,
            env_kwargs=dict(env.kwargs),
            meta=dict(meta or {}),
            n_actions=int(getattr(actor, "n_actions", 0)),  # a categorical actor (Discrete actions)
        )

    def payload(
        self,
        *,
        actor: torch.nn.Module,
        obs_norm: dict[str, Any],
        action_low: np.ndarray,
        action_high: np.ndarray,
        meta: dict[str, Any],
        progress: dict[str, Any] | None = None,
        **state: Any,
    ) -> dict[str, Any]:
        """The checkpoint payload: the policy contract (docs/DESIGN.md §4), run bookkeeping, ``state``.

        Args:
            actor: the policy network (its ``spec()`` and CPU weights are stored).
            obs_norm: frozen observation statistics (``ObsNormalizer.export()``).
            action_low: ``(act_dim,)`` env action bounds.
            action_high: ``(act_dim,)``.
            meta: the trainer's meta entries (at least ``algo``); run dir, env steps, versions and
                the last evaluation are added here.
            progress: the trainer's extra progress counters (restored by the trainer).
            state: the trainer's own resume state (optimisers, critics, ...), stored as given.
        """
        cfg = self.config
        return {
            "actor_spec": actor.spec(),  # type: ignore[operator]
            "actor": {k: v.cpu() for k, v in actor.state_dict().items()},
            "obs_norm": obs_norm,
            "action_low": action_low,
            "action_high": action_high,
            "env_id": cfg.env.id,
            "env_kwargs": dict(cfg.env.kwargs),
            "meta": {
                **meta,
                "run_dir": str(self.dir.resolve()),
                "env_steps": self.env_steps,
                "versions": versions(),
                "eval": dict(self.last_eval),
            },
            "config": cfg.to_dict(),
            **state,
            "progress": {
                "env_steps": self.env_steps,
                **(progress or {}),
                "wall_time": self.wall_time(),
                "next_eval": self.next_eval,
                "next_checkpoint": self.next_checkpoint,
            },
            "rng": {
                "torch": self.torch_rng.get_state(),
                "torch_global": torch.get_rng_state(),
                "numpy": json.dumps(self.np_rng.bit_generator.state),
            },
        }

    def save(self, payload: dict[str, Any], final: bool = False, resumable: bool = True) -> Path:
        """Write ``payload`` as the next numbered checkpoint or as ``final.pt`` (``write_checkpoints``)."""
        run = self.config.run
        return write_checkpoints(self.dir, payload, self.env_steps, run.keep_checkpoints, final, resumable)

    def resume(self) -> dict[str, Any]:
        """Load ``checkpoints/latest.pt`` and restore the counters, schedules and RNG states.

        Returns:
            The checkpoint, for the trainer to restore its own state from.

        Raises:
            UserError: unreadable checkpoint, or one of another env.
        """
        data = load_checkpoint(self.dir / CHECKPOINT_DIR / LATEST_NAME)
        if data["env_id"] != self.config.env.id:
            raise UserError(
                f"cannot resume: checkpoint env '{data['env_id']}' differs from '{self.config.env.id}'"
            )
        progress = data["progress"]
        self.env_steps = int(progress["env_steps"])
        self._wall_offset = float(progress["wall_time"])
        self.next_eval = progress["next_eval"]
        self.next_checkpoint = int(progress["next_checkpoint"])
        rng = data["rng"]
        self.torch_rng.set_state(rng["torch"])
        torch.set_rng_state(rng["torch_global"])
        if "numpy" in rng:  # on-policy checkpoints before the shared scaffold had no NumPy RNG
            self.np_rng.bit_generator.state = json.loads(rng["numpy"])
        self.last_eval = dict(data["meta"].get("eval", {}))
        return data
