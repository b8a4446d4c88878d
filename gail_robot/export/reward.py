"""``gail-robot export-reward``: the learned reward of an AIRL or GAIL run as one TorchScript file.

What is exported (docs/DESIGN.md §5.2):

* **AIRL, state-only** (``airl.state_only: true``): ``r(obs) = g(s)``, the disentangled reward of
  Fu et al. 2018 (sec. 5), which is what transfers to changed dynamics (their sec. 7.2 re-optimises
  it). The shaping ``h`` is left out by default: it only adds ``gamma h(s') - h(s)``, which does not
  change the optimal policy of any dynamics (Ng et al. 1999); what ``h`` holds is a value of the
  training dynamics (at AIRL's optimum, the expert's value there).
  ``--shaping`` exports ``f = g + gamma h(s') - h(s)`` instead (``r(obs, action, next_obs)``, with
  ``potential(obs) = h(s)`` beside it): the same optimal policy, with that value as a dense guide for
  the learner.
* **AIRL, state-action**: ``r(obs, action, next_obs) = g(s, a)`` (``next_obs`` unused).
* **GAIL**: ``r(obs, action, next_obs)`` = the run's discriminator reward (``gail.reward``: softplus of
  the logit, ``-softplus(-logit)`` or the logit) on ``(s, a)`` or ``(s, s')``.

Observation normalisation (the run's final statistics), action normalisation (env units to
``[-1, 1]``, or one-hot for ``Discrete``) and the absorbing-flag column are inside the module; the
absorbing state's own reward goes into ``meta.json`` (``absorbing_reward``).
"""

# No ``from __future__ import annotations``: TorchScript evaluates the modules' annotations.
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gail_robot import core
from gail_robot.errors import UserError
from gail_robot.export.module import NormalizedObsModule, torchscript_calls
from gail_robot.nets import AIRLRewardNet, Discriminator, NetConfig
from gail_robot.policy_io import load_checkpoint, resolve_checkpoint, to_numpy_tree
from gail_robot.reward_io import REWARD_FORMAT, REWARD_FORMAT_VERSION, LearnedReward, demo_transitions
from gail_robot.versions import versions

#: how the network's output becomes the reward (``gail.reward`` kinds; ``g`` is AIRL's g as it is)
_OUTPUT_KINDS = {"g": 0, "airl": 0, "gail": 1, "neg": 2}


class ObsColumnsModule(NormalizedObsModule):
    """A reward module whose network sees only the observation columns ``obs_columns`` (default all)."""

    obs_columns: torch.Tensor

    def __init__(
        self, obs_mean: np.ndarray, obs_var: np.ndarray, obs_clip: float, obs_columns: np.ndarray | None
    ):
        super().__init__(obs_mean, obs_var, obs_clip)
        columns = np.arange(self.obs_dim) if obs_columns is None else np.asarray(obs_columns)
        self.register_buffer("obs_columns", torch.from_numpy(columns.astype(np.int64)))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """``normalise(obs)`` restricted to ``obs_columns``."""
        return self.normalize(obs).index_select(1, self.obs_columns)


class StateReward(ObsColumnsModule):
    """``r(obs)``: raw observations ``(B, obs_dim)`` -> ``g(normalise(obs)[columns] [, flag 0])`` ``(B,)``
    (``obs_columns``: all but ``airl.g_ignore_obs``)."""

    def __init__(
        self,
        net: nn.Module,
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        obs_clip: float,
        flag: int,
        obs_columns: np.ndarray | None = None,
    ):
        super().__init__(obs_mean, obs_var, obs_clip, obs_columns)
        self.net = net
        self.flag = int(flag)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        self.check_obs(obs)
        x = self.features(obs)
        x = torch.cat([x, torch.zeros(x.size(0), self.flag, dtype=x.dtype)], dim=1)
        return self.net(x).squeeze(-1)


class ShapedReward(NormalizedObsModule):
    """AIRL's ``f(s, a, s') = g(s[, a]) + gamma h(s') - h(s)`` ``(B,)`` from raw observations.

    ``g`` is a :class:`TransitionReward` (it normalises on its own); ``potential(obs)`` is ``h(s)``,
    exported so that a learner can replace ``h(s')`` by ``h(s_abs)`` on a terminated step
    (:class:`gail_robot.reward_io.LearnedReward`), as AIRL's own transitions into the absorbing state do.
    """

    def __init__(
        self,
        g: nn.Module,
        h: nn.Module,
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        obs_clip: float,
        flag: int,
        gamma: float,
    ):
        super().__init__(obs_mean, obs_var, obs_clip)
        self.g = g
        self.h = h
        self.flag = int(flag)
        self.gamma = float(gamma)

    @torch.jit.export
    def potential(self, obs: torch.Tensor) -> torch.Tensor:
        self.check_obs(obs)
        x = self.normalize(obs)
        x = torch.cat([x, torch.zeros(x.size(0), self.flag, dtype=x.dtype)], dim=1)
        return self.h(x).squeeze(-1)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return self.g(obs, action, next_obs) + self.gamma * self.potential(next_obs) - self.potential(obs)


class TransitionReward(ObsColumnsModule):
    """``r(obs, action, next_obs)`` ``(B,)`` from raw observations and env-unit actions.

    The network's input is ``normalise(obs)``, then the action in ``[-1, 1]`` units (clipped) or
    one-hot (``use_action``), then ``normalise(next_obs)`` (``use_next``), then ``flag`` zero columns;
    of each observation only the columns ``obs_columns`` (all but ``gail.disc_ignore_obs``) are kept;
    the output goes through ``output_kind`` (0 identity, 1 softplus, 2 ``-softplus(-x)``).
    """

    action_low: torch.Tensor
    action_range: torch.Tensor

    def __init__(
        self,
        net: nn.Module,
        obs_mean: np.ndarray,
        obs_var: np.ndarray,
        obs_clip: float,
        action_low: np.ndarray,
        action_high: np.ndarray,
        n_actions: int,
        use_action: bool,
        use_next: bool,
        flag: int,
        output_kind: int,
        obs_columns: np.ndarray | None = None,
    ):
        super().__init__(obs_mean, obs_var, obs_clip, obs_columns)
        self.net = net
        self.n_actions = int(n_actions)
        self.use_action = bool(use_action)
        self.use_next = bool(use_next)
        self.flag = int(flag)
        self.output_kind = int(output_kind)
        low = np.asarray(action_low, dtype=np.float32)
        self.register_buffer("action_low", torch.from_numpy(low.copy()))
        self.register_buffer("action_range", torch.from_numpy(np.asarray(action_high, np.float32) - low))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        if obs.dim() != 2 or obs.size(1) != self.obs_dim or next_obs.shape != obs.shape:
            raise ValueError(
                f"expected obs and next_obs of shape (B, {self.obs_dim}), got {list(obs.shape)}, "
                f"{list(next_obs.shape)}"
            )
        parts = [self.features(obs)]
        if self.use_action:
            if self.n_actions > 0:
                parts.append(F.one_hot(action.to(torch.int64), self.n_actions).to(torch.float32))
            else:
                a = 2.0 * (action.to(torch.float32) - self.action_low) / self.action_range - 1.0
                parts.append(torch.clamp(a, -1.0, 1.0))
        if self.use_next:
            parts.append(self.features(next_obs))
        parts.append(torch.zeros(obs.size(0), self.flag, dtype=torch.float32))
        out = self.net(torch.cat(parts, dim=1)).squeeze(-1)
        if self.output_kind == 1:
            return F.softplus(out)
        if self.output_kind == 2:
            return -F.softplus(-out)
        return out


def _frozen(module: nn.Module) -> nn.Module:
    module.eval()
    for param in module.parameters():
        param.requires_grad_(False)
    return module


def build_reward(
    data: dict[str, Any], source: str, shaping: bool = False
) -> tuple[nn.Module, dict[str, Any]]:
    """The eager reward module of a checkpoint and its ``meta.json`` entries.

    ``shaping``: an AIRL run's whole ``f`` (:class:`ShapedReward`) instead of ``g``; with absorbing
    states ``meta["absorbing_potential"]`` is ``h(s_abs)`` and ``absorbing_reward`` is
    ``f(s_abs, -, s_abs) = g(s_abs) + (gamma - 1) h(s_abs)``.

    Raises:
        UserError: the run is not an AIRL or GAIL run (BC, PPO, SAC have no learned reward);
            ``shaping`` for a GAIL run (its discriminator has no potential).
    """
    meta_in = data.get("meta", {})
    algo = meta_in.get("algo")
    config = data.get("config") or {}
    if algo not in ("airl", "gail") or not data.get(algo):
        raise UserError(
            f"{source} is a{'n' if str(algo)[:1] in 'aeiou' else ''} {algo} run: only airl and gail runs "
            "have a learned reward to export"
        )
    if shaping and algo != "airl":
        raise UserError(f"{source} is a gail run: --shaping exports AIRL's h, which only airl runs have")
    spec = data["actor_spec"]
    obs_dim = int(spec["obs_dim"])
    n_actions = int(spec.get("n_actions", 0) or 0)
    act_dim = n_actions if n_actions else int(spec["act_dim"])
    norm = to_numpy_tree(data["obs_norm"])
    mean = np.asarray(norm["mean"], np.float64)
    var = np.asarray(norm["var"], np.float64)
    clip = float(norm["clip"])
    low = np.asarray(data["action_low"], np.float32)
    high = np.asarray(data["action_high"], np.float32)
    gail_cfg = config["gail"]
    net_config = NetConfig(list(gail_cfg["hidden_sizes"]), gail_cfg["activation"])
    gamma = float(config["rollout"]["gamma"])
    module: nn.Module
    described: dict[str, Any]
    if algo == "airl":
        airl_cfg = config["airl"]
        flag = 1 if airl_cfg["absorbing"] else 0
        state_only = bool(airl_cfg["state_only"])
        # checkpoints from before airl.g_ignore_obs have no "g_obs_columns": the whole observation
        columns = np.asarray(data["airl"].get("g_obs_columns", range(obs_dim)), dtype=np.int64)
        g_dim = len(columns) + (0 if state_only else act_dim) + flag
        net = AIRLRewardNet(g_dim, obs_dim + flag, gamma, net_config)
        net.load_state_dict(data["airl"]["reward_net"])
        g = _frozen(net.g)
        if shaping:
            g_only = TransitionReward(
                g, mean, var, clip, low, high, n_actions, not state_only, False, flag, 0, columns
            )
            module = ShapedReward(g_only, _frozen(net.h), mean, var, clip, flag, gamma)
        elif state_only:
            module = StateReward(g, mean, var, clip, flag, columns)
        else:
            module = TransitionReward(g, mean, var, clip, low, high, n_actions, True, False, flag, 0, columns)
        absorbing = None
        shaping_meta: dict[str, Any] = {}
        if flag:
            abs_in = torch.zeros(1, g_dim)
            abs_in[0, -1] = 1.0
            with torch.no_grad():
                absorbing = float(g(abs_in)[0, 0])
            if shaping:
                h_abs = torch.zeros(1, obs_dim + flag)
                h_abs[0, -1] = 1.0
                with torch.no_grad():
                    potential = float(net.h(h_abs)[0, 0])
                # f(s_abs, -, s_abs) = g(s_abs) + (gamma - 1) h(s_abs): AIRL's absorbing transition
                shaping_meta = {"absorbing_g": absorbing, "absorbing_potential": potential}
                absorbing = absorbing + (gamma - 1.0) * potential
        g_name = "g(s)" if state_only else "g(s, a)"
        described = {
            "term": "f" if shaping else "g",
            "reward": (
                f"AIRL f = {g_name} + gamma h(s') - h(s), the disentangled reward with its shaping"
                if shaping
                else ("AIRL g(s), the disentangled reward" if state_only else "AIRL g(s, a)")
            ),
            "state_only": state_only,
            "g_obs_columns": columns.tolist(),
            "shaped": shaping,
            **shaping_meta,
        }
    else:
        flag = 1 if gail_cfg["absorbing"] else 0
        use_action = gail_cfg["disc_input"] == "sa"
        kind = str(meta_in.get("reward_kind") or "gail")
        # checkpoints from before gail.disc_ignore_obs have no "obs_columns": the whole observation
        columns = np.asarray(data["gail"].get("obs_columns", range(obs_dim)), dtype=np.int64)
        seen = len(columns)
        in_dim = seen + (act_dim if use_action else seen) + flag
        disc = Discriminator(in_dim, net_config)
        disc.load_state_dict(data["gail"]["disc"])
        disc_net = _frozen(disc.net)
        module = TransitionReward(
            disc_net,
            mean,
            var,
            clip,
            low,
            high,
            n_actions,
            use_action,
            not use_action,
            flag,
            _OUTPUT_KINDS[kind],
            columns,
        )
        absorbing = None
        if flag:
            abs_in = torch.zeros(1, in_dim)
            abs_in[0, -1] = 1.0
            with torch.no_grad():
                logit = disc_net(abs_in)[0].numpy().astype(np.float32)
            absorbing = float(core.disc_rewards(logit, kind)[0])
        pair = "(s, a)" if use_action else "(s, s')"
        described = {
            "term": kind,
            "reward": f"GAIL discriminator reward '{kind}' on {pair}",
            "disc_obs_columns": columns.tolist(),
        }
    inputs = "obs" if isinstance(module, StateReward) else "obs_action_next_obs"
    meta = {
        "format": REWARD_FORMAT,
        # a shaped file needs a reader that corrects terminated steps (reward_io): older ones refuse it
        "format_version": REWARD_FORMAT_VERSION if shaping else 1,
        "inputs": inputs,
        **described,
        "algo": algo,
        "env_id": data["env_id"],
        "env_kwargs": data.get("env_kwargs", {}),
        "obs_dim": obs_dim,
        "action_space": f"Discrete({n_actions})" if n_actions else f"Box({act_dim},)",
        "n_actions": n_actions,
        "action_low": low.tolist(),
        "action_high": high.tolist(),
        "obs_mean": mean.tolist(),
        "obs_var": var.tolist(),
        "obs_clip": clip,
        "gamma": gamma,
        "absorbing_reward": absorbing,
        "source": source,
        "env_steps": meta_in.get("env_steps"),
        "versions": versions(),
    }
    return module.eval(), meta


#: what ``absorbing_reward`` in ``meta.json`` is (``export-reward --absorbing``; docs/DESIGN.md §5.2)
ABSORBING_RULES = ("learned", "demo-min")


def demo_min_reward(module: nn.Module, meta: dict[str, Any], demos: str | Path) -> float:
    """The lowest reward ``module`` pays on any transition of the demo file ``demos``.

    Raises:
        UserError: the demos' observations are not the reward's width.
    """
    reward = LearnedReward(module, meta, Path(str(meta["source"])))
    lowest = np.inf
    for obs, actions, next_obs in demo_transitions(demos):
        if obs.shape[1] != meta["obs_dim"]:
            raise UserError(
                f"{demos} has {obs.shape[1]}-dim observations; the reward takes {meta['obs_dim']}"
            )
        lowest = min(lowest, float(reward(obs, actions, next_obs).min()))
    if not np.isfinite(lowest):
        raise UserError(f"{demos} has no transitions")
    return lowest


def export_reward(
    source: str | Path,
    out: str | Path,
    absorbing: str = "learned",
    demos: str | Path | None = None,
    shaping: bool = False,
) -> dict[str, Any]:
    """Write the reward file of run/checkpoint ``source`` to ``out``; returns its meta.

    ``absorbing`` says what ``meta["absorbing_reward"]`` is: ``learned``, the reward network's value
    at the absorbing state, or ``demo-min``, the lowest reward of any transition of ``demos`` (default:
    the run's own ``gail.demos``), so that a learner on the file is never paid to fall more than the
    expert is paid anywhere (docs/DESIGN.md §5.2); the learned value is kept as
    ``absorbing_reward_learned``. ``shaping`` exports AIRL's whole ``f`` (:func:`build_reward`); with
    ``demo-min`` it is ``g(s_abs)`` that becomes the demos' lowest ``g``, and the absorbing transition's
    ``f`` follows from it. The scripted module is compared with the eager one on a probe batch before
    it is written.

    Raises:
        UserError: not an AIRL/GAIL run; ``shaping`` for a GAIL run; ``demo-min`` for a run without
            absorbing states or without a demo file.
    """
    if absorbing not in ABSORBING_RULES:
        raise UserError(f"--absorbing must be one of {', '.join(ABSORBING_RULES)}, not {absorbing!r}")
    file = resolve_checkpoint(source)
    data = load_checkpoint(file)
    module, meta = build_reward(data, str(source), shaping)
    meta["absorbing_rule"] = absorbing
    if absorbing == "demo-min":
        if meta["absorbing_reward"] is None:
            raise UserError(
                f"{source} has no absorbing state (airl.absorbing / gail.absorbing off): "
                "--absorbing demo-min does not apply"
            )
        demos = demos or (data.get("config") or {}).get("gail", {}).get("demos")
        if not demos:
            raise UserError(f"{source} names no demo file: give --demos FILE for --absorbing demo-min")
        meta["absorbing_reward_learned"] = meta["absorbing_reward"]
        if shaping:
            g_module, g_meta = build_reward(data, str(source))
            meta["absorbing_g"] = demo_min_reward(g_module, g_meta, demos)
            meta["absorbing_reward"] = (
                meta["absorbing_g"] + (meta["gamma"] - 1.0) * meta["absorbing_potential"]
            )
        else:
            meta["absorbing_reward"] = demo_min_reward(module, meta, demos)
        meta["absorbing_demos"] = str(demos)
    with torchscript_calls():
        scripted = torch.jit.script(module)
    probe = torch.randn(64, meta["obs_dim"], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if meta["inputs"] == "obs":
            expected, got = module(probe), scripted(probe)
        else:
            if meta["n_actions"]:
                action = torch.randint(
                    0, meta["n_actions"], (64,), generator=torch.Generator().manual_seed(1)
                )
            else:
                low = torch.tensor(meta["action_low"])
                high = torch.tensor(meta["action_high"])
                action = low + torch.rand(64, low.numel(), generator=torch.Generator().manual_seed(1)) * (
                    high - low
                )
            expected, got = module(probe, action, probe + 0.1), scripted(probe, action, probe + 0.1)
            if shaping:
                assert isinstance(module, ShapedReward)
                expected = torch.cat([expected, module.potential(probe)])
                got = torch.cat([got, scripted.potential(probe)])
    if not torch.equal(expected, got):
        raise RuntimeError("the scripted reward module differs from the eager one")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with torchscript_calls():
        torch.jit.save(scripted, str(tmp), _extra_files={"meta.json": json.dumps(meta, indent=1)})
    tmp.replace(out)
    return meta
