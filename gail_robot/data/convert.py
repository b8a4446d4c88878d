"""Converting demo files to and from robomimic's layout, flat ``.npz``, Minari and LeRobot datasets.

Round trips (gail_robot -> X -> gail_robot) preserve every step: observations, next observations,
actions, rewards, terminations, truncations, physics states and the final state, plus the per-demo
seed and success flag. Differences per format are documented in ``datasets/README.md``.

Intervention recordings (``policy_actions`` / ``interventions``, docs/DESIGN.md §3): robomimic and
npz **keep** them (robomimic: the datasets travel in the demo groups, which robomimic's own loader
ignores; npz: two more flat arrays and a per-demo flag); Minari **drops** them (its episode
buffers have no slot for them) and says so on the command line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np

from gail_robot.data.episode import Episode
from gail_robot.data.reader import DemoDataset
from gail_robot.data.schema import (
    FORMAT,
    FORMAT_VERSION,
    EnvMeta,
    demo_name,
    describe_space,
    is_discrete,
    open_h5,
    sorted_demo_names,
    space_from_json,
    space_to_json,
)
from gail_robot.data.transaction import publish_once
from gail_robot.data.writer import DemoWriter
from gail_robot.errors import UserError

FORMATS = ("gail_robot", "robomimic", "npz", "minari", "lerobot")
#: per-step info key that carries the physics state through Minari (rows: states + final state)
MINARI_STATE_INFO = "physics_state"


def _episode(src: object, name: str, **fields: Any) -> Episode:
    """An :class:`Episode` of an imported demo; a malformed one is a one-line UserError."""
    try:
        return Episode(**fields)
    except ValueError as exc:
        raise UserError(f"{src}: {name}: {exc}") from None


def detect_format(path: str | os.PathLike[str]) -> str:
    """``gail_robot``, ``robomimic`` or ``npz`` from a file's content, ``lerobot`` for a directory;
    ``minari`` for anything else (a dataset id)."""
    p = Path(path)
    if p.suffix == ".npz":
        return "npz"
    if p.is_dir():
        return "lerobot"
    if p.is_file():
        if not h5py.is_hdf5(p):
            raise UserError(f"{p}: not an HDF5 or .npz file")
        with open_h5(p) as f:
            if "data" in f and "format" in f["data"].attrs:
                return "gail_robot"
            if "data" in f:
                return "robomimic"
        raise UserError(f"{p}: an HDF5 file without a /data group is not a demo file")
    return "minari"


def _ends(terminated: np.ndarray, truncated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Episode-end flags that pass validation: only the last step may end the episode."""
    term = np.zeros(len(terminated), dtype=bool)
    trunc = np.zeros(len(truncated), dtype=bool)
    term[-1] = bool(terminated[-1])
    trunc[-1] = not term[-1]  # an episode that stops without terminating was truncated
    return term, trunc


# ----------------------------------------------------------------------------------------------
# robomimic
# ----------------------------------------------------------------------------------------------


def to_robomimic(src: DemoDataset, out: Path) -> int:
    """Write robomimic's layout; returns the number of demos.

    The demo groups are copied as they are (robomimic reads ``obs``, ``next_obs``, ``actions``,
    ``rewards``, ``dones``, ``states`` and ignores the extra ``terminated`` / ``truncated`` /
    ``final_state``, which keep the round trip lossless). The ``format`` attributes are dropped so
    that gail_robot treats the file as robomimic's.
    """

    def edit(f: h5py.File) -> None:
        with open_h5(src.path) as g:
            f.copy(g["data"], "data")
            if "mask" in g:
                f.copy(g["mask"], "mask")
        for attr in ("format", "format_version"):
            del f["data"].attrs[attr]

    publish_once(out, edit, create=lambda f: None)
    return len(src)


def _robomimic_meta(f: h5py.File, path: Path, names: list[str]) -> EnvMeta:
    attrs = f["data"].attrs
    try:
        env_args = json.loads(attrs["env_args"])
    except (KeyError, ValueError) as exc:
        raise UserError(f"{path}: /data has no valid env_args attribute ({exc})") from None
    env_id = str(env_args.get("env_name", ""))
    if not env_id:
        raise UserError(f"{path}: env_args has no env_name")
    if not names:
        raise UserError(f"{path}: no demo groups in /data")
    first = f["data"][names[0]]
    if "observation_space" in attrs and "action_space" in attrs:
        obs_space = space_from_json(json.loads(attrs["observation_space"]))
        act_space = space_from_json(json.loads(attrs["action_space"]))
    else:
        # A robomimic file from elsewhere: spaces from the data (robomimic actions are in [-1, 1]).
        keys = list(first["obs"])
        boxes: dict[str, gym.Space[Any]] = {
            k: gym.spaces.Box(
                -np.inf, np.inf, shape=first["obs"][k].shape[1:], dtype=first["obs"][k].dtype.type
            )
            for k in keys
        }
        obs_space = boxes["state"] if keys == ["state"] else gym.spaces.Dict(boxes)
        act_space = gym.spaces.Box(-1.0, 1.0, shape=first["actions"].shape[1:], dtype=np.float32)
    assert isinstance(act_space, gym.spaces.Box)
    states = first["states"] if "states" in first else None
    return EnvMeta(
        env_id=env_id,
        env_kwargs=dict(env_args.get("env_kwargs") or {}),
        observation_space=obs_space,
        action_space=act_space,
        env_version=str(env_args.get("env_version", "")),
        state_size=int(states.shape[1]) if states is not None and states.ndim == 2 else None,
    )


def _robomimic_demos(
    f: h5py.File, path: Path, names: list[str], meta: EnvMeta
) -> Iterator[tuple[str, Episode]]:
    from gail_robot.data.schema import obs_keys

    keys = obs_keys(meta.observation_space)
    for name in names:
        g = f["data"][name]
        n = len(g["actions"])
        obs = {k: g["obs"][k][()] for k in keys}
        if "next_obs" in g:
            next_obs = {k: g["next_obs"][k][()] for k in keys}
        else:  # robomimic allows files without next_obs: shift obs (the last successor repeats)
            next_obs = {k: np.concatenate([v[1:], v[-1:]]) for k, v in obs.items()}
        dones = g["dones"][()].astype(bool) if "dones" in g else np.zeros(n, dtype=bool)
        if "terminated" in g and "truncated" in g:
            term, trunc = g["terminated"][()].astype(bool), g["truncated"][()].astype(bool)
        else:
            term, trunc = _ends(dones, ~dones)
        states = g["states"][()] if "states" in g else np.zeros((n, 0))
        attrs = g.attrs
        yield (
            name,
            _episode(
                path,
                name,
                obs=obs,
                next_obs=next_obs,
                actions=g["actions"][()],
                rewards=g["rewards"][()] if "rewards" in g else np.zeros(n),
                terminated=term,
                truncated=trunc,
                states=states,
                final_state=g["final_state"][()] if "final_state" in g else states[-1],
                seed=int(attrs.get("seed", -1)),
                source=str(attrs.get("source", "robomimic")),
                success=bool(attrs.get("success", dones[-1])),
                model_file=attrs.get("model_file"),
                # intervention recordings keep their datasets (both or neither: Episode checks)
                policy_actions=g["policy_actions"][()] if "policy_actions" in g else None,
                interventions=g["interventions"][()] if "interventions" in g else None,
            ),
        )


def from_robomimic(src: Path, out: Path, overwrite: bool = False) -> int:
    """Import a robomimic-layout file (ours or robomimic's own); returns the number of demos.

    Files written by robomimic lack terminations, truncations and the final state: the last step
    is marked terminated when ``dones`` says so and truncated otherwise, and the final state
    repeats the last stored state (such demos replay up to their last step).
    """
    with open_h5(src) as f:
        if "data" not in f:
            raise UserError(f"{src}: no /data group (not a robomimic file)")
        names = sorted_demo_names(f["data"].keys())
        meta = _robomimic_meta(f, src, names)
        masks = {m: [v.decode() for v in f["mask"][m][()]] for m in f["mask"]} if "mask" in f else {}
        with DemoWriter(out, meta=meta, mode="w" if overwrite else "x") as writer:
            writer.write_demos(_robomimic_demos(f, src, names, meta), masks)
    return len(names)


# ----------------------------------------------------------------------------------------------
# npz
# ----------------------------------------------------------------------------------------------


def to_npz(src: DemoDataset, out: Path) -> int:
    """Flat arrays: steps of all demos concatenated, per-demo arrays, and a JSON header.

    Keys: ``obs.<key>``, ``next_obs.<key>`` ``(M, ...)``; ``actions`` ``(M, A)``; ``rewards``,
    ``terminated``, ``truncated`` ``(M,)``; ``states`` ``(M, S)``; ``final_states`` ``(E, S)``;
    ``demo_names``, ``demo_lengths``, ``demo_seeds``, ``demo_success``, ``demo_sources`` ``(E,)``;
    ``mask.<name>`` (demo names); ``meta``: JSON string (env id, kwargs, spaces, state size).
    Files with intervention recordings add ``policy_actions`` ``(M, A)``, ``interventions`` ``(M,)
    uint8`` and ``demo_intervention`` ``(E,) bool`` (which demos have them; the rows of the
    others hold their own actions and 0).
    """
    demos = list(src)
    if not demos:
        raise UserError(f"{src.path}: no demos to convert")
    keys = src.obs_keys
    out_arrays: dict[str, np.ndarray] = {}
    for k in keys:
        out_arrays[f"obs.{k}"] = np.concatenate([d.obs[k] for d in demos])
        out_arrays[f"next_obs.{k}"] = np.concatenate([d.next_obs[k] for d in demos])
    for field in ("actions", "rewards", "terminated", "truncated", "states"):
        out_arrays[field] = np.concatenate([getattr(d, field) for d in demos])
    if any(d.interventions is not None for d in demos):
        out_arrays["policy_actions"] = np.concatenate(
            [d.policy_actions if d.policy_actions is not None else d.actions for d in demos]
        )
        out_arrays["interventions"] = np.concatenate(
            [d.interventions if d.interventions is not None else np.zeros(len(d), np.uint8) for d in demos]
        ).astype(np.uint8)
        out_arrays["demo_intervention"] = np.array([d.interventions is not None for d in demos], dtype=bool)
    out_arrays["final_states"] = np.stack([d.final_state for d in demos])
    out_arrays["demo_names"] = np.array([d.name for d in demos])
    out_arrays["demo_lengths"] = np.array([len(d) for d in demos], dtype=np.int64)
    out_arrays["demo_seeds"] = np.array([int(d.attrs.get("seed", -1)) for d in demos], dtype=np.int64)
    out_arrays["demo_success"] = np.array([d.success for d in demos], dtype=bool)
    out_arrays["demo_sources"] = np.array([str(d.attrs.get("source", "")) for d in demos])
    for mask, names in src.masks().items():
        out_arrays[f"mask.{mask}"] = np.array(names)
    m = src.meta
    out_arrays["meta"] = np.array(
        json.dumps(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "env_id": m.env_id,
                "env_kwargs": m.env_kwargs,
                "env_version": m.env_version,
                "observation_space": space_to_json(m.observation_space),
                "action_space": space_to_json(m.action_space),
                "state_size": m.state_size,
            }
        )
    )
    tmp = out.parent / f".{out.name}.{os.getpid()}.tmp.npz"
    try:
        np.savez_compressed(tmp, **out_arrays)  # type: ignore[arg-type]
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(demos)


def from_npz(src: Path, out: Path, overwrite: bool = False) -> int:
    """Import a file written by :func:`to_npz`; returns the number of demos."""
    try:
        z = np.load(src, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{src}: not a readable .npz file ({exc})") from None
    with z:
        try:
            header = json.loads(str(z["meta"]))
        except KeyError:
            raise UserError(f"{src}: no 'meta' array (not written by 'gail-robot data convert')") from None
        if header.get("format") != FORMAT or int(header.get("format_version", -1)) != FORMAT_VERSION:
            raise UserError(
                f"{src}: unsupported npz header {header.get('format')} v{header.get('format_version')}"
            )
        act_space = space_from_json(header["action_space"])
        assert isinstance(act_space, gym.spaces.Box)
        meta = EnvMeta(
            env_id=header["env_id"],
            env_kwargs=header["env_kwargs"],
            observation_space=space_from_json(header["observation_space"]),
            action_space=act_space,
            env_version=header.get("env_version", ""),
            state_size=header.get("state_size"),
        )
        keys = [k[len("obs.") :] for k in z.files if k.startswith("obs.")]
        data = {k: z[k] for k in z.files}
    lengths = data["demo_lengths"]
    offsets = np.concatenate([[0], np.cumsum(lengths)])

    flagged = data.get("demo_intervention")

    def demos() -> Iterator[tuple[str, Episode]]:
        for i, name in enumerate(data["demo_names"]):
            s = slice(int(offsets[i]), int(offsets[i + 1]))
            has = flagged is not None and bool(flagged[i])
            yield (
                str(name),
                _episode(
                    src,
                    str(name),
                    obs={k: data[f"obs.{k}"][s] for k in keys},
                    next_obs={k: data[f"next_obs.{k}"][s] for k in keys},
                    actions=data["actions"][s],
                    rewards=data["rewards"][s],
                    terminated=data["terminated"][s],
                    truncated=data["truncated"][s],
                    states=data["states"][s],
                    final_state=data["final_states"][i],
                    seed=int(data["demo_seeds"][i]),
                    source=str(data["demo_sources"][i]),
                    success=bool(data["demo_success"][i]),
                    policy_actions=data["policy_actions"][s] if has else None,
                    interventions=data["interventions"][s] if has else None,
                ),
            )

    masks = {k[len("mask.") :]: [str(v) for v in data[k]] for k in data if k.startswith("mask.")}
    with DemoWriter(out, meta=meta, mode="w" if overwrite else "x") as writer:
        writer.write_demos(demos(), masks)
    return len(lengths)


# ----------------------------------------------------------------------------------------------
# Minari
# ----------------------------------------------------------------------------------------------


def _minari() -> Any:
    try:
        import minari
    except ImportError:
        raise UserError(
            "Minari conversion needs the minari package: pip install 'gail-robot[minari]'"
        ) from None
    return minari


def _minari_root(root: str | os.PathLike[str] | None) -> None:
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = os.fspath(root)


def to_minari(src: DemoDataset, dataset_id: str, root: str | os.PathLike[str] | None = None) -> int:
    """Create a Minari dataset ``dataset_id`` (``namespace/name-v0``) from a demo file.

    Minari stores ``N + 1`` observations per episode (the reset observation plus every successor);
    the physics states travel in ``infos["physics_state"]`` (``N + 1`` rows: the stored states and
    the final state), the success flag in ``infos["is_success"]`` (at the last row) and the reset
    seed in the episode's ``seed``.
    """
    minari = _minari()
    _minari_root(root)
    from minari.data_collector.episode_buffer import EpisodeBuffer

    keys = src.obs_keys
    dict_obs = isinstance(src.observation_space, gym.spaces.Dict)
    buffers = []
    for i, d in enumerate(src):
        obs_rows = {k: np.concatenate([d.obs[k], d.next_obs[k][-1:]]) for k in keys}
        success = np.zeros(len(d) + 1, dtype=bool)
        success[-1] = d.success
        seed = int(d.attrs.get("seed", -1))
        buffers.append(
            EpisodeBuffer(
                id=i,
                seed=seed if seed >= 0 else None,
                observations=obs_rows if dict_obs else obs_rows[keys[0]],
                actions=d.actions,
                rewards=list(d.rewards.astype(np.float64)),
                terminations=list(d.terminated),
                truncations=list(d.truncated),
                infos={
                    MINARI_STATE_INFO: np.concatenate([d.states, d.final_state[None]]),
                    "is_success": success,
                },
            )
        )
    if not buffers:
        raise UserError(f"{src.path}: no demos to convert")
    probe = src.meta.make_env()
    env_spec = probe.spec
    probe.close()
    try:
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env_spec,
            eval_env=env_spec,  # same env; saying so silences Minari's warning
            algorithm_name="gail_robot demos",
            observation_space=src.observation_space,
            action_space=src.action_space,
            description=f"converted from {src.path.name} by gail-robot data convert",
        )
    except ValueError as exc:
        raise UserError(f"cannot create Minari dataset '{dataset_id}': {exc}") from None
    return len(buffers)


def from_minari(
    dataset_id: str, out: Path, root: str | os.PathLike[str] | None = None, overwrite: bool = False
) -> int:
    """Import a local Minari dataset; returns the number of episodes.

    Episodes without ``infos["physics_state"]`` (datasets not written by gail_robot) get empty
    physics states (size 0): they train fine but cannot be replayed.
    """
    minari = _minari()
    _minari_root(root)
    try:
        ds = minari.load_dataset(dataset_id)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(f"no local Minari dataset '{dataset_id}' ({exc})") from None
    env_spec = ds.spec.env_spec
    act_space = ds.action_space
    if not isinstance(act_space, gym.spaces.Box):
        raise UserError(f"Minari dataset '{dataset_id}' has a {type(act_space).__name__} action space")
    obs_space = ds.observation_space
    episodes = list(ds.iterate_episodes())
    state_size = None
    if episodes and MINARI_STATE_INFO in episodes[0].infos:
        state_size = int(np.asarray(episodes[0].infos[MINARI_STATE_INFO]).shape[1])
    meta = EnvMeta(
        env_id=env_spec.id if env_spec is not None else dataset_id,
        env_kwargs={
            k: v for k, v in (env_spec.kwargs if env_spec is not None else {}).items() if k != "render_mode"
        },
        observation_space=obs_space,
        action_space=act_space,
        state_size=state_size,
    )
    seeds = {}
    try:
        for md in ds.storage.get_episode_metadata(range(len(episodes))):
            seeds[int(md["id"])] = int(md["seed"]) if md.get("seed") is not None else -1
    except (AttributeError, KeyError, TypeError):
        pass
    keys = list(obs_space.spaces) if isinstance(obs_space, gym.spaces.Dict) else ["state"]

    def demos() -> Iterator[tuple[str, Episode]]:
        for i, ep in enumerate(episodes):
            rows = ep.observations if isinstance(ep.observations, dict) else {keys[0]: ep.observations}
            n = len(ep.rewards)
            if MINARI_STATE_INFO in ep.infos:
                all_states = np.asarray(ep.infos[MINARI_STATE_INFO], dtype=np.float64)
                states, final = all_states[:n], all_states[n]
            else:
                states, final = np.zeros((n, 0)), np.zeros(0)
            yield (
                demo_name(i),
                _episode(
                    dataset_id,
                    demo_name(i),
                    obs={k: np.asarray(rows[k][:n]) for k in keys},
                    next_obs={k: np.asarray(rows[k][1 : n + 1]) for k in keys},
                    actions=ep.actions,
                    rewards=ep.rewards,
                    terminated=ep.terminations,
                    truncated=ep.truncations,
                    states=states,
                    final_state=final,
                    seed=seeds.get(int(ep.id), -1),
                    source=f"minari:{dataset_id}",
                    success=bool(np.asarray(ep.infos.get("is_success", [False]))[-1]),
                ),
            )

    with DemoWriter(out, meta=meta, mode="w" if overwrite else "x") as writer:
        writer.write_demos(demos())
    return len(episodes)


def convert(
    src: str,
    out: str,
    to: str | None = None,
    source_format: str | None = None,
    minari_root: str | None = None,
    overwrite: bool = False,
    task: str | None = None,
    notes: list[str] | None = None,
) -> tuple[str, str, int]:
    """Convert ``src`` to ``out``; returns ``(from_format, to_format, demos)``.

    Exactly one side is a gail_robot file: export (gail_robot -> robomimic / npz / minari / lerobot)
    or import (robomimic / npz / minari / lerobot -> gail_robot). Formats are detected from the file
    content, the extension (``.npz``) or a directory (LeRobot); a Minari dataset is named by its id.
    ``task`` is the LeRobot task string (default: the env id); what an import could not keep is
    appended to ``notes``.
    """
    src_format = source_format or detect_format(src)
    if src_format not in FORMATS:
        raise UserError(f"unknown format '{src_format}' (choose from {', '.join(FORMATS)})")
    if to is None:
        to = "gail_robot" if src_format != "gail_robot" else ("npz" if out.endswith(".npz") else None)
        if to is None:
            raise UserError("say which format to write with --to (robomimic, npz, minari or lerobot)")
    if to not in FORMATS:
        raise UserError(f"unknown format '{to}' (choose from {', '.join(FORMATS)})")
    if task is not None and to != "lerobot":
        raise UserError("--task is the LeRobot dataset's task description: it goes with --to lerobot")
    if (src_format == "gail_robot") == (to == "gail_robot"):
        raise UserError(f"convert goes from or to the gail_robot format, not {src_format} -> {to}")
    out_path = Path(out)
    if to != "minari" and out_path.exists() and not overwrite:
        raise UserError(f"{out}: exists already (pass --overwrite to replace it)")
    if src_format == "gail_robot":
        dataset = DemoDataset(src)
        try:
            if is_discrete(dataset.action_space):
                # robomimic and the flat formats assume continuous action vectors (datasets/README.md)
                raise UserError(
                    f"{src}: demos with a {describe_space(dataset.action_space)} action space cannot be "
                    f"converted to {to} (only continuous Box actions convert)"
                )
            if to == "lerobot":
                from gail_robot.data.lerobot import to_lerobot

                n = to_lerobot(dataset, out_path, task, overwrite)
            elif to == "robomimic":
                n = to_robomimic(dataset, out_path)
            elif to == "npz":
                n = to_npz(dataset, out_path)
            else:
                n = to_minari(dataset, out, minari_root)
        finally:
            dataset.close()
    elif src_format == "robomimic":
        n = from_robomimic(Path(src), out_path, overwrite)
    elif src_format == "npz":
        n = from_npz(Path(src), out_path, overwrite)
    elif src_format == "lerobot":
        from gail_robot.data.lerobot import from_lerobot

        result = from_lerobot(Path(src), out_path, overwrite)
        n = result.episodes
        if result.dropped and notes is not None:
            notes.append(f"image/video features not imported: {', '.join(result.dropped)}")
    else:
        n = from_minari(src, out_path, minari_root, overwrite)
    return src_format, to, n
