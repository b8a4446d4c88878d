"""The ``gail-robot`` command: a thin dispatcher over one module per subcommand.

Each subcommand module exposes ``add_arguments(parser)`` and ``main(args) -> int``. Modules are
imported only when their subcommand runs (or its ``--help`` is asked for), so ``gail-robot --help``
stays fast and does not import torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from gail_robot import __version__, mujoco_gl_problem
from gail_robot.errors import UserError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "record": ("gail_robot.teleop.cli", "record demonstrations (teleop, scripted or policy expert)"),
    "data": ("gail_robot.data.cli", "inspect, validate, replay, convert, merge and split demo files"),
    "train": ("gail_robot.algos.cli", "train a policy: bc, gail / airl (ppo/trpo generator), ppo, trpo, sac"),
    "eval": ("gail_robot.evaluate", "evaluate a run directory or checkpoint"),
    "plot": ("gail_robot.plot", "plot learning curves of run directories"),
    "export": ("gail_robot.export.cli", "export a policy to TorchScript (or ONNX / pt2)"),
    "export-reward": ("gail_robot.export.reward_cli", "export the learned reward of an airl or gail run"),
    "controller": ("gail_robot.controller", "build or run the C++ deployment controller"),
    "quickstart": ("gail_robot.quickstart", "record, train, eval and export on a built-in task"),
    "sweep": ("gail_robot.sweep.cli", "K seeds (x a grid) of a config on Ray, with IQM and CIs"),
    "dagger": (
        "gail_robot.dagger",
        "HG-DAgger / IWR rounds: the policy drives, a person takes over, BC retrains",
    ),
}


def _build_parser(chosen: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gail-robot",
        description="Record robot demonstrations, imitate them (GAIL / BC), deploy policies to C++.",
    )
    parser.add_argument("--version", action="version", version=f"gail-robot {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.add_arguments(sp)
            sp.set_defaults(_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen not in SUBCOMMANDS:
        chosen = None
    if chosen is not None:
        # Every command may import mujoco (a subcommand's module, or an env it makes): a MUJOCO_GL
        # that would kill that import is reported once, here, as the variable to change.
        problem = mujoco_gl_problem()
        if problem is not None:
            print(f"gail-robot {chosen}: error: {problem}", file=sys.stderr)
            return 2
    try:
        parser = _build_parser(chosen)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("gail_robot"):
            print(f"gail-robot: error: command '{chosen}' is not available in this build", file=sys.stderr)
            return 2
        raise
    except Exception as exc:
        if _gl_import_failure(exc):
            print(f"gail-robot {chosen}: error: {_gl_import_message(exc)}", file=sys.stderr)
            return 2
        raise
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._module.main(args) or 0)
    except UserError as exc:
        print(f"gail-robot {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gail-robot {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head` that closed early: not an error worth a traceback.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:
        if _gl_import_failure(exc):
            print(f"gail-robot {args.command}: error: {_gl_import_message(exc)}", file=sys.stderr)
            return 2
        raise


# Where `import mujoco` fails when its GL backend cannot load (mujoco's GL modules, PyOpenGL).
_GL_IMPORT_PATHS = ("/mujoco/rendering/", "/mujoco/egl/", "/mujoco/osmesa/", "/mujoco/glfw/", "/OpenGL/")


def _gl_import_failure(exc: BaseException) -> bool:
    """Whether ``exc`` came out of importing mujoco's GL backend (the case mujoco_gl_problem missed)."""
    import traceback

    files = [frame.filename.replace("\\", "/") for frame in traceback.extract_tb(exc.__traceback__)]
    importing = any(f.startswith("<frozen importlib") for f in files)
    return importing and any(part in f for f in files for part in _GL_IMPORT_PATHS)


def _gl_import_message(exc: BaseException) -> str:
    import os

    value = os.environ.get("MUJOCO_GL", "")
    backends = (("egl", "GPU"), ("osmesa", "software"))
    others = [f"MUJOCO_GL={gl} ({what})" for gl, what in backends if gl != value]
    return (
        f"importing mujoco failed with MUJOCO_GL={value} ({type(exc).__name__}: {exc}); "
        f"set {' or '.join(others)}, or unset it with a display"
    )


if __name__ == "__main__":
    sys.exit(main())
