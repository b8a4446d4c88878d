"""``gail-robot data info|validate|replay|convert|merge|split``."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

from gail_robot.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-subcommands of ``gail-robot data``."""
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = sub.add_parser("info", help="summary: demos, steps, returns, success, spaces, sources, env")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")

    p = sub.add_parser("validate", help="check schema, dtypes, shapes, NaN/inf, lengths and version")
    p.add_argument("file")

    p = sub.add_parser("replay", help="re-simulate a demo from its states or open loop from its actions")
    p.add_argument("file")
    p.add_argument("--demo", default="0", help="demo index or name (default 0)")
    p.add_argument("--mode", choices=("states", "actions"), default="states")
    p.add_argument("--video", help="write an MP4 of the replay (rendered offscreen)")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--json", action="store_true", help="print the result as JSON")

    formats = ("gail_robot", "robomimic", "npz", "minari", "lerobot")
    p = sub.add_parser("convert", help="to/from robomimic, flat .npz, Minari and LeRobot v3.0")
    p.add_argument(
        "src", help="demo file, robomimic file, .npz file, LeRobot dataset directory or Minari dataset id"
    )
    p.add_argument(
        "--out",
        required=True,
        help="output file, LeRobot dataset directory for --to lerobot, or Minari dataset id for --to minari",
    )
    p.add_argument("--to", choices=formats, help="output format")
    p.add_argument("--from", dest="source_format", choices=formats, help="input format (default: detected)")
    p.add_argument("--task", help="--to lerobot: the dataset's task description (default: the env id)")
    p.add_argument(
        "--minari-root", help="Minari datasets directory (default: MINARI_DATASETS_PATH or ~/.minari)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    p = sub.add_parser("merge", help="concatenate demo files of the same env and spaces")
    p.add_argument("files", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    p = sub.add_parser("split", help="write /mask/train and /mask/valid")
    p.add_argument("file")
    p.add_argument("--valid", type=float, default=0.1, help="fraction of demos for validation (default 0.1)")
    p.add_argument("--seed", type=int, default=0)


def summary(path: str) -> dict[str, Any]:
    """The numbers ``data info`` prints."""
    import numpy as np

    from gail_robot.data.reader import DemoDataset
    from gail_robot.data.schema import describe_space

    with DemoDataset(path) as ds:
        attrs = [ds.demo_attrs(n) for n in ds.demo_names]
        returns = np.array([float(a.get("return", np.nan)) for a in attrs])
        success = np.array([bool(a.get("success", False)) for a in attrs])
        lengths = np.array(ds.lengths)
        taken, recorded = ds.intervention_counts()
        stats = lambda x: (  # noqa: E731
            {"mean": float(x.mean()), "std": float(x.std()), "min": float(x.min()), "max": float(x.max())}
            if len(x)
            else {}
        )
        return {
            "file": str(path),
            "env_id": ds.env_id,
            "env_kwargs": ds.env_kwargs,
            "observation_space": describe_space(ds.observation_space),
            "action_space": describe_space(ds.action_space),
            "state_size": ds.meta.state_size,
            "demos": len(ds),
            "steps": ds.num_steps,
            "length": stats(lengths),
            "return": stats(returns),
            "success_rate": float(success.mean()) if len(success) else 0.0,
            "sources": dict(Counter(str(a.get("source", "?")) for a in attrs)),
            "masks": {k: len(v) for k, v in ds.masks().items()},
            # intervention recordings (docs/DESIGN.md §3): steps the person drove / steps recorded so
            "intervention_steps": taken,
            "intervention_recorded_steps": recorded,
            "intervention_rate": taken / recorded if recorded else None,
        }


def _print_info(info: dict[str, Any]) -> None:
    def fmt(s: dict[str, float]) -> str:
        if not s:
            return "-"
        return f"{s['mean']:.2f} ± {s['std']:.2f}  [{s['min']:.2f}, {s['max']:.2f}]"

    rows = [
        ("file", info["file"]),
        ("env", info["env_id"] + (f" {json.dumps(info['env_kwargs'])}" if info["env_kwargs"] else "")),
        ("observation space", info["observation_space"]),
        ("action space", info["action_space"]),
        ("physics state size", str(info["state_size"])),
        ("demos", str(info["demos"])),
        ("steps", str(info["steps"])),
        ("episode length", fmt(info["length"])),
        ("return", fmt(info["return"])),
        ("success rate", f"{100 * info['success_rate']:.1f} %"),
        ("sources", ", ".join(f"{k} ({v})" for k, v in info["sources"].items()) or "-"),
        ("masks", ", ".join(f"{k} ({v})" for k, v in info["masks"].items()) or "-"),
        (
            "interventions",
            f"{100 * info['intervention_rate']:.1f} % ({info['intervention_steps']} of "
            f"{info['intervention_recorded_steps']} policy-run steps taken over)"
            if info["intervention_rate"] is not None
            else "-",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(args: argparse.Namespace) -> int:
    """Run one ``gail-robot data`` action."""
    cmd = args.data_command
    if cmd == "info":
        info = summary(args.file)
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_info(info)
        return 0
    if cmd == "validate":
        from gail_robot.data.validate import validate_file

        problems = validate_file(args.file)
        for problem in problems:
            print(f"{args.file}: {problem}")
        if problems:
            print(f"{args.file}: {len(problems)} problem(s)", file=sys.stderr)
            return 1
        print(f"{args.file}: valid")
        return 0
    if cmd == "replay":
        from dataclasses import asdict

        from gail_robot.data.reader import DemoDataset
        from gail_robot.data.replay import replay_demo

        with DemoDataset(args.file) as ds:
            result = replay_demo(ds, args.demo, args.mode, args.video, args.width, args.height)
        if args.json:
            print(json.dumps(asdict(result)))
            return 0
        print(
            f"{result.demo} ({result.steps} steps, mode {result.mode}): "
            f"max state error {result.max_state_error:.3g}, "
            f"max qpos error {result.max_qpos_error:.3g}, final qpos error {result.final_qpos_error:.3g}, "
            f"max obs error {result.max_obs_error:.3g}"
        )
        if args.video:
            print(f"wrote {args.video} ({result.frames} frames)")
        return 0
    if cmd == "convert":
        from gail_robot.data.convert import convert

        notes: list[str] = []
        src_format, to, n = convert(
            args.src,
            args.out,
            args.to,
            args.source_format,
            args.minari_root,
            args.overwrite,
            task=args.task,
            notes=notes,
        )
        for note in notes:  # what an import could not keep
            print(f"note: {note}")
        print(f"converted {n} demos: {args.src} ({src_format}) -> {args.out} ({to})")
        if to == "minari" and src_format == "gail_robot":
            from gail_robot.data.reader import DemoDataset

            with DemoDataset(args.src) as ds:
                if ds.intervention_counts()[1]:
                    print("note: policy_actions / interventions were dropped (Minari has no slot for them)")
        return 0
    if cmd == "merge":
        from gail_robot.data.edit import merge

        n = merge(args.files, args.out, args.overwrite)
        print(f"merged {n} demos from {len(args.files)} files into {args.out}")
        return 0
    if cmd == "split":
        from gail_robot.data.edit import split

        train, valid = split(args.file, args.valid, args.seed)
        print(f"{args.file}: /mask/train {len(train)} demos, /mask/valid {len(valid)} demos")
        return 0
    raise UserError(f"unknown data action '{cmd}'")
