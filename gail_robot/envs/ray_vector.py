"""``env.vectorization: ray``: the batched vector env's workers as Ray actors (docs/DESIGN.md §9).

Same contract as :class:`~gail_robot.envs.vector.BatchedSubprocVectorEnv` (SAME_STEP autoreset,
``parts`` / ``call_parts`` for whole rollouts in the workers), so the collector does not know where
its workers run. What Ray adds, and this module handles:

- **Placement**: one actor per env slice, reserving ``cpus_per_worker`` CPUs, spread over nodes.
  Shared arguments of a call (the policy) go into the object store once per call, not once per worker.
- **Faults**: the driver keeps the reset seeds and every action its envs executed since the last
  reset (``T x N x act_dim`` floats per rollout). When a worker dies (process killed, node lost),
  a new actor resets its slice with the same seeds, replays those actions, which restores the
  exact env states (MuJoCo is deterministic), and runs the failed call again with the same
  arguments: the run continues bit for bit as if nothing had happened.
- **Refusals**: workers report their package versions and whether they could build the env before
  any work is sent; a cluster that cannot place (or replace) the workers within ``timeout_s``
  raises :class:`WorkersUnavailable`.
"""

from __future__ import annotations

import functools
import os
import pickle
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from gail_robot.cluster import check_versions, connect, disconnect, package_versions, require_ray
from gail_robot.envs.make import ensure_registered, make_env
from gail_robot.envs.vector import SlicedVectorEnv
from gail_robot.errors import UserError


class WorkersUnavailable(UserError):
    """The cluster could not provide (or replace) the rollout workers within the timeout."""


@dataclass
class CallStats:
    """Where the time and bytes of the latest ``call_parts`` (a rollout) went.

    Attributes:
        broadcast_s: putting the shared arguments (the policy) into the object store.
        collect_s: until every worker had finished (the rollout itself).
        transfer_s: fetching and deserialising the results into the driver.
        bytes_out: serialized size of the arguments sent (shared ones counted once).
        bytes_in: serialized size of the results received.
    """

    broadcast_s: float = 0.0
    collect_s: float = 0.0
    transfer_s: float = 0.0
    bytes_out: int = 0
    bytes_in: int = 0


def serialized_size(obj: Any) -> int:
    """Bytes ``obj`` takes pickled with out-of-band buffers (arrays are measured, not copied)."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(head) + sum(b.raw().nbytes for b in buffers)


class _RecordingEnvs:
    """The worker's vector env as a call sees it: ``step`` also records the actions it executed."""

    def __init__(self, envs: SyncVectorEnv):
        self._envs = envs
        self.actions: list[np.ndarray] = []

    def step(self, actions: np.ndarray) -> Any:
        self.actions.append(np.array(actions, copy=True))  # its own dtype: float or int (Discrete)
        return self._envs.step(actions)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._envs, name)


def _env_fn(env_id: str, env_kwargs: dict[str, Any]) -> gym.Env:
    return make_env(env_id, env_kwargs)


class RolloutWorker:
    """A Ray actor stepping one slice of the envs (a SAME_STEP ``SyncVectorEnv``).

    Never raises from ``__init__`` (Ray would only say the actor died): :meth:`hello` reports a
    failure to build the env as one line.
    """

    def __init__(self, env_id: str, env_kwargs: dict[str, Any], num_envs: int):
        self.error: str | None = None
        self.envs: SyncVectorEnv | None = None
        self.obs: np.ndarray | None = None
        try:
            ensure_registered(env_id)
            fns = [functools.partial(_env_fn, env_id, dict(env_kwargs)) for _ in range(num_envs)]
            self.envs = SyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
        except Exception as exc:  # reported by hello(), in one line
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0]

    def hello(self) -> dict[str, Any]:
        """Who and where this worker is: versions, host, pid, and the env error (None when fine)."""
        return {
            "versions": package_versions(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "error": self.error,
        }

    def reset(self, seeds: list[int | None]) -> tuple[np.ndarray, dict[str, Any]]:
        assert self.envs is not None
        obs, infos = self.envs.reset(seed=seeds)
        self.obs = obs
        return obs, infos

    def replay(self, seeds: list[int | None], rounds: list[np.ndarray]) -> None:
        """Reset with ``seeds``, then execute each ``(T, n, ...)`` block of ``rounds`` (a lost worker)."""
        self.reset(seeds)
        assert self.envs is not None
        for actions in rounds:
            for step_actions in actions:
                self.obs = self.envs.step(step_actions)[0]

    def step(self, actions: np.ndarray) -> Any:
        assert self.envs is not None
        result = self.envs.step(actions)
        self.obs = result[0]
        return result

    def call(self, fn: Callable[..., tuple[Any, np.ndarray]], *args: Any) -> tuple[Any, np.ndarray]:
        """``fn(envs, obs, *args) -> (result, obs)``; returns the result and the actions executed."""
        if self.envs is None or self.obs is None:
            raise RuntimeError("reset the vector env before calling into its workers")
        recording = _RecordingEnvs(self.envs)
        result, self.obs = fn(recording, self.obs, *args)
        act_shape = (0, self.envs.num_envs, *(self.envs.single_action_space.shape or ()))
        executed = np.stack(recording.actions) if recording.actions else np.zeros(act_shape, np.float32)
        return result, executed


def default_num_workers(cluster_cpus: float, cpus_per_worker: float, num_envs: int) -> int:
    """As many workers as the cluster's CPUs hold at ``cpus_per_worker`` each (1 to ``num_envs``)."""
    return max(1, min(num_envs, int(cluster_cpus // cpus_per_worker)))


class RayVectorEnv(SlicedVectorEnv):
    """N envs in W Ray actors (contiguous slices), SAME_STEP autoreset, Gymnasium's API.

    Args:
        env_id: Gymnasium id (built on every worker; the workers must have gail_robot installed).
        num_envs: total envs N.
        env_kwargs: ``gymnasium.make`` keyword arguments.
        num_workers: actors W (0: :func:`default_num_workers`).
        cpus_per_worker: CPUs each actor reserves.
        address: cluster address (None: ``$RAY_ADDRESS``, else a local Ray for this process).
        timeout_s: how long to wait for the cluster to place (or replace) workers.
    """

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        num_workers: int = 0,
        cpus_per_worker: float = 1.0,
        address: str | None = None,
        timeout_s: float = 120.0,
    ):
        self._ray = require_ray()
        self._cluster = connect(address)
        self._env_id, self._env_kwargs = env_id, dict(env_kwargs or {})
        self._cpus_per_worker, self._timeout_s = float(cpus_per_worker), float(timeout_s)
        probe = make_env(env_id, self._env_kwargs)  # fail here, with a clear error, not on a worker
        n = int(num_envs)
        workers = num_workers or default_num_workers(self._cluster.cpus, self._cpus_per_worker, n)
        self._init_slices(probe, n, min(max(1, workers), n))
        probe.close()
        self._actor_class = self._ray.remote(RolloutWorker)
        self._workers: list[Any] = []
        self.hosts: list[str] = []
        self.pids: list[int] = []
        self.replaced = 0  # workers replaced after a fault (reported in the metrics)
        self.last_call = CallStats()
        self._wait_s = self._get_s = 0.0
        self._closed = False
        self._seeds: list[int | None] | None = None
        self._history: list[np.ndarray] = []  # (T, N, act_dim) actions executed since the last reset
        started = [self._start_worker(i) for i in range(len(self._slices))]
        self._workers = [w for w, _ in started]
        self._await_hello(list(range(len(started))), [h for _, h in started])

    # ------------------------------------------------------------------------------ workers

    def _start_worker(self, i: int) -> tuple[Any, Any]:
        # No Ray-side restarts: a lost worker's env states are rebuilt here (see _replace).
        options = {"num_cpus": self._cpus_per_worker, "max_restarts": 0, "scheduling_strategy": "SPREAD"}
        worker = self._actor_class.options(**options).remote(self._env_id, self._env_kwargs, self._sizes[i])
        return worker, worker.hello.remote()

    def _await_hello(self, indices: list[int], refs: list[Any]) -> None:
        """Wait for the workers' greetings; refuse version mismatches and env errors (one line)."""
        _, pending = self._ray.wait(refs, num_returns=len(refs), timeout=self._timeout_s)
        if pending:
            free = self._ray.available_resources().get("CPU", 0.0)
            self.close()
            raise WorkersUnavailable(
                f"the Ray cluster did not provide {len(pending)} of {len(refs)} rollout workers "
                f"({self._cpus_per_worker:g} CPU each) within {self._timeout_s:g} s "
                f"({free:g} CPUs free of {self._cluster.cpus:g}; env.worker_timeout_s sets the wait)"
            )
        for i, ref in zip(indices, refs, strict=True):
            try:
                hello = self._ray.get(ref)
            except self._ray.exceptions.RayError as exc:
                self.close()
                raise UserError(f"Ray rollout worker {i} failed to start: {_first_line(exc)}") from None
            where = f"{hello['host']} (pid {hello['pid']})"
            try:
                check_versions(hello["versions"], where)
            except UserError:
                self.close()
                raise
            if hello["error"]:
                self.close()
                raise UserError(f"Ray worker on {where} cannot build {self._env_id}: {hello['error']}")
            while len(self.hosts) <= i:
                self.hosts.append("")
                self.pids.append(0)
            self.hosts[i], self.pids[i] = hello["host"], int(hello["pid"])

    def _replace(self, i: int) -> None:
        """A new worker ``i`` with the lost one's env states (reset + replayed actions)."""
        self._ray.kill(self._workers[i], no_restart=True)
        worker, hello = self._start_worker(i)
        self._workers[i] = worker
        self._await_hello([i], [hello])
        self.replaced += 1
        seeds = self._seeds
        if seeds is None:
            return
        sl = self._slices[i]
        rounds = [h[:, sl] for h in self._history]
        self._get_with_replacement([i], lambda j: self._workers[j].replay.remote(seeds[sl], rounds))

    def _get_with_replacement(self, indices: list[int], submit: Callable[[int], Any]) -> list[Any]:
        """Submit ``submit(i)`` to workers ``indices`` and collect the results, replacing dead workers."""
        errors = self._ray.exceptions
        # the worker's process or node is gone, or its result was lost with the node
        dead = (errors.RayActorError, errors.ObjectLostError, errors.NodeDiedError)
        refs = {i: submit(i) for i in indices}
        t0 = time.perf_counter()
        self._ray.wait(list(refs.values()), num_returns=len(refs))  # the workers' time (collect)
        t1 = time.perf_counter()
        results: dict[int, Any] = {}
        for i in indices:
            while i not in results:
                try:
                    results[i] = self._ray.get(refs[i])
                except dead:
                    self._replace(i)
                    refs[i] = submit(i)
                except self._ray.exceptions.RayTaskError as exc:
                    self.close()
                    raise RuntimeError(f"Ray rollout worker {i} failed:\n{exc}") from None
        self._wait_s, self._get_s = t1 - t0, time.perf_counter() - t1
        return [results[i] for i in indices]

    def _all(self, submit: Callable[[int], Any]) -> list[Any]:
        return self._get_with_replacement(list(range(len(self._workers))), submit)

    # ------------------------------------------------------------------------------ VectorEnv

    def _send(self, command: str, payloads: list[Any]) -> list[Any]:
        """Run ``command`` on every worker; record what the envs executed (for :meth:`_replace`)."""
        if command == "reset":
            self._seeds, self._history = [s for part in payloads for s in part], []
            return self._all(lambda i: self._workers[i].reset.remote(payloads[i]))
        if command == "step":
            results = self._all(lambda i: self._workers[i].step.remote(payloads[i]))
            self._history.append(np.concatenate(payloads)[None])
            return results
        return self._call(payloads[0][0], [p[1] for p in payloads])

    def _call(self, fn: Callable[..., Any], args: Sequence[tuple[Any, ...]]) -> list[Any]:
        """``call_parts``: an argument object shared by several parts (the policy) is put into the
        object store once, and every argument travels at the top level so that Ray resolves it."""
        t0 = time.perf_counter()
        seen: dict[int, int] = {}
        for part_args in args:
            for a in part_args:
                seen[id(a)] = seen.get(id(a), 0) + 1
        shared: dict[int, Any] = {}
        bytes_out = 0
        for part_args in args:
            for a in part_args:
                if seen[id(a)] == 1:
                    bytes_out += serialized_size(a)
                elif id(a) not in shared:  # counted once: it goes out once
                    shared[id(a)] = self._ray.put(a)
                    bytes_out += serialized_size(a)
        sent = [tuple(shared.get(id(a), a) for a in part_args) for part_args in args]
        fn_ref = self._ray.put(fn)
        broadcast_s = time.perf_counter() - t0
        # top-level arguments, so that Ray resolves the object references before the call
        results = self._all(lambda i: self._workers[i].call.remote(fn_ref, *sent[i]))
        executed = [r[1] for r in results]
        if any(e.shape[0] for e in executed):
            steps = {e.shape[0] for e in executed}
            if len(steps) != 1:
                raise RuntimeError(f"workers executed different step counts in one call: {sorted(steps)}")
            self._history.append(np.concatenate(executed, axis=1))
        self.last_call = CallStats(
            broadcast_s, self._wait_s, self._get_s, bytes_out, sum(serialized_size(r) for r in results)
        )
        return [r[0] for r in results]

    def close_extras(self, **kwargs: Any) -> None:
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            try:
                self._ray.kill(worker, no_restart=True)
            except Exception:  # already gone (or Ray shut down): nothing left to free
                pass
        self._workers = []
        disconnect(self._cluster)  # stops Ray only when this env started it


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
