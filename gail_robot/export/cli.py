"""``gail-robot export``: arguments, the export, and the report of ``--verify``."""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from gail_robot.errors import UserError
from gail_robot.export.formats import FORMATS, export_policy, require_onnx_extra
from gail_robot.export.module import MODES
from gail_robot.export.verify import CLOSED_LOOP_ATOL, CLOSED_LOOP_COMPARE_STEPS, VERIFY_ATOL, verify_export
from gail_robot.policy_io import load_policy


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gail-robot export``."""
    parser.add_argument("source", help="run directory, training checkpoint or exported TorchScript file")
    parser.add_argument("--out", required=True, help="output file (policy.pt, policy.onnx or policy.pt2)")
    parser.add_argument(
        "--format", default="torchscript", help="torchscript (default), onnx (needs the [onnx] extra) or pt2"
    )
    parser.add_argument(
        "--mode", default="script", help="TorchScript compilation: script (default) or trace (actor only)"
    )
    parser.add_argument("--verify", action="store_true", help="reload in a fresh process and compare")
    parser.add_argument("--demos", default=None, help="demo file whose observations --verify also checks")
    parser.add_argument("--verify-obs", type=int, default=1000, help="env (and demo) observations to compare")
    parser.add_argument("--verify-steps", type=int, default=1000, help="closed-loop rollout length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verification rollouts")


def main(args: argparse.Namespace) -> int:
    """Run ``gail-robot export``: 0 on success, 1 when ``--verify`` finds a mismatch."""
    # Option errors come before the (slow) policy load and env construction.
    fmt = str(args.format).lower()
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{args.format}' (choose from {', '.join(FORMATS)})")
    if fmt == "onnx":
        require_onnx_extra()
    if args.mode not in MODES:
        raise UserError(f"unknown --mode '{args.mode}' (choose from {', '.join(MODES)})")
    if args.verify_obs < 1000 and args.verify:
        raise UserError("--verify-obs must be at least 1000")
    bundle = load_policy(args.source)
    meta = export_policy(bundle, args.out, fmt=fmt, mode=args.mode, source=str(args.source))
    if fmt == "onnx":
        controller = "no (it runs TorchScript and pt2 files)"
    elif meta["observation_layout"] is None:
        controller = f"no ({meta['controller_note']})"
    else:
        controller = "yes"
    print(
        f"exported {meta['env_id']} policy ({meta['obs_dim']} obs -> "
        f"{bundle.describe_actions() if bundle.discrete else str(meta['act_dim'])} actions, "
        f"dt {meta['dt']:.4g} s) to {args.out} [{fmt}]; C++ controller: {controller}"
    )
    if fmt == "pt2":
        print(
            f"note: {args.out} holds machine code compiled for this CPU ({platform.machine()}, its best SIMD "
            f"level) and torch {torch.__version__}; rebuild it on the target machine"
        )
    if not args.verify:
        return 0
    report = verify_export(bundle, args.out, args.demos, args.verify_obs, args.verify_steps, args.seed)
    demos = f" + {report['n_demo_obs']} demo" if report["n_demo_obs"] else " (no demo file: pass --demos)"
    print(
        f"verify: {report['n_env_obs']} env{demos} observations in a fresh process: "
        f"max |a_export - a_python| = {report['open_loop_max_abs_diff']:.3g} (tolerance {VERIFY_ATOL:g})"
    )
    print(
        f"verify: closed loop seed {args.seed}: {report['closed_loop_steps_exported']} steps "
        f"(python {report['closed_loop_steps_python']}), max action diff first "
        f"{CLOSED_LOOP_COMPARE_STEPS} steps {report['closed_loop_max_abs_diff_head']:.3g} "
        f"(tolerance {CLOSED_LOOP_ATOL:g}), whole episode {report['closed_loop_max_abs_diff_all']:.3g}; "
        f"return {report['return_exported']:.2f} vs {report['return_python']:.2f}"
    )
    if not report["ok"]:
        print("verify: FAILED: the exported policy does not match the Python policy", file=sys.stderr)
        return 1
    print("verify: OK")
    return 0
