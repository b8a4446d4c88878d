"""Behaviour cloning: maximum likelihood on expert pairs, validation split, early stopping.

The likelihood is the actor's own: Gaussian for continuous actions, categorical for ``Discrete``
ones, where the negative log-likelihood is the cross-entropy of the expert's action indices.

The result is an ordinary checkpoint (actor + observation statistics of the demos), so it can be
evaluated, exported, or used to warm-start GAIL / PPO / TRPO with ``--init-from``.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gail_robot.algos.config import TrainConfig, actor_ignored_obs
from gail_robot.algos.demos import (
    LabelledEpisode,
    concatenate,
    iwr_weights,
    load_labelled_episodes,
    normalize_actions,
    person_driven,
)
from gail_robot.algos.run import Run
from gail_robot.data import Transitions
from gail_robot.envs.make import make_env, policy_actions
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.errors import UserError
from gail_robot.nets import NetConfig, OnPolicyActor, adam, make_policy_actor, mask_actor_inputs
from gail_robot.policy_io import PolicyBundle

BC_LOSSES = ("nll", "mse")
"""``bc.loss``: Gaussian / categorical negative log-likelihood, or squared error of the mean action."""


def split_episodes(
    episodes: list[Transitions], valid_fraction: float, rng: np.random.Generator
) -> tuple[Transitions, Transitions | None]:
    """Hold out whole episodes (consecutive pairs are correlated); with one demo, split its pairs."""
    flags = [np.zeros(len(e), bool) for e in episodes]
    train, valid, _, _ = split_flagged(episodes, flags, valid_fraction, rng)
    return train, valid


def split_flagged(
    episodes: list[Transitions], flags: list[np.ndarray], valid_fraction: float, rng: np.random.Generator
) -> tuple[Transitions, Transitions | None, np.ndarray, np.ndarray | None]:
    """:func:`split_episodes` carrying a per-step flag array along: ``(train, valid, train_flags,
    valid_flags)``."""
    if valid_fraction <= 0:
        return concatenate(episodes), None, np.concatenate(flags), None
    if len(episodes) >= 2:
        n_valid = min(len(episodes) - 1, max(1, round(valid_fraction * len(episodes))))
        order = rng.permutation(len(episodes))
        v, t = sorted(order[:n_valid]), sorted(order[n_valid:])
        return (
            concatenate([episodes[i] for i in t]),
            concatenate([episodes[i] for i in v]),
            np.concatenate([flags[i] for i in t]),
            np.concatenate([flags[i] for i in v]),
        )
    data, flag = episodes[0], flags[0]
    n_valid = max(1, round(valid_fraction * len(data)))
    if n_valid >= len(data):
        return data, None, flag, None
    order = rng.permutation(len(data))
    t_idx, v_idx = np.sort(order[n_valid:]), np.sort(order[:n_valid])
    return data.index(t_idx), data.index(v_idx), flag[t_idx], flag[v_idx]


def training_steps(
    episodes: list[LabelledEpisode], intervention_weighting: bool
) -> tuple[list[Transitions], list[np.ndarray]]:
    """The steps BC trains on and their intervention flags (``bc.intervention_weighting``).

    Ordinary demos: every step (flag False). Intervention recordings: HG-DAgger (weighting off) keeps
    the intervention steps only, the person's labels (Kelly et al. 2019); IWR (weighting on) keeps
    every step, flagged for :func:`~gail_robot.algos.demos.iwr_weights`. Episodes left empty are dropped.
    """
    pairs, flags = [], []
    for episode in episodes:
        if episode.interventions is None:
            pairs.append(episode.pairs)
            flags.append(np.zeros(len(episode.pairs), bool))
        elif intervention_weighting:
            pairs.append(episode.pairs)
            flags.append(episode.interventions.copy())
        elif episode.interventions.any():
            taken = person_driven(episode)
            pairs.append(taken)
            flags.append(np.ones(len(taken), bool))
    return pairs, flags


def fit_bc(
    actor: OnPolicyActor,
    obs: np.ndarray,
    actions: np.ndarray,
    valid_obs: np.ndarray | None,
    valid_actions: np.ndarray | None,
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    max_epochs: int = 200,
    patience: int = 10,
    seed: int = 0,
    on_epoch: Any = None,
    weights: np.ndarray | None = None,
    valid_weights: np.ndarray | None = None,
    loss: str = "nll",
    ignore_obs: np.ndarray | None = None,
) -> dict[str, float]:
    """Fit the actor to ``actions`` given ``obs`` (both already normalised), with early stopping.

    ``loss="nll"``: maximise the (weighted) log-likelihood; Gaussian actor: the Gaussian
    log-likelihood, categorical actor: minus the cross-entropy. ``loss="mse"`` (Gaussian actor only):
    minimise the (weighted) squared error of the mean action, averaged over the action dimensions; the
    log-std is left as it is. Early stopping and "best" use the same quantity on the held-out pairs.

    Args:
        actor: the policy; trained in place and left at its best validation epoch.
        obs: ``(M, obs_dim) float32`` normalised observations.
        actions: ``(M, act_dim) float32`` actions in ``[-1, 1]`` units, or ``(M,) int64`` indices.
        valid_obs: held-out observations, or None (then the training loss decides "best").
        valid_actions: held-out actions, or None.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        batch_size: minibatch size.
        max_epochs: upper bound on epochs.
        patience: stop after this many epochs without improvement.
        seed: minibatch shuffling seed.
        on_epoch: optional callback ``(epoch, metrics dict) -> None``.
        weights: ``(M,)`` per-pair loss weights (IWR), or None (all 1): the minibatch loss is
            ``-mean(w * log pi(a | s))``.
        valid_weights: the same for the held-out pairs (their NLL is weighted alike).
        loss: ``"nll"`` or ``"mse"`` (see above).
        ignore_obs: observation indices the actor must not read (``bc.ignore_obs``): the first linear
            layer's weights from them are zeroed and their gradients masked, so they stay zero.

    Returns:
        Metrics of the best epoch: ``epoch``, ``train_nll`` (``train_mse`` with ``loss="mse"``),
        ``valid_nll`` and ``valid_mse`` (continuous) or ``valid_accuracy`` (discrete: the fraction of
        held-out pairs whose argmax is the expert's).

    Raises:
        ValueError: an unknown ``loss``, or ``"mse"`` with integer (``Discrete``) actions.
    """
    if loss not in BC_LOSSES:
        raise ValueError(f"loss must be one of {', '.join(BC_LOSSES)}, got {loss!r}")
    if loss == "mse" and actions.dtype == np.int64:
        raise ValueError("loss 'mse' needs continuous actions; Discrete actions use 'nll'")
    torch_rng = torch.Generator().manual_seed(seed)
    hook = mask_actor_inputs(actor, ignore_obs) if ignore_obs is not None else None
    optimizer = adam(actor.parameters(), lr=lr, weight_decay=weight_decay)
    x, y = torch.from_numpy(obs), torch.from_numpy(actions)
    vx = torch.from_numpy(valid_obs) if valid_obs is not None else None
    vy = torch.from_numpy(valid_actions) if valid_actions is not None else None
    w = torch.from_numpy(np.asarray(weights, np.float32)) if weights is not None else None
    vw = torch.from_numpy(np.asarray(valid_weights, np.float32)) if valid_weights is not None else None
    best: dict[str, float] = {}
    best_score, best_state, stale = float("inf"), copy.deepcopy(actor.state_dict()), 0
    for epoch in range(1, max_epochs + 1):
        order = torch.randperm(len(x), generator=torch_rng)
        losses = []
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            if loss == "mse":
                per_pair = ((actor(x[idx]) - y[idx]) ** 2).mean(-1)
            else:
                per_pair = -actor.log_prob(x[idx], y[idx])
            batch_loss = (per_pair * w[idx]).mean() if w is not None else per_pair.mean()
            optimizer.zero_grad(set_to_none=True)
            batch_loss.backward()
            optimizer.step()
            losses.append(batch_loss.item() * len(idx))
        metrics = {"epoch": float(epoch), f"train_{loss}": float(np.sum(losses) / len(x))}
        if vx is not None and vy is not None:
            with torch.no_grad():
                valid_lp = actor.log_prob(vx, vy)
                metrics["valid_nll"] = -(valid_lp * vw if vw is not None else valid_lp).mean().item()
                if vy.dtype == torch.int64:
                    metrics["valid_accuracy"] = (actor(vx).argmax(-1) == vy).float().mean().item()
                else:
                    valid_se = ((actor(vx).clamp(-1, 1) - vy) ** 2).mean(-1)
                    metrics["valid_mse"] = (valid_se * vw if vw is not None else valid_se).mean().item()
        score = metrics.get(f"valid_{loss}", metrics[f"train_{loss}"])
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        if score < best_score - 1e-6:
            best_score, best_state, best, stale = score, copy.deepcopy(actor.state_dict()), metrics, 0
        else:
            stale += 1
            if stale >= patience:
                break
    actor.load_state_dict(best_state)
    if hook is not None:
        hook.remove()
    return best


def train_bc(config: TrainConfig, run_dir: str | Path) -> Path:
    """Train BC as configured, write the run directory and return the final checkpoint's path.

    The run cannot be resumed (it is short): it writes ``final.pt`` only, no ``latest.pt``.
    """
    cfg = config
    if not cfg.bc.demos:
        raise UserError("--algo bc needs demos: --demos FILE (or bc.demos in the config)")
    run = Run(cfg, run_dir)
    labelled = load_labelled_episodes(
        cfg.bc.demos, cfg.env.id, cfg.env.kwargs, mask=cfg.bc.demo_mask, max_demos=cfg.bc.max_demos
    )
    episodes, flags = training_steps(labelled, cfg.bc.intervention_weighting)
    if not episodes:
        raise UserError("no steps to train on: the intervention recordings hold no intervention steps")
    probe = make_env(cfg.env.id, cfg.env.kwargs)
    actions = policy_actions(probe)
    low, high = actions.low, actions.high
    probe.close()
    if actions.discrete and cfg.bc.loss == "mse":
        raise UserError("bc.loss=mse needs continuous actions; Discrete actions train with bc.loss=nll")
    train, valid, train_flags, valid_flags = split_flagged(episodes, flags, cfg.bc.valid_fraction, run.np_rng)
    weights = valid_weights = None
    if cfg.bc.intervention_weighting:  # IWR: the training split's class sizes set the weights
        weights = iwr_weights(train_flags)
        if valid_flags is not None:
            valid_weights = iwr_weights(valid_flags)
    obs_dim = train.obs.shape[1]
    normalizer = ObsNormalizer(obs_dim, cfg.env.obs_clip, cfg.env.normalize_obs)
    normalizer.update(train.obs)
    net = NetConfig(list(cfg.policy.hidden_sizes), cfg.policy.activation)
    actor = make_policy_actor(obs_dim, actions.act_dim, actions.n_actions, net, cfg.policy.init_log_std)

    def targets(data: Transitions) -> np.ndarray:
        """Expert actions as the actor models them: ``[-1, 1]`` units, or the indices themselves."""
        return data.actions if actions.discrete else normalize_actions(data.actions, low, high)

    def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
        run.progress(epoch, {k: f"{v:.3f}" for k, v in metrics.items() if k != "epoch"})
        run.write({"env_steps": 0, "epoch": epoch, "wall_time": run.wall_time(), **metrics})

    with run.session(f"bc {cfg.env.id}", total=cfg.bc.max_epochs, unit="epoch"):
        best = fit_bc(
            actor,
            normalizer(train.obs),
            targets(train),
            normalizer(valid.obs) if valid is not None else None,
            targets(valid) if valid is not None else None,
            lr=cfg.bc.lr,
            weight_decay=cfg.bc.weight_decay,
            batch_size=cfg.bc.batch_size,
            max_epochs=cfg.bc.max_epochs,
            patience=cfg.bc.patience,
            seed=cfg.run.seed,
            on_epoch=on_epoch,
            weights=weights,
            valid_weights=valid_weights,
            loss=cfg.bc.loss,
            ignore_obs=actor_ignored_obs(cfg, obs_dim, include_bc=True),
        )
        norm = normalizer.export()

        def bundle() -> PolicyBundle:
            return run.bundle(actor=actor, obs_norm=norm, action_low=low, action_high=high)

        def payload() -> dict[str, Any]:
            return run.payload(
                actor=actor,
                obs_norm=norm,
                action_low=low,
                action_high=high,
                meta={
                    "algo": "bc",
                    "num_demos": len(episodes),
                    "train_pairs": len(train),
                    "intervention_pairs": int(train_flags.sum()),
                    "intervention_weighting": cfg.bc.intervention_weighting,
                    "best": best,
                },
                normalizer=normalizer.state_dict(),
            )

        return run.finish(bundle, payload, resumable=False)


#: ``init_from: bc``: the run first trains its own BC warm start, in this subdirectory of the run.
BC_WARM_START_DIR = "init_bc"


def init_source(init_from: str, run_dir: str | Path) -> str:
    """The checkpoint or run a warm start copies: ``RUN/init_bc`` for ``init_from: bc``, else the value."""
    return str(Path(run_dir) / BC_WARM_START_DIR) if init_from == "bc" else init_from


def train_bc_warm_start(config: TrainConfig, run_dir: str | Path) -> Path:
    """``init_from: bc``: BC with this config's ``bc`` section and seed into ``RUN/init_bc``.

    One setting gives every run of a sweep (every seed) its own BC + GAIL pipeline; the BC run is
    an ordinary run directory (its evaluation included), reused when it has finished already.
    """
    if config.algo not in ("gail", "airl", "ppo", "trpo"):
        raise UserError(f"init_from: bc warm-starts gail, airl, ppo or trpo, not --algo {config.algo}")
    out = Path(run_dir) / BC_WARM_START_DIR
    if (out / "final.pt").is_file():
        return out / "final.pt"
    demos = config.bc.demos or config.gail.demos
    bc = dataclasses.replace(config.bc, demos=demos)
    return train_bc(dataclasses.replace(config, algo="bc", init_from=None, reward=None, bc=bc), out)
