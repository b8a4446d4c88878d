"""Benchmark of the demo recorder and the transition sampler.

1. Recorder overhead: a Humanoid-v5 step loop (random actions, no early termination, 1000-step
   episodes) with and without recording (physics state capture, buffering, publishing each
   episode crash-safely). Prints the overhead as a percentage of the plain loop (target < 5 %):
   ``DemoWriter`` (episodes published by its helper process, what ``gail-robot record`` does) and,
   as a reference, an inline writer that runs the same transaction on the recording thread.
2. Sampling throughput: batches of transitions for training, from the cached in-memory
   ``DemoDataset.transitions()`` and from ``DemoDataset.sample_from_file`` (indexed reads), against
   naive per-item h5py reads. Prints transitions/s and the ratios.

3. Compression (``--compression``): size and write time of one realistic episode per filter
   (none, LZF, gzip levels, with and without shuffle) through h5py, for Humanoid-v5 and the arm
   push task with its scripted expert. This is how the schema's filter was chosen.

Run: python benchmarks/bench_data.py [--episodes 10] [--steps 1000] [--durable] [--compression]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import h5py
import numpy as np

import gail_robot.envs  # noqa: F401
from gail_robot.data import DemoDataset, DemoWriter
from gail_robot.data.episode import EpisodeBuffer, chunk_rows, write_episode
from gail_robot.data.schema import EnvMeta, demo_name, header_attrs, obs_key_spaces
from gail_robot.data.transaction import Publisher
from gail_robot.envs.physics import get_physics_state


class InlineWriter:
    """Reference: the same episodes and transactions as DemoWriter, all on the recording thread."""

    def __init__(self, path: Path, env: gym.Env, durable: bool) -> None:
        self.meta = EnvMeta.from_env(env)
        self.publisher = Publisher(path, durable)
        self.path, self.count = path, 0
        path.unlink(missing_ok=True)

    def start_episode(self, seed: int, source: str) -> None:
        shapes = {k: (b.shape, b.dtype) for k, b in obs_key_spaces(self.meta.observation_space).items()}
        act = tuple(self.meta.action_space.shape)
        self.buffer = EpisodeBuffer(shapes, act, self.meta.state_size or 0, seed, source)

    def add_step(self, *step: object) -> None:
        self.buffer.add_step(*step)

    def end_episode(self, success: bool, final_state: np.ndarray, cut: bool) -> None:
        episode, name = self.buffer.finish(success, final_state, cut), demo_name(self.count)
        header = header_attrs(self.meta)
        create = (lambda f: f.create_group("data").attrs.update(header)) if not self.path.exists() else None
        self.publisher.publish(lambda f: write_episode(f["data"], name, episode), create)
        self.publisher.catch_up()
        self.count += 1

    def close(self) -> None:
        self.publisher.close()


def _children_cpu() -> float:
    """CPU seconds of this process's exited children (the publishing process)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_loop(
    env: gym.Env, episodes: int, steps: int, writer: DemoWriter | InlineWriter | None
) -> dict[str, float]:
    """Seconds: ``wall``, ``main`` (CPU of this thread), ``cpu`` (all threads), ``publish`` (wall of
    ``end_episode``), ``calls`` (CPU time of this thread in every recorder call: state capture,
    ``start_episode``, ``add_step``, ``end_episode``; not inflated by waiting for a busy CPU)."""
    rng = np.random.default_rng(0)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, size=(episodes, steps, len(low))).astype(np.float32)
    publish = calls = 0.0
    clock, cpu_clock = time.perf_counter, time.thread_time
    pairs = 0
    start, main0, cpu0 = clock(), time.thread_time(), time.process_time()
    for ep in range(episodes):
        obs, _ = env.reset(seed=ep)
        if writer is not None:
            c0 = cpu_clock()
            writer.start_episode(seed=ep, source="bench")
            calls += cpu_clock() - c0
        for t in range(steps):
            if writer is not None:
                c0 = cpu_clock()
                state = get_physics_state(env)
                calls += cpu_clock() - c0
            next_obs, reward, terminated, truncated, _ = env.step(actions[ep, t])
            if writer is not None:
                c0 = cpu_clock()
                writer.add_step(obs, actions[ep, t], reward, next_obs, terminated, truncated, state)
                calls += cpu_clock() - c0
                pairs += 2
            obs = next_obs
            if terminated or truncated:
                break
        if writer is not None:
            t0, c0 = clock(), cpu_clock()
            writer.end_episode(success=False, final_state=get_physics_state(env), cut=True)
            publish += clock() - t0
            calls += cpu_clock() - c0
            pairs += 2
    if pairs:  # less what reading the clock costs (a system call)
        c0 = cpu_clock()
        for _ in range(1000):
            cpu_clock()
        calls = max(0.0, calls - pairs * (cpu_clock() - c0) / 1000)
    return {
        "wall": clock() - start,
        "main": time.thread_time() - main0,
        "cpu": time.process_time() - cpu0,
        "publish": publish,
        "calls": calls,
    }


def bench_recorder(episodes: int, steps: int, durable: bool, tmp: Path, repeats: int = 3) -> Path:
    env = gym.make("Humanoid-v5", terminate_when_unhealthy=False, max_episode_steps=steps)
    run_loop(env, 1, 200, None)  # warm up
    n = episodes * steps
    path = tmp / "humanoid.hdf5"
    print(f"recorder: Humanoid-v5, {episodes} episodes x {steps} steps, fsync={'on' if durable else 'off'}")
    print("  (best of", repeats, "interleaved runs; main = CPU time of the stepping thread,")
    print("   all = CPU time of every thread of this process)")
    best: dict[str, dict[str, float]] = {}
    for _ in range(repeats):  # interleaved, so a busy machine slows every variant alike
        for variant in ("plain", "sink", "inline"):
            helper0 = _children_cpu()
            if variant == "plain":
                result = run_loop(env, episodes, steps, None)
            elif variant == "sink":
                with DemoWriter(path, env, mode="w", durable=durable) as w:
                    result = run_loop(env, episodes, steps, w)
                    t0 = time.perf_counter()
                    w.flush()  # the last episode's transaction: a fixed cost at the end, not per step
                    result["close"] = time.perf_counter() - t0
            else:
                inline = InlineWriter(tmp / "inline.hdf5", env, durable)
                result = run_loop(env, episodes, steps, inline)
                inline.close()
            result["helper"] = _children_cpu() - helper0  # the publishing process, once it exited
            old = best.setdefault(variant, result)
            best[variant] = {k: min(old[k], result[k]) for k in result}
    plain = best["plain"]
    for variant, label in (
        ("sink", "DemoWriter: episodes published by its helper process (gail-robot record)"),
        ("inline", "reference: the same transactions inline, on the recording thread"),
    ):
        rec = best[variant]
        print(f"  {label}:")
        for key, name in (("main", "main-thread CPU"), ("cpu", "all-threads CPU"), ("wall", "wall clock")):
            extra = 100 * (rec[key] - plain[key]) / plain[key]
            print(
                f"    {name:16s} plain {plain[key] / n * 1e6:7.1f} us/step, "
                f"recording {rec[key] / n * 1e6:7.1f} us/step: +{extra:5.1f} %"
            )
        print(f"    publishing {rec['publish'] / n * 1e6:.1f} us/step (wall, included above)")
        print(
            f"    recorder calls on the stepping thread {rec['calls'] / n * 1e6:.1f} us/step: "
            f"{100 * rec['calls'] / plain['main']:.1f} % of the plain loop's main-thread CPU"
        )
        if "close" in rec:
            print(f"    waiting for the last episode to be saved: {rec['close'] * 1e3:.0f} ms (not included)")
        if rec["helper"] > 0:
            print(
                f"    publishing process CPU {rec['helper'] / n * 1e6:.1f} us/step "
                "(compression and HDF5 writes on another core, its start included;\n"
                "     not in the numbers above)"
            )
    print(f"  target < 5 % of the loop; file {path.stat().st_size / 1e6:.1f} MB")
    return path


def naive_sample(
    path: Path, names: list[str], lengths: list[int], batch: int, rng: np.random.Generator
) -> None:
    """What a first attempt looks like: one h5py read per item and field."""
    with h5py.File(path, "r") as f:
        for _ in range(batch):
            d = int(rng.integers(len(names)))
            i = int(rng.integers(lengths[d]))
            g = f["data"][names[d]]
            g["obs"]["state"][i], g["actions"][i], g["next_obs"]["state"][i], g["terminated"][i]


def bench_sampler(path: Path, batch: int = 256) -> None:
    rng = np.random.default_rng(0)
    ds = DemoDataset(path)
    t0 = time.perf_counter()
    transitions = ds.transitions()
    load = time.perf_counter() - t0
    reps = 2000
    t0 = time.perf_counter()
    for _ in range(reps):
        transitions.sample(batch, rng)
    memory = reps * batch / (time.perf_counter() - t0)
    reps_file = 20
    t0 = time.perf_counter()
    for _ in range(reps_file):
        ds.sample_from_file(batch, rng)
    indexed = reps_file * batch / (time.perf_counter() - t0)
    reps_naive = 3
    t0 = time.perf_counter()
    for _ in range(reps_naive):
        naive_sample(path, ds.demo_names, ds.lengths, batch, rng)
    naive = reps_naive * batch / (time.perf_counter() - t0)
    print(f"sampler: {ds.num_steps} transitions, obs_dim {transitions.obs.shape[1]}, batch {batch}")
    print(f"  load once into memory    {load:8.3f} s")
    print(f"  in-memory sample         {memory:12.0f} transitions/s   ({memory / naive:8.0f} x naive)")
    print(f"  indexed file sample      {indexed:12.0f} transitions/s   ({indexed / naive:8.1f} x naive)")
    print(f"  naive per-item h5py      {naive:12.0f} transitions/s   (1 x)")
    ds.close()


FILTERS: dict[str, dict[str, object]] = {
    "none": {},
    "lzf": {"compression": "lzf"},
    "lzf+shuffle": {"compression": "lzf", "shuffle": True},
    "gzip1": {"compression": "gzip", "compression_opts": 1},
    "gzip1+shuffle": {"compression": "gzip", "compression_opts": 1, "shuffle": True},
    "gzip4+shuffle": {"compression": "gzip", "compression_opts": 4, "shuffle": True},
    "gzip9+shuffle": {"compression": "gzip", "compression_opts": 9, "shuffle": True},
}


def _episode_arrays(env: gym.Env, steps: int, policy: object, seed: int) -> dict[str, np.ndarray]:
    rows: dict[str, list[np.ndarray]] = {"obs": [], "next_obs": [], "actions": [], "states": []}
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = policy(obs)  # type: ignore[operator]
        rows["states"].append(get_physics_state(env))
        next_obs, _, terminated, truncated, _ = env.step(action)
        rows["obs"].append(obs)
        rows["next_obs"].append(next_obs)
        rows["actions"].append(np.asarray(action, np.float32))
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
    return {k: np.array(v) for k, v in rows.items()}


def bench_compression(tmp: Path) -> None:
    cases = []
    humanoid = gym.make("Humanoid-v5", terminate_when_unhealthy=False)
    rng = np.random.default_rng(0)
    cases.append(
        (
            "Humanoid-v5, random actions",
            _episode_arrays(humanoid, 1000, lambda o: rng.uniform(-0.4, 0.4, 17), 0),
        )
    )
    try:
        from gail_robot.envs.experts import make_expert

        push = gym.make("gail_robot/ArmPush-v0")
        expert = make_expert(push, noise=0.1, seed=0)
        expert.reset()
        cases.append(("ArmPush-v0, scripted expert", _episode_arrays(push, 1000, expert, 0)))
    except ImportError:
        pass
    for title, arrays in cases:
        raw = sum(a.nbytes for a in arrays.values())
        print(f"compression: {title}, 1000 steps, {raw / 1e6:.2f} MB raw (obs, next_obs, actions, states)")
        for name, options in FILTERS.items():
            best = float("inf")
            path = tmp / "c.h5"
            for _ in range(3):
                t0 = time.perf_counter()
                with h5py.File(path, "w") as f:
                    for key, arr in arrays.items():
                        rows = chunk_rows(arr[0].nbytes, len(arr))
                        f.create_dataset(key, data=arr, chunks=(rows, *arr.shape[1:]), **options)
                best = min(best, time.perf_counter() - t0)
            size = path.stat().st_size
            t0 = time.perf_counter()
            with h5py.File(path, "r") as f:
                for key in f:
                    f[key][()]
            read = time.perf_counter() - t0
            print(
                f"  {name:14s} ratio {raw / size:5.2f}  write {best * 1e3:6.1f} ms "
                f"({raw / best / 1e6:6.1f} MB/s)  read {read * 1e3:6.1f} ms"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--durable", action="store_true", help="fsync each episode (the recorder's default)")
    parser.add_argument("--compression", action="store_true", help="only compare compression filters")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.compression:
            bench_compression(Path(tmp))
            return
        path = bench_recorder(args.episodes, args.steps, args.durable, Path(tmp))
        bench_sampler(path)


if __name__ == "__main__":
    main()
