"""Peer measurement for bench_train.py: the `imitation` library's GAIL (SB3 PPO) env steps/s.

Runs INSIDE the separate virtual environment that bench_train.py creates and installs itself
(``PEER_REQUIREMENTS`` there: imitation 1.0.1, Stable-Baselines3 2.2.1, Gymnasium 0.29.1 with
mujoco 3.1.6, torch 2.13.0; no system site packages); never imported by gail_robot. Settings mirror
ours: n_envs x n_steps rollout, PPO epochs and minibatch, 64-64 tanh policy, 100-100
discriminator with input normalisation, 256 expert + 256 policy samples per discriminator step
and as many discriminator steps per round as ours. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np
import torch


def random_transitions(env_id: str, n: int, seed: int):
    from imitation.data import types

    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    rows = {"obs": [], "acts": [], "next_obs": [], "dones": []}
    for _ in range(n):
        act = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
        nxt, _, terminated, truncated, _ = env.step(act)
        rows["obs"].append(obs)
        rows["acts"].append(act)
        rows["next_obs"].append(nxt)
        rows["dones"].append(terminated or truncated)
        obs = nxt
        if terminated or truncated:
            obs, _ = env.reset()
    env.close()
    return types.Transitions(
        obs=np.array(rows["obs"], np.float32),
        acts=np.array(rows["acts"], np.float32),
        infos=np.array([{}] * n),
        next_obs=np.array(rows["next_obs"], np.float32),
        dones=np.array(rows["dones"], bool),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="Hopper-v4")
    parser.add_argument("--steps", type=int, default=32768)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--n-steps", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--minibatch", type=int, default=256)
    parser.add_argument("--disc-updates", type=int, default=16)
    parser.add_argument("--parallel", action="store_true", help="SubprocVecEnv instead of DummyVecEnv")
    args = parser.parse_args()

    from imitation.algorithms.adversarial.gail import GAIL
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.networks import RunningNorm
    from imitation.util.util import make_vec_env
    from stable_baselines3 import PPO
    from stable_baselines3.ppo import MlpPolicy

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    venv = make_vec_env(args.env, n_envs=args.num_envs, rng=rng, parallel=args.parallel)
    learner = PPO(
        env=venv,
        policy=MlpPolicy,
        n_steps=args.n_steps,
        batch_size=args.minibatch,
        n_epochs=args.epochs,
        learning_rate=3e-4,
        policy_kwargs={"net_arch": [64, 64], "activation_fn": torch.nn.Tanh},
        seed=0,
        device="cpu",
    )
    reward_net = BasicRewardNet(
        venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm, hid_sizes=(100, 100)
    )
    trainer = GAIL(
        demonstrations=random_transitions(args.env, 5000, 0),
        demo_batch_size=256,
        gen_replay_buffer_capacity=2 * args.n_steps * args.num_envs,
        n_disc_updates_per_round=args.disc_updates,
        venv=venv,
        gen_algo=learner,
        reward_net=reward_net,
        allow_variable_horizon=True,
        init_tensorboard=False,
    )
    per_round = args.n_steps * args.num_envs
    trainer.train(per_round)  # warm-up round: worker start-up and lazy initialisation
    start = time.perf_counter()
    trainer.train(args.steps)
    elapsed = time.perf_counter() - start
    print(json.dumps({"steps_per_s": args.steps / elapsed, "steps": args.steps, "seconds": elapsed}))
    venv.close()


if __name__ == "__main__":
    main()
