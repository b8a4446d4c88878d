"""``gail-robot record``: record demonstrations from a person or an expert into an HDF5 demo file."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from gail_robot.errors import UserError

KEYMAP_HELP = """\
keyboard map (viewer window, or the terminal when there is no display):
  W/S or Up/Down +x/-x   A/D or Left/Right +y/-y   R/F or PageUp/PageDown +z/-z
  Space or Insert toggle gripper   Enter save episode   Backspace or Delete discard   Q/Esc quit
  T or Home take over from the policy / hand back (--intervene)
  (envs other than the arm tasks: W/S drive one action dimension, A/D select it;
   in the viewer prefer the arrow/page keys: letters also toggle MuJoCo's own view options)
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``gail-robot record``."""
    from gail_robot.teleop.devices import DEVICES

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = KEYMAP_HELP
    parser.add_argument(
        "--env", required=True, help="Gymnasium id, e.g. gail_robot/ArmPush-v0 or Humanoid-v5"
    )
    parser.add_argument(
        "--env-kwargs", default="{}", metavar="JSON", help="gym.make keyword arguments as JSON"
    )
    parser.add_argument("--device", required=True, choices=DEVICES, help="who acts (random: for smoke tests)")
    parser.add_argument(
        "--policy",
        help="policy for --device policy, or the policy that drives with --intervene: "
        "checkpoint, run directory or policy.pt",
    )
    parser.add_argument(
        "--intervene",
        action="store_true",
        help="the --policy drives and the --device person takes over (keyboard: T/Home toggles; "
        "gamepad: hold a trigger; spacemouse: move the puck; scripted: the expert's gate)",
    )
    parser.add_argument(
        "--on-disconnect",
        choices=("keep", "discard"),
        default="keep",
        help="a device that disconnects mid-episode: keep the episode so far (cut short) or discard it; "
        "recording then stops (default keep)",
    )
    parser.add_argument(
        "--takeover-threshold",
        type=float,
        default=0.5,
        metavar="D",
        help="--device scripted --intervene: take over when ||policy - expert action|| > D "
        "([-1, 1] units, default 0.5)",
    )
    parser.add_argument(
        "--stall-steps",
        type=int,
        default=20,
        metavar="N",
        help="--device scripted --intervene: take over after N steps without progress (0: never; default 20)",
    )
    parser.add_argument(
        "--handback-steps",
        type=int,
        default=10,
        metavar="K",
        help="--device scripted --intervene: the expert hands back after K steps (default 10)",
    )
    parser.add_argument("--out", required=True, help="demo file (.hdf5); an existing file is appended to")
    parser.add_argument("--episodes", type=int, default=10, help="demos to save (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="reset seed of the first episode (default 0)")
    parser.add_argument("--noise", type=float, default=0.0, help="expert action noise, std in half-ranges")
    parser.add_argument("--only-success", action="store_true", help="keep successful episodes only")
    parser.add_argument(
        "--min-return",
        type=float,
        metavar="R",
        help="keep episodes whose return is at least R only (e.g. drop a walker expert's stumbles)",
    )
    parser.add_argument(
        "--max-steps", type=int, help="cut episodes after this many steps (stored as truncated)"
    )
    parser.add_argument(
        "--max-attempts", type=int, help="give up after this many episodes (default 10 x N + 10)"
    )
    parser.add_argument("--speed", type=float, default=1.0, help="teleop motion scale in (0, 1]")
    parser.add_argument("--render", action="store_true", help="show experts in the MuJoCo viewer")
    parser.add_argument(
        "--realtime", action="store_true", help="pace experts at the control rate (teleop always is)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--no-fsync",
        action="store_true",
        help="skip fsync per episode (still safe against crashes, not power loss)",
    )


def main(args: argparse.Namespace) -> int:
    """Run ``gail-robot record``."""
    import gymnasium as gym

    import gail_robot.envs  # noqa: F401  (registers the project's tasks)
    from gail_robot.data.writer import DemoWriter
    from gail_robot.teleop.devices import make_device
    from gail_robot.teleop.recorder import StatusLine, record

    try:
        env_kwargs: dict[str, Any] = json.loads(args.env_kwargs)
    except json.JSONDecodeError as exc:
        raise UserError(f"--env-kwargs is not valid JSON: {exc}") from None
    if not isinstance(env_kwargs, dict):
        raise UserError("--env-kwargs must be a JSON object")
    if args.intervene and not args.policy:
        raise UserError(
            "--intervene needs --policy RUN (the run directory, checkpoint or policy.pt that drives)"
        )
    if args.intervene:
        from gail_robot.teleop.intervention import INTERVENE_DEVICES

        if args.device not in INTERVENE_DEVICES:
            raise UserError(
                f"--intervene takes over with a person's device: --device {'|'.join(INTERVENE_DEVICES)}, "
                f"not {args.device}"
            )
    if args.device == "policy" and not args.policy:
        raise UserError("--device policy needs --policy FILE (a checkpoint, run directory or policy.pt)")
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    if args.min_return is not None and not math.isfinite(args.min_return):
        raise UserError(f"--min-return must be a finite number, got {args.min_return}")
    try:
        env = gym.make(args.env, **env_kwargs)
    except gym.error.Error as exc:
        raise UserError(f"cannot make env '{args.env}': {exc}") from None
    status = StatusLine()
    try:
        # episodes are compressed and written by the writer's helper process, off the recording loop
        mode = "w" if args.overwrite else "a"
        driver = None
        if args.intervene:  # checked before the file is touched
            from gail_robot.teleop.intervention import load_driving_policy

            driver = load_driving_policy(args.policy, env)
        with DemoWriter(args.out, env, mode=mode, durable=not args.no_fsync) as writer:
            device = make_device(
                args.device,
                env,
                policy=args.policy,
                noise=args.noise,
                seed=args.seed,
                speed=args.speed,
                render=args.render,
            )
            if driver is not None:
                from gail_robot.teleop.intervention import make_intervention_device

                try:
                    device = make_intervention_device(
                        args.device,
                        env,
                        driver,
                        device,
                        threshold=args.takeover_threshold,
                        stall_steps=args.stall_steps,
                        handback_steps=args.handback_steps,
                    )
                except UserError:
                    device.close()
                    raise
            try:
                if device.interactive:
                    status.message(KEYMAP_HELP.rstrip())
                stats = record(
                    env,
                    device,
                    writer,
                    episodes=args.episodes,
                    seed=args.seed,
                    only_success=args.only_success,
                    min_return=args.min_return,
                    max_steps=args.max_steps,
                    max_attempts=args.max_attempts,
                    realtime=True if args.realtime else None,
                    status=status,
                    on_disconnect=args.on_disconnect,
                )
            finally:
                device.close()
    finally:
        env.close()
    summary = (
        f"{len(stats.saved)} demos saved to {args.out} ({stats.saved_steps} steps"
        f"{f', {stats.discarded} discarded' if stats.discarded else ''}"
        f"{f', {stats.rejected} dropped by --only-success / --min-return' if stats.rejected else ''})"
    )
    print(summary, file=sys.stderr)
    if args.intervene:
        from gail_robot.data.reader import DemoDataset

        with DemoDataset(args.out) as ds:
            taken, recorded = ds.intervention_counts()
        if recorded:
            print(
                f"interventions: {taken} of {recorded} steps in {args.out} were driven by the person "
                f"({100 * taken / recorded:.1f} %)",
                file=sys.stderr,
            )
    if len(stats.saved) < args.episodes and not stats.quit:
        print(
            f"gail-robot record: only {len(stats.saved)} of {args.episodes} episodes were kept "
            f"(raise --max-attempts, or relax --only-success / --min-return)",
            file=sys.stderr,
        )
        return 1
    return 0
