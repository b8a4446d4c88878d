"""AIRL (Fu et al. 2018): f and D on hand-computed cases, the generator's reward f - log pi, absorbing
states, the expert's log pi under the current policy, state round trip, exact resume, configs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import one_line_error, run_cli
from test_train_cli import ENV, TINY, record_demos

from gail_robot.algos.airl import AIRL, AIRLInputs, airl_logits
from gail_robot.algos.config import AIRLConfig, GAILConfig
from gail_robot.algos.rollout import RolloutBuffer
from gail_robot.data import Transitions
from gail_robot.envs.wrappers import ObsNormalizer
from gail_robot.errors import UserError
from gail_robot.nets import CategoricalActor, GaussianActor, NetConfig

GAMMA = 0.9
OBS = 2
LOW, HIGH = np.array([-2.0], np.float32), np.array([2.0], np.float32)


def _expert(n: int = 8) -> Transitions:
    rng = np.random.default_rng(0)
    obs = rng.normal(1.0, 1.0, size=(n, OBS)).astype(np.float32)
    return Transitions(
        obs=obs,
        actions=np.full((n, 1), 1.0, np.float32),  # env units: +0.5 in [-1, 1] units
        next_obs=obs + 0.1,
        terminated=(np.arange(n) % 4) == 3,
    )


def _airl(
    absorbing: bool = True,
    state_only: bool = True,
    entropy_weight: float = 1.0,
    absorbing_log_pi: str = "zero",
    **gail: object,
) -> AIRL:
    actor = GaussianActor(OBS, 1, NetConfig([8]))
    return AIRL(
        GAILConfig(hidden_sizes=[8], batch_size=8, **gail),  # type: ignore[arg-type]
        AIRLConfig(
            state_only=state_only,
            absorbing=absorbing,
            entropy_weight=entropy_weight,
            absorbing_log_pi=absorbing_log_pi,
        ),
        _expert(),
        ObsNormalizer(OBS),  # mean 0, var 1: normalisation is the identity up to 1e-8
        actor,
        LOW,
        HIGH,
        GAMMA,
        torch.Generator().manual_seed(0),
    )


def _linear(net: torch.nn.Module, weights: list[float], bias: float) -> torch.nn.Linear:
    layer = torch.nn.Linear(len(weights), 1)
    with torch.no_grad():
        layer.weight[:] = torch.tensor([weights])
        layer.bias[:] = bias
    return layer


def _hand_airl(absorbing: bool, entropy_weight: float = 1.0, absorbing_log_pi: str = "zero") -> AIRL:
    """g(s) = s0 + 2 s1 (+ 10 flag) + 0.5 and h(s) = 3 s0 - s1 (+ 4 flag): f by hand."""
    airl = _airl(absorbing=absorbing, entropy_weight=entropy_weight, absorbing_log_pi=absorbing_log_pi)
    flag = [10.0] if absorbing else []
    airl.net.g = torch.nn.Sequential(_linear(airl.net, [1.0, 2.0, *flag], 0.5))
    airl.net.h = torch.nn.Sequential(_linear(airl.net, [3.0, -1.0, *([4.0] if absorbing else [])], 0.0))
    return airl


def _hand_buffer() -> RolloutBuffer:
    """Two steps of one env: s=(1,1) -> s'=(2,0), log pi -1; s=(0,1) terminates (s'=(5,5)), log pi 0.5."""
    buf = RolloutBuffer.empty(2, 1, OBS, 1)
    buf.obs_raw[:, 0] = [[1.0, 1.0], [0.0, 1.0]]
    buf.next_obs_raw[:, 0] = [[2.0, 0.0], [5.0, 5.0]]
    buf.terminated[1, 0] = True
    buf.log_probs[:, 0] = [-1.0, 0.5]
    return buf


def test_f_d_and_reward_by_hand_with_absorbing_states():
    airl = _hand_airl(absorbing=True)
    buf = _hand_buffer()
    bootstrap = airl.relabel(buf)
    # step 0: g = 1 + 2 + 0.5 = 3.5, h(s') = 6, h(s) = 2: f = 3.5 + 0.9 * 6 - 2 = 6.9; reward f - log pi = 7.9
    # step 1 terminates: s' is the absorbing state, h(s_abs) = 4; g = 2.5, h(s) = -1: f = 2.5 + 3.6 + 1 = 7.1
    np.testing.assert_allclose(buf.rewards[:, 0], [6.9 + 1.0, 7.1 - 0.5], rtol=1e-5)
    # the absorbing state: g = 10.5, f = 10.5 + 0.9 * 4 - 4 = 10.1, log pi = 0: value 10.1 / (1 - 0.9)
    assert airl.absorbing_reward() == pytest.approx(10.1, rel=1e-5)
    assert bootstrap is not None
    np.testing.assert_allclose(bootstrap, 101.0, rtol=1e-5)
    # D = exp f / (exp f + pi) is the sigmoid of the logit f - log pi
    x = airl.inputs(
        Transitions(
            buf.obs_raw[:, 0], np.zeros((2, 1), np.float32), buf.next_obs_raw[:, 0], buf.terminated[:, 0]
        ),
        buf.log_probs[:, 0],
    )
    with torch.no_grad():
        logits = airl_logits(airl.net, x)
    assert len(x) == 3  # two transitions + the absorbing one
    d = math.exp(6.9) / (math.exp(6.9) + math.exp(-1.0))
    assert torch.sigmoid(logits[0]).item() == pytest.approx(d, rel=1e-5)


def test_entropy_weight_scales_only_the_generators_log_pi_term():
    airl = _hand_airl(absorbing=True, entropy_weight=0.1)
    buf = _hand_buffer()
    bootstrap = airl.relabel(buf)
    # f as in the case above (6.9 and 7.1), minus 0.1 log pi: 6.9 + 0.1 and 7.1 - 0.05
    np.testing.assert_allclose(buf.rewards[:, 0], [7.0, 7.05], rtol=1e-5)
    # the absorbing state's action has log pi = 0: its value does not depend on the weight
    assert bootstrap is not None
    np.testing.assert_allclose(bootstrap, 101.0, rtol=1e-5)
    with pytest.raises(UserError, match=r"airl.entropy_weight must be in \[0, 1\]"):
        AIRLConfig(entropy_weight=1.5)


@pytest.mark.parametrize("entropy_weight", [1.0, 0.1])
def test_absorbing_log_pi_policy_mean_puts_the_rounds_mean_log_pi_on_the_absorbing_action(entropy_weight):
    airl = _hand_airl(absorbing=True, entropy_weight=entropy_weight, absorbing_log_pi="policy_mean")
    buf = _hand_buffer()  # log pi -1 and 0.5: mean -0.25
    bootstrap = airl.relabel(buf)
    # the living steps are paid as with log pi_abs = 0 (f 6.9 and 7.1, minus beta log pi)
    np.testing.assert_allclose(
        buf.rewards[:, 0], [6.9 + entropy_weight, 7.1 - 0.5 * entropy_weight], rtol=1e-5
    )
    # the absorbing state: f = 10.1 as above, generator reward f - beta * (-0.25)
    assert airl.absorbing_log_pi == pytest.approx(-0.25)
    assert airl.absorbing_reward() == pytest.approx(10.1 + 0.25 * entropy_weight, rel=1e-5)
    assert bootstrap is not None
    np.testing.assert_allclose(bootstrap, (10.1 + 0.25 * entropy_weight) / 0.1, rtol=1e-5)
    # D's logit on the absorbing transition is f - log pi_abs = 10.35, whatever beta
    x = airl.inputs(
        Transitions(
            buf.obs_raw[:, 0], np.zeros((2, 1), np.float32), buf.next_obs_raw[:, 0], buf.terminated[:, 0]
        ),
        buf.log_probs[:, 0],
    )
    with torch.no_grad():
        logits = airl_logits(airl.net, x)
    assert logits[2].item() == pytest.approx(10.35, rel=1e-5)
    with pytest.raises(UserError, match=r"airl\.absorbing_log_pi must be zero or policy_mean"):
        AIRLConfig(absorbing_log_pi="one")


def test_cap_absorbing_reward_pays_a_fall_at_most_the_experts_lowest_reward():
    airl = _hand_airl(absorbing=True, entropy_weight=0.1)
    airl.airl.cap_absorbing_reward = True
    e = airl.expert
    # the expert's f - beta log pi by hand: g = s0 + 2 s1 + 0.5, h = 3 s0 - s1, h(s_abs) = 4 on terminating
    h_next = np.where(e.terminated, 4.0, 3 * e.next_obs[:, 0] - e.next_obs[:, 1])
    f = e.obs[:, 0] + 2 * e.obs[:, 1] + 0.5 + GAMMA * h_next - (3 * e.obs[:, 0] - e.obs[:, 1])
    lowest = float((f - 0.1 * airl.expert_log_pi()).min())
    assert lowest < 10.1  # below the learned absorbing reward (f = 10.1, log pi 0): the cap binds
    assert airl.expert_min_reward() == pytest.approx(lowest, rel=1e-4)
    bootstrap = airl.relabel(_hand_buffer())
    assert airl.absorbing_reward() == pytest.approx(lowest, rel=1e-4)
    assert bootstrap is not None
    np.testing.assert_allclose(bootstrap, lowest / (1 - GAMMA), rtol=1e-4)
    # a learned absorbing reward already below the expert's lowest is kept
    with torch.no_grad():
        airl.net.g[0].bias -= 100.0  # every g, the absorbing state's included, drops by 100
        airl.net.g[0].weight[0, 2] -= 1000.0  # and the absorbing state's by 1000 more
    assert airl.absorbing_reward() == pytest.approx(10.1 - 1100.0, rel=1e-4)


def test_f_without_absorbing_states_drops_the_terminal_potential():
    airl = _hand_airl(absorbing=False)
    buf = _hand_buffer()
    assert airl.relabel(buf) is None
    # step 1: f = g(s) - h(s) = 2.5 + 1 = 3.5 (no gamma h(s') after a termination)
    np.testing.assert_allclose(buf.rewards[:, 0], [7.9, 3.5 - 0.5], rtol=1e-5)


def test_absorbing_transitions_and_their_weights():
    airl = _airl(absorbing=True, demo_subsample=4)
    x = airl._expert_inputs()
    # 8 pairs, then one absorbing transition per terminated pair (2): zeros, flag 1, log pi 0
    assert len(x) == 10 and x.g_in.shape == (10, OBS + 1)
    assert torch.all(x.g_in[:8, -1] == 0) and torch.all(x.g_in[8:, -1] == 1)
    assert torch.all(x.next_h_in[8:, :-1] == 0) and torch.all(x.log_pi[8:] == 0)
    # a terminated pair's successor is the absorbing state, the others' their next observation
    terminated = torch.from_numpy(airl.expert.terminated)
    assert torch.all(x.next_h_in[:8][terminated, -1] == 1) and torch.all(
        x.next_h_in[:8][~terminated, -1] == 0
    )
    torch.testing.assert_close(x.weights, torch.tensor([1.0] * 8 + [0.25] * 2))


@pytest.mark.parametrize("include", [True, False])
def test_grad_penalty_leaves_out_pairs_into_the_absorbing_state_when_asked(include):
    airl = _airl(absorbing=True, grad_penalty=1.0)
    airl.airl.absorbing_grad_penalty = include
    expert = airl._expert_inputs()  # 8 pairs (3 and 7 terminate), then 2 absorbing transitions
    policy = airl.inputs(airl.expert, np.zeros(8, np.float32))
    seen: list[AIRLInputs] = []
    penalty = airl._grad_penalty

    def record(e: AIRLInputs, p: AIRLInputs) -> torch.Tensor:
        seen.extend([e, p])
        return penalty(e, p)

    airl._grad_penalty = record  # type: ignore[method-assign]
    airl.loss(expert, policy)
    e, p = seen
    if include:
        assert len(e) == 10 and torch.equal(e.next_h_in, expert.next_h_in)
    else:  # the pairs 0-2 and 4-6: none has the absorbing state as s' (nor is one)
        assert len(e) == len(p) == 6
        assert torch.all(e.next_h_in[:, -1] == 0) and torch.all(p.next_h_in[:, -1] == 0)
        torch.testing.assert_close(e.g_in, expert.g_in[[0, 1, 2, 4, 5, 6]])


def test_expert_log_pi_is_the_current_policy_and_policy_log_pi_the_collected_one():
    airl = _airl()
    actor = airl.actor
    assert isinstance(actor, GaussianActor)

    def by_hand() -> np.ndarray:
        with torch.no_grad():
            mean = actor(torch.from_numpy(airl.normalizer(airl.expert.obs))).numpy()[:, 0]
        std = math.exp(float(actor.log_std.detach()[0]))
        a = 0.5  # expert action 1.0 in [-2, 2] is 0.5 in [-1, 1] units
        return -0.5 * ((a - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)

    np.testing.assert_allclose(airl.expert_log_pi(), by_hand(), rtol=1e-5)
    with torch.no_grad():
        actor.log_std.fill_(-1.0)  # the policy changes: the expert's log pi follows it
    np.testing.assert_allclose(airl.expert_log_pi(), by_hand(), rtol=1e-5)
    buf = _hand_buffer()
    airl.update(buf)
    _, replayed_log_pi = airl.replay[-1]
    np.testing.assert_array_equal(replayed_log_pi, buf.log_probs.reshape(-1))  # taken at collection


def test_update_separates_expert_from_policy():
    airl = _airl(updates_per_round=10, lr=1e-2)
    rng = np.random.default_rng(1)
    buf = RolloutBuffer.empty(16, 2, OBS, 1)
    buf.obs_raw[:] = rng.normal(-1.0, 1.0, size=buf.obs_raw.shape)
    buf.next_obs_raw[:] = buf.obs_raw - 0.1
    buf.log_probs[:] = -1.0
    metrics = {}
    for _ in range(3):
        metrics = airl.update(buf)
    assert metrics["disc_acc_expert"] > 0.9 and metrics["disc_acc_policy"] > 0.9
    airl.relabel(buf)
    with torch.no_grad():
        expert_f = airl.net(
            *(getattr(airl._expert_inputs(), k) for k in ("g_in", "h_in", "next_h_in", "next_mask"))
        )
    assert float(expert_f[:8].mean()) > float(buf.rewards.mean()) + 1.0  # reward = f + 1 here


def test_discrete_actions_enter_g_one_hot():
    actor = CategoricalActor(OBS, 3, NetConfig([8]))
    expert = Transitions(
        obs=np.zeros((4, OBS), np.float32),
        actions=np.array([0, 2, 1, 2], np.int64),
        next_obs=np.ones((4, OBS), np.float32),
        terminated=np.zeros(4, bool),
    )
    airl = AIRL(
        GAILConfig(hidden_sizes=[8]),
        AIRLConfig(state_only=False, absorbing=False),
        expert,
        ObsNormalizer(OBS),
        actor,
        np.zeros(0, np.float32),
        np.zeros(0, np.float32),
        GAMMA,
        torch.Generator().manual_seed(0),
        n_actions=3,
    )
    x = airl._expert_inputs()
    torch.testing.assert_close(x.g_in[:, OBS:], torch.eye(3)[[0, 2, 1, 2]])
    with torch.no_grad():
        expected = torch.log_softmax(actor(torch.zeros(4, OBS)), -1)[torch.arange(4), [0, 2, 1, 2]]
    torch.testing.assert_close(x.log_pi, expected)


def test_state_round_trip_includes_replay_and_log_probs():
    airl = _airl(replay_rounds=2)
    buf = _hand_buffer()
    airl.update(buf)
    airl.update(buf)
    other = _airl(replay_rounds=2)
    other.load_state_dict(airl.state_dict())
    assert len(other.replay) == 2
    np.testing.assert_array_equal(other.replay[0][1], buf.log_probs.reshape(-1))
    x = torch.randn(5, OBS + 1)
    torch.testing.assert_close(other.net.reward(x), airl.net.reward(x))


# ------------------------------------------------------------------------------ CLI


@pytest.fixture(scope="module")
def demos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demos") / "pendulum.hdf5"
    record_demos(path, episodes=4, max_steps=50)
    return path


def cli(*args: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr


def tiny_run_args(demos: Path) -> list[str]:
    return ["--env", ENV, "--demos", str(demos), "--steps", "128", *TINY, "--set", "run.eval_episodes=0"]


@pytest.fixture(scope="module")
def airl_run(tmp_path_factory: pytest.TempPathFactory, demos: Path) -> Path:
    """A tiny state-only AIRL run with absorbing states on InvertedPendulum (it terminates)."""
    run = tmp_path_factory.mktemp("airl") / "airl"
    cli("train", "--algo", "airl", *tiny_run_args(demos), "--out", str(run))
    return run


def train_ppo_on(reward_file: Path, out: Path) -> None:
    ppo = f"train --algo ppo --env {ENV} --steps 64".split()
    cli(*ppo, "--reward", str(reward_file), *TINY, "--out", str(out))
    assert '"learned_reward"' in (out / "metrics.jsonl").read_text()


@pytest.mark.parametrize("gen", ["ppo", pytest.param("trpo", marks=pytest.mark.slow)])
def test_airl_resume_reproduces_the_next_update(tmp_path, demos, gen):
    """InvertedPendulum terminates when the pole falls: the absorbing path is exercised."""
    from gail_robot.policy_io import load_checkpoint

    full = tmp_path / "full"
    args = ["--algo", "airl", "--gen", gen, "--env", ENV, "--demos", str(demos), "--steps", "192", *TINY]
    args += [
        "--set",
        "run.checkpoint_interval=128",
        "--set",
        "run.eval_episodes=0",
        "--set",
        "gail.replay_rounds=2",
    ]
    cli("train", *args, "--out", str(full))
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    (cut / "final.pt").unlink()
    shutil.copy(cut / "checkpoints" / "step_0000000128.pt", cut / "checkpoints" / "latest.pt")
    cli("train", "--resume", str(cut), "--no-progress")

    def flat(ckpt: dict) -> torch.Tensor:
        parts = [*ckpt["actor"].values(), *ckpt["critic"].values(), *ckpt["airl"]["reward_net"].values()]
        return torch.cat([v.reshape(-1).float() for v in parts])

    a, b = load_checkpoint(full / "final.pt"), load_checkpoint(cut / "final.pt")
    before = load_checkpoint(cut / "checkpoints" / "step_0000000128.pt")
    assert not torch.equal(flat(before), flat(b))
    assert torch.equal(flat(a), flat(b))
    rows = [r for r in (full / "metrics.jsonl").read_text().splitlines() if "disc_acc_expert" in r]
    assert len(rows) == 3 and all('"airl_expert_log_pi"' in r for r in rows)
    assert (full / "tb").is_dir()


def test_export_reward_and_train_on_it(tmp_path, demos, airl_run):
    """The exported g(s) is the run's g on normalised observations; ppo trains on it; bad input: one line."""
    from gail_robot.nets import AIRLRewardNet, Discriminator, normalization_std, normalize_torch
    from gail_robot.policy_io import load_checkpoint
    from gail_robot.reward_io import demo_transitions, load_reward

    run, common = airl_run, tiny_run_args(demos)
    reward_file = tmp_path / "reward.pt"
    cli("export-reward", str(run), "--out", str(reward_file))
    reward = load_reward(reward_file)
    assert reward.inputs == "obs" and reward.meta["term"] == "g" and reward.env_id == ENV
    data = load_checkpoint(run / "final.pt")
    net = AIRLRewardNet(4 + 1, 4 + 1, 0.99, NetConfig([100, 100], "tanh"))
    net.load_state_dict(data["airl"]["reward_net"])
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    norm = data["obs_norm"]
    x = normalize_torch(
        torch.from_numpy(obs), torch.as_tensor(norm["mean"]), normalization_std(norm["var"]), norm["clip"]
    )
    with torch.no_grad():
        expected = net.reward(torch.cat([x, torch.zeros(6, 1)], 1)).numpy()
        absorbing = float(net.reward(torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]]))[0])
    np.testing.assert_allclose(reward(obs, np.zeros((6, 1)), obs), expected, rtol=1e-6)
    assert reward.absorbing_reward == pytest.approx(absorbing)
    assert reward.meta["absorbing_rule"] == "learned"

    # --absorbing demo-min: the lowest reward the file itself pays on any demo transition; the learned
    # value is kept beside it
    low_file = tmp_path / "reward_low.pt"
    cli("export-reward", str(run), "--out", str(low_file), "--absorbing", "demo-min")
    low = load_reward(low_file)
    lowest = min(float(reward(o, a, n).min()) for o, a, n in demo_transitions(demos))
    assert low.absorbing_reward == pytest.approx(lowest, abs=1e-6)
    assert low.meta["absorbing_reward_learned"] == pytest.approx(absorbing)
    assert low.meta["absorbing_rule"] == "demo-min" and low.meta["absorbing_demos"] == str(demos)
    np.testing.assert_array_equal(low(obs, np.zeros((6, 1)), obs), reward(obs, np.zeros((6, 1)), obs))

    ppo = tmp_path / "ppo"
    train_ppo_on(reward_file, ppo)
    rows = [r for r in (ppo / "metrics.jsonl").read_text().splitlines() if "learned_reward" in r]
    assert '"episode_return"' in rows[0]

    # GAIL whose discriminator does not see observation dims 1 and 3: the file leaves them out alike.
    gail = tmp_path / "gail"
    sets = ["--set", "gail.absorbing=true", "--set", "gail.disc_ignore_obs=[1, 3]"]
    cli("train", "--algo", "gail", *common, *sets, "--out", str(gail))
    cli("export-reward", str(gail), "--out", str(tmp_path / "gail_reward.pt"))
    gail_reward = load_reward(tmp_path / "gail_reward.pt")
    assert gail_reward.inputs == "obs_action_next_obs" and gail_reward.meta["disc_obs_columns"] == [0, 2]
    gdata = load_checkpoint(gail / "final.pt")
    disc = Discriminator(2 + 1 + 1, NetConfig([100, 100], "tanh"))
    disc.load_state_dict(gdata["gail"]["disc"])
    gnorm = gdata["obs_norm"]
    xs = normalize_torch(
        torch.from_numpy(obs), torch.as_tensor(gnorm["mean"]), normalization_std(gnorm["var"]), gnorm["clip"]
    )[:, [0, 2]]
    action = np.full((6, 1), 1.5, np.float32)  # InvertedPendulum's bounds are ±3: 0.5 in [-1, 1] units
    with torch.no_grad():
        gx = torch.cat([xs, torch.full((6, 1), 0.5), torch.zeros(6, 1)], 1)
        g_expected = torch.nn.functional.softplus(disc(gx)).squeeze(-1).numpy()
    np.testing.assert_allclose(gail_reward(obs, action, obs + 1.0), g_expected, rtol=1e-5, atol=1e-7)

    no_abs = tmp_path / "airl_no_abs"
    cli("train", "--algo", "airl", *common, "--set", "airl.absorbing=false", "--out", str(no_abs))
    errors = [
        (["export-reward", str(ppo), "--out", str(tmp_path / "x.pt")], "only airl and gail runs"),
        (
            ["export-reward", str(no_abs), "--out", str(tmp_path / "x.pt"), "--absorbing", "demo-min"],
            "has no absorbing state",
        ),
        (
            [
                *("export-reward", str(run), "--out", str(tmp_path / "x.pt")),
                *("--absorbing", "demo-min", "--demos", str(tmp_path / "missing.hdf5")),
            ],
            "missing.hdf5: no such file",
        ),
        (
            [
                "train",
                "--algo",
                "airl",
                *common,
                "--set",
                "gail.disc_ignore_obs=[0]",
                "--out",
                str(run) + "2",
            ],
            "gail.disc_ignore_obs is a GAIL option",
        ),
        (["export-reward", str(tmp_path / "nope"), "--out", str(tmp_path / "x.pt")], "nope"),
        (
            [
                "train",
                "--algo",
                "ppo",
                "--env",
                "Hopper-v5",
                "--reward",
                str(reward_file),
                "--out",
                str(tmp_path / "h"),
            ],
            "was learned on InvertedPendulum-v5, not Hopper-v5",
        ),
        (
            [
                "train",
                "--algo",
                "ppo",
                "--env",
                ENV,
                "--reward",
                str(tmp_path / "missing.pt"),
                "--out",
                str(tmp_path / "m"),
            ],
            "reward file not found",
        ),
        (
            [
                "train",
                "--algo",
                "gail",
                "--env",
                ENV,
                "--reward",
                str(reward_file),
                "--out",
                str(tmp_path / "g"),
            ],
            "--reward (a learned reward) goes with --algo ppo, trpo or sac",
        ),
        (
            [
                "train",
                "--algo",
                "ppo",
                "--env",
                ENV,
                "--reward",
                str(run / "final.pt"),
                "--out",
                str(tmp_path / "c"),
            ],
            "is not a reward file",
        ),
    ]
    for args, message in errors:
        assert message in one_line_error(run_cli(*args))


def test_relabel_with_a_learned_reward_uses_env_units_and_the_absorbing_value(tmp_path):
    from gail_robot.algos.trainer import relabel_with_reward

    class Reward:
        absorbing_reward = 2.0

        def __call__(self, obs, actions, next_obs, terminated):
            assert terminated.shape == (obs.shape[0],)  # a shaped file corrects these rows
            return (obs.sum(1) + 10 * actions[:, 0] + 100 * next_obs[:, 0]).astype(np.float32)

    buf = _hand_buffer()
    buf.actions[:, 0, 0] = [0.5, 3.0]  # env units with bounds [-2, 2]: 1.0 and (clipped) 2.0
    bootstrap = relabel_with_reward(Reward(), buf, LOW, HIGH, 0.9)  # type: ignore[arg-type]
    np.testing.assert_allclose(buf.rewards[:, 0], [2 + 10 + 200, 1 + 20 + 500], rtol=1e-6)
    assert bootstrap is not None
    np.testing.assert_allclose(bootstrap, 20.0, rtol=1e-6)


def test_shaped_reward_file_is_f_and_keeps_every_episodes_g_value_up_to_h_of_the_start(
    tmp_path, demos, airl_run
):
    """``export-reward --shaping``: f = g + gamma h(s') - h(s) by hand; a terminated step's successor is
    the absorbing state; over a real terminated episode the discounted f-return (with the absorbing
    bootstrap) is the g-return minus h(s0), which is why shaping leaves the optimal policy alone."""
    import gymnasium as gym

    from gail_robot.nets import AIRLRewardNet, normalization_std, normalize_torch
    from gail_robot.policy_io import load_checkpoint
    from gail_robot.reward_io import demo_transitions, load_reward

    run = airl_run
    cli("export-reward", str(run), "--out", str(tmp_path / "g.pt"))
    cli("export-reward", str(run), "--out", str(tmp_path / "f.pt"), "--shaping")
    g_file, f_file = load_reward(tmp_path / "g.pt"), load_reward(tmp_path / "f.pt")
    assert f_file.shaped and not g_file.shaped and f_file.inputs == "obs_action_next_obs"
    assert f_file.meta["format_version"] == 2 and g_file.meta["format_version"] == 1

    data = load_checkpoint(run / "final.pt")
    gamma = float(data["config"]["rollout"]["gamma"])
    net = AIRLRewardNet(4 + 1, 4 + 1, gamma, NetConfig([100, 100], "tanh"))
    net.load_state_dict(data["airl"]["reward_net"])
    norm = data["obs_norm"]

    def x(obs: np.ndarray, flag: float = 0.0) -> torch.Tensor:
        n = normalize_torch(
            torch.from_numpy(obs), torch.as_tensor(norm["mean"]), normalization_std(norm["var"]), norm["clip"]
        )
        return torch.cat([n, torch.full((len(obs), 1), flag)], 1)

    s_abs = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    with torch.no_grad():
        g_abs, h_abs = float(net.reward(s_abs)[0]), float(net.potential(s_abs)[0])
    assert f_file.meta["absorbing_potential"] == pytest.approx(h_abs)
    assert f_file.absorbing_reward == pytest.approx(g_abs + (gamma - 1.0) * h_abs)

    # a real episode of InvertedPendulum with a random policy: it falls, i.e. terminates
    env = gym.make(ENV)
    obs, _ = env.reset(seed=3)
    rng = np.random.default_rng(0)
    states, actions, terminated = [np.asarray(obs, np.float32)], [], False
    while not terminated:
        action = rng.uniform(-3, 3, size=1).astype(np.float32)
        obs, _, terminated, truncated, _ = env.step(action)
        assert not truncated
        states.append(np.asarray(obs, np.float32))
        actions.append(action)
    o, nxt = np.stack(states[:-1]), np.stack(states[1:])
    done = np.zeros(len(o), bool)
    done[-1] = True
    f = f_file(o, np.stack(actions), nxt, done)
    with torch.no_grad():
        next_h = x(nxt)
        next_h[-1] = s_abs[0]  # the terminated step's successor is the absorbing state
        by_hand = net(x(o), x(o), next_h, torch.ones(len(o))).numpy()
        h0 = float(net.potential(x(o[:1]))[0])
    np.testing.assert_allclose(f, by_hand, rtol=1e-5, atol=1e-6)
    g = g_file(o, np.stack(actions), nxt)
    disc = gamma ** np.arange(len(o))
    t = len(o)
    f_return = float(disc @ f) + gamma**t * f_file.absorbing_reward / (1 - gamma)
    g_return = float(disc @ g) + gamma**t * g_file.absorbing_reward / (1 - gamma)
    assert f_return == pytest.approx(g_return - h0, rel=1e-4, abs=1e-4)
    # without the terminated flag the observed successor's h is used: a different reward on that step
    assert f_file(o, np.stack(actions), nxt)[-1] != pytest.approx(f[-1])

    # demo-min: g(s_abs) becomes the demos' lowest g; the absorbing transition's f follows from it
    cli(
        "export-reward", str(run), "--out", str(tmp_path / "f_low.pt"), "--shaping", "--absorbing", "demo-min"
    )
    low = load_reward(tmp_path / "f_low.pt")
    lowest_g = min(float(g_file(a, b, c).min()) for a, b, c in demo_transitions(demos))
    assert low.meta["absorbing_g"] == pytest.approx(lowest_g, abs=1e-6)
    assert low.absorbing_reward == pytest.approx(lowest_g + (gamma - 1.0) * h_abs, abs=1e-6)

    # PPO trains on it at the file's gamma; another gamma, or --shaping of a GAIL run: one line
    train_ppo_on(tmp_path / "f.pt", tmp_path / "ppo")
    ppo = f"train --algo ppo --env {ENV} --set rollout.gamma=0.9".split()
    wrong_gamma = run_cli(*ppo, "--reward", str(tmp_path / "f.pt"), "--out", str(tmp_path / "p2"))
    assert f"is shaped with gamma {gamma}; this run discounts by 0.9" in one_line_error(wrong_gamma)
    gail = tmp_path / "gail"
    cli("train", "--algo", "gail", *tiny_run_args(demos), "--out", str(gail))
    refused = run_cli("export-reward", str(gail), "--out", str(tmp_path / "x.pt"), "--shaping")
    assert "--shaping exports AIRL's h, which only airl runs have" in one_line_error(refused)
    assert not (tmp_path / "x.pt").exists()


def test_g_ignore_obs_keeps_dims_from_g_only_and_the_reward_file_alike(tmp_path, demos):
    """airl.g_ignore_obs: g's input is the kept columns (h still sees all); r(obs) ignores the others."""
    from gail_robot.nets import AIRLRewardNet, normalization_std, normalize_torch
    from gail_robot.policy_io import load_checkpoint
    from gail_robot.reward_io import load_reward

    run = tmp_path / "airl"
    cli(
        "train",
        "--algo",
        "airl",
        *tiny_run_args(demos),
        "--set",
        "airl.g_ignore_obs=[1, 3]",
        "--out",
        str(run),
    )
    data = load_checkpoint(run / "final.pt")
    assert data["airl"]["g_obs_columns"] == [0, 2]
    net = AIRLRewardNet(2 + 1, 4 + 1, 0.99, NetConfig([100, 100], "tanh"))
    net.load_state_dict(data["airl"]["reward_net"])  # g takes 2 dims + flag, h 4 + flag
    for shaping in ([], ["--shaping"]):
        cli("export-reward", str(run), "--out", str(tmp_path / "r.pt"), *shaping)
        reward = load_reward(tmp_path / "r.pt")
        assert reward.meta["g_obs_columns"] == [0, 2]
        obs = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
        moved = obs.copy()
        moved[:, [1, 3]] += 3.0  # only dims g does not see
        act = np.zeros((5, 1), np.float32)
        if not shaping:
            np.testing.assert_array_equal(reward(obs, act, obs), reward(moved, act, moved))
            norm = data["obs_norm"]
            x = normalize_torch(
                torch.from_numpy(obs),
                torch.as_tensor(norm["mean"]),
                normalization_std(norm["var"]),
                norm["clip"],
            )
            with torch.no_grad():
                expected = net.reward(torch.cat([x[:, [0, 2]], torch.zeros(5, 1)], 1)).numpy()
            np.testing.assert_allclose(reward(obs, act, obs), expected, rtol=1e-6)
        else:  # f's shaping h sees every dim: moving the ignored ones changes it
            assert not np.allclose(reward(obs, act, obs), reward(moved, act, moved))
    bad = run_cli(
        "train",
        "--algo",
        "airl",
        *tiny_run_args(demos),
        "--set",
        "airl.g_ignore_obs=[0:4]",
        "--out",
        str(tmp_path / "bad"),
    )
    assert "airl.g_ignore_obs leaves out all 4 observation dims" in one_line_error(bad)


def test_airl_configs_parse_and_variants_change_only_the_dynamics():
    import gymnasium as gym

    from gail_robot.algos.config import config_from_dict, load_yaml, shipped_config_path
    from gail_robot.envs.make import make_env

    for name in ("airl/Hopper-v5", "airl/Walker2d-v5", "airl/HalfCheetah-v5"):
        path = shipped_config_path(name)
        assert path is not None
        cfg = config_from_dict(load_yaml(path))
        assert cfg.algo == "airl" and cfg.airl.state_only and cfg.airl.absorbing and cfg.generator == "ppo"
        assert cfg.airl.entropy_weight == (1.0 if "Hopper" in name else 0.1)
        assert cfg.airl.absorbing_grad_penalty == ("Walker2d" not in name)
        assert cfg.airl.cap_absorbing_reward == ("Walker2d" in name)
    original = make_env("Hopper-v5")
    crippled = make_env("gail_robot/HopperCrippled-v0")
    assert crippled.observation_space == original.observation_space
    assert crippled.action_space == original.action_space
    gear = crippled.unwrapped.model.actuator_gear[:, 0]
    np.testing.assert_array_equal(gear, [200.0, 200.0, 20.0])
    np.testing.assert_array_equal(original.unwrapped.model.actuator_gear[:, 0], [200.0, 200.0, 200.0])
    assert gym.spec("gail_robot/HopperCrippled-v0").max_episode_steps == 1000
    # HalfCheetah with a front shin half as long: same spaces, same total mass, the foot moved up
    cheetah, short = make_env("HalfCheetah-v5"), make_env("gail_robot/HalfCheetahShortShin-v0")
    assert short.observation_space == cheetah.observation_space and short.action_space == cheetah.action_space
    a, b = cheetah.unwrapped.model, short.unwrapped.model
    shin, foot = a.geom("fshin").id, a.body("ffoot").id
    np.testing.assert_allclose(b.geom_size[shin], a.geom_size[shin] * [1, 0.5, 1])
    np.testing.assert_allclose(b.body_pos[foot], a.body_pos[foot] / 2)
    assert b.body_mass.sum() == pytest.approx(a.body_mass.sum())
    assert gym.spec("gail_robot/HalfCheetahShortShin-v0").max_episode_steps == 1000
    # Walker2d with a crippled right ankle: only that motor's gear changes (100 -> 10), same spaces
    walker, crippled_walker = make_env("Walker2d-v5"), make_env("gail_robot/Walker2dCrippled-v0")
    assert crippled_walker.observation_space == walker.observation_space
    assert crippled_walker.action_space == walker.action_space
    np.testing.assert_array_equal(
        crippled_walker.unwrapped.model.actuator_gear[:, 0], [100, 100, 10, 100, 100, 100]
    )
    np.testing.assert_array_equal(walker.unwrapped.model.actuator_gear[:, 0], [100.0] * 6)
    assert gym.spec("gail_robot/Walker2dCrippled-v0").max_episode_steps == 1000


def test_airl_on_discrete_cartpole_is_bit_identical_in_sync_and_batched(tmp_path):
    """Discrete actions end to end (one-hot g(s, a), categorical log pi), through the shared vectorisation."""
    from gail_robot.policy_io import load_checkpoint

    demos = Path(__file__).resolve().parent.parent / "datasets" / "experts" / "CartPole-v1" / "demos.hdf5"
    args = ["CartPole-v1", "--algo", "airl", "--demos", str(demos), "--steps", "512", "--num-envs", "2"]
    args += ["--no-progress", "--set", "rollout.n_steps=128", "--set", "run.eval_episodes=1"]
    args += ["--set", "airl.state_only=false", "--set", "gail.max_demos=1", "--set", "run.tensorboard=false"]
    cli("train", *args, "--sync", "--out", str(tmp_path / "sync"))
    cli(
        "train",
        *args,
        "--set",
        "env.vectorization=batched",
        "--set",
        "env.num_workers=2",
        "--out",
        str(tmp_path / "b"),
    )
    a, b = load_checkpoint(tmp_path / "sync" / "final.pt"), load_checkpoint(tmp_path / "b" / "final.pt")
    assert a["actor_spec"]["kind"] == "categorical"
    for key in ("actor", "critic"):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f"{key}.{name}"
    for name, value in a["airl"]["reward_net"].items():
        assert torch.equal(value, b["airl"]["reward_net"][name]), name
