"""``gail-robot controller``: build the C++ policy library and the deployment controller, run the controller.

Both are compiled on the user's machine, never by the Python package build (the library links the installed
torch wheel's libtorch; docs/DESIGN.md §5): ``csrc/policy/`` is the library ``gail_robot::policy``, built
and installed into ``BUILD_DIR/prefix``; ``csrc/controller/`` holds the controller and the real-time loop
example, built on the installed library with ``find_package`` as a user's application would be (MuJoCo
from the installed mujoco wheel).

- ``gail-robot controller build [--build-dir DIR]`` builds and installs both, prints the controller's path;
- ``gail-robot controller path`` prints the path of the built binary;
- ``gail-robot controller cmake-prefix`` prints the directory to put on ``CMAKE_PREFIX_PATH`` for
  ``find_package(gail_robot_policy CONFIG REQUIRED)``;
- ``gail-robot controller run POLICY.pt [--model XML] [--steps N] [--episodes N] ...`` runs the closed
  loop and prints the controller's JSON report (the model defaults to the env's MJCF named in meta.json;
  walkers and the arm tasks, whose report carries ``success_rate`` over the episodes).

The binary itself is ``gail-robot-controller``; see its ``--help`` for the options it takes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from gail_robot.errors import UserError

BINARY_NAME = "gail-robot-controller"
REALTIME_LOOP_NAME = "gail-robot-realtime-loop"
POLICY_CHECK_NAME = "policy_check"
RT_ABLATION_NAME = "rt_ablation"
PACKAGE_CONFIG = Path("lib") / "cmake" / "gail_robot_policy" / "gail_robot_policyConfig.cmake"
_PACKAGE_DIR = Path(__file__).resolve().parent
# Source checkouts (and editable installs) hold csrc/ next to the package; a wheel carries a copy of
# csrc/policy, csrc/controller and csrc/softplus.h in gail_robot/csrc/ (the top-level CMake install).
DEFAULT_SOURCE_DIR = _PACKAGE_DIR.parent / "csrc" / "controller"
PACKAGED_SOURCE_DIR = _PACKAGE_DIR / "csrc" / "controller"
# build/controller/ of a source checkout; a per-user cache for an installed wheel (never site-packages).
DEFAULT_BUILD_DIR = (
    _PACKAGE_DIR.parent / "build" / "controller"
    if DEFAULT_SOURCE_DIR.is_dir()
    else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gail_robot" / "controller"
)


def _source_dir(source_dir: str | Path | None) -> Path:
    if source_dir is not None:
        src = Path(source_dir)
    elif (DEFAULT_SOURCE_DIR / "CMakeLists.txt").is_file():
        src = DEFAULT_SOURCE_DIR
    else:
        src = PACKAGED_SOURCE_DIR
    if not (src / "CMakeLists.txt").is_file():
        raise UserError(f"controller sources not found in {src}: reinstall gail-robot, or pass --source-dir")
    if not (src.parent / "policy" / "CMakeLists.txt").is_file():
        raise UserError(f"policy library sources not found next to {src} (expected {src.parent / 'policy'})")
    return src


def _build_dir(build_dir: str | Path | None) -> Path:
    return Path(build_dir) if build_dir is not None else DEFAULT_BUILD_DIR


def binary_path(build_dir: str | Path | None = None) -> Path:
    """The built controller binary; UserError if it has not been built there."""
    path = _build_dir(build_dir) / BINARY_NAME
    if not path.is_file():
        raise UserError(
            f"the controller is not built in {path.parent}: run 'gail-robot controller build' first"
        )
    return path


def cmake_prefix(build_dir: str | Path | None = None) -> Path:
    """The install prefix of the built policy library (for ``CMAKE_PREFIX_PATH``); UserError if not built."""
    prefix = _build_dir(build_dir).resolve() / "prefix"
    if not (prefix / PACKAGE_CONFIG).is_file():
        raise UserError(
            f"the policy library is not installed in {prefix}: run 'gail-robot controller build' first"
        )
    return prefix


def policy_check_path(build_dir: str | Path | None = None) -> Path:
    """``policy_check``, the policy library's test tool (built in ``BUILD_DIR/policy``)."""
    path = _build_dir(build_dir) / "policy" / POLICY_CHECK_NAME
    if not path.is_file():
        raise UserError(
            f"{POLICY_CHECK_NAME} is not built in {path.parent}: run 'gail-robot controller build'"
        )
    return path


def rt_ablation_path(build_dir: str | Path | None = None) -> Path:
    """``rt_ablation``, the measured ablation of the library's real-time measures (beside policy_check)."""
    path = _build_dir(build_dir) / "policy" / RT_ABLATION_NAME
    if not path.is_file():
        raise UserError(
            f"{RT_ABLATION_NAME} is not built in {path.parent}: run 'gail-robot controller build'"
        )
    return path


def _generator(build: Path) -> list[str]:
    # Ninja when available (faster no-op rebuilds); never switch generators on an existing build dir.
    return ["-G", "Ninja"] if shutil.which("ninja") and not (build / "CMakeCache.txt").exists() else []


def cmake_arguments(source: Path, build: Path, jobs: int) -> list[list[str]]:
    """The commands: configure, build and install the library, then configure and build the controller.

    libtorch comes from the installed torch wheel, MuJoCo from the installed mujoco wheel.
    """
    import mujoco
    import torch.utils

    lib_build, prefix = build / "policy", build / "prefix"
    return [
        [
            "cmake",
            "-S",
            str(source.parent / "policy"),
            "-B",
            str(lib_build),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
            *_generator(lib_build),
        ],
        ["cmake", "--build", str(lib_build), "--parallel", str(jobs)],
        ["cmake", "--install", str(lib_build)],
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_PREFIX_PATH={prefix}",
            f"-DMUJOCO_DIR={Path(mujoco.__file__).resolve().parent}",
            *_generator(build),
        ],
        ["cmake", "--build", str(build), "--parallel", str(jobs)],
    ]


def build_controller(
    build_dir: str | Path | None = None,
    source_dir: str | Path | None = None,
    jobs: int | None = None,
    verbose: bool = False,
) -> Path:
    """Build and install the policy library, then build the controller on it; returns the binary's path.

    Re-running on an existing build directory only recompiles what changed. The build log is kept in
    ``BUILD_DIR/build.log``.

    Raises:
        UserError: cmake missing or the build failed (the log's tail goes to stderr first).
    """
    if shutil.which("cmake") is None:
        raise UserError("cmake is not installed: pip install cmake (or apt-get install cmake)")
    src = _source_dir(source_dir)
    build = _build_dir(build_dir).resolve()
    build.mkdir(parents=True, exist_ok=True)
    log_path = build / "build.log"
    jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
    steps = cmake_arguments(src, build, jobs)
    with log_path.open("w") as log:
        for cmd in steps:
            log.write("$ " + " ".join(cmd) + "\n")
            log.flush()
            proc = subprocess.run(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
            )
            log.write(proc.stdout)
            if verbose:
                sys.stderr.write(proc.stdout)
            if proc.returncode != 0:
                tail = "\n".join(proc.stdout.strip().splitlines()[-20:])
                if not verbose:
                    sys.stderr.write(tail + "\n")
                raise UserError(f"controller build failed at '{' '.join(cmd[:3])}' (full log: {log_path})")
    return binary_path(build)


def default_model(meta: dict[str, Any]) -> Path:
    """The MJCF the policy was trained on: meta's path where it exists, else Gymnasium's asset."""
    path = meta.get("model_path")
    if path and Path(path).is_file():
        return Path(path)
    name = meta.get("model_file")
    if name:
        import gymnasium

        # Gymnasium's walkers, or the project's own arm scene (gail_robot/envs/assets).
        for assets in (
            Path(gymnasium.__file__).parent / "envs" / "mujoco" / "assets",
            _PACKAGE_DIR / "envs" / "assets",
        ):
            candidate = assets / str(name)
            if candidate.is_file():
                return candidate
    raise UserError("cannot find the policy's MJCF model here: pass --model MODEL.xml")


def controller_command(
    policy: str | Path,
    model: str | Path | None = None,
    steps: int | None = None,
    build_dir: str | Path | None = None,
    extra: list[str] | None = None,
) -> list[str]:
    """The ``gail-robot-controller`` command line for ``policy`` (model resolved from its meta.json).

    ``steps`` None: the controller's default, the env's time limit (1000 where meta.json has none).
    """
    from gail_robot.export import detect_format, read_meta

    policy = Path(policy)
    fmt = detect_format(policy) if policy.is_file() else "torchscript"  # (read_meta reports a missing file)
    if fmt not in ("torchscript", "pt2"):
        raise UserError(
            f"{policy} is a {fmt} export: the C++ controller runs TorchScript and pt2 files "
            "(--format torchscript)"
        )
    meta = read_meta(policy)
    if meta.get("observation_layout") is None:
        note = meta.get("controller_note") or "no observation layout in meta.json"
        raise UserError(f"{policy} cannot run in the C++ controller: {note}")
    model_path = Path(model) if model is not None else default_model(meta)
    if not model_path.is_file():
        raise UserError(f"no such model file: {model_path}")
    cmd = [
        str(binary_path(build_dir)),
        "--policy",
        str(policy),
        "--model",
        str(model_path),
    ]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    return cmd + list(extra or [])


def run_controller(
    policy: str | Path,
    model: str | Path | None = None,
    steps: int | None = None,
    build_dir: str | Path | None = None,
    extra: list[str] | None = None,
) -> dict[str, Any]:
    """Run the closed loop and return the controller's JSON report.

    Raises:
        UserError: the controller refused its input (its one-line error is the message).
    """
    cmd = controller_command(policy, model, steps, build_dir, extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise UserError(last.removeprefix(f"{BINARY_NAME}: error: "))
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``gail-robot controller``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="configure and build gail-robot-controller (CMake)")
    build.add_argument("--build-dir", default=None, help=f"build directory (default: {DEFAULT_BUILD_DIR})")
    build.add_argument("--source-dir", default=None, help="controller sources (default: csrc/controller)")
    build.add_argument("--jobs", type=int, default=None, help="parallel compile jobs")
    build.add_argument("--verbose", action="store_true", help="show the compiler output")
    path = sub.add_parser("path", help="print the path of the built controller binary")
    path.add_argument("--build-dir", default=None)
    prefix = sub.add_parser(
        "cmake-prefix", help="print the policy library's install prefix (for CMAKE_PREFIX_PATH)"
    )
    prefix.add_argument("--build-dir", default=None)
    run = sub.add_parser("run", help="run an exported policy in the C++ closed loop (prints JSON)")
    run.add_argument("policy", help="exported TorchScript policy (gail-robot export)")
    run.add_argument("--model", default=None, help="MJCF model (default: the env's model named in meta.json)")
    run.add_argument(
        "--steps",
        type=int,
        default=None,
        help="control steps per episode (default: the env's time limit; an episode ends early on a fall, "
        "or on an arm task's success when the env terminates on success)",
    )
    run.add_argument(
        "--episodes", type=int, default=None, help="episodes (arm tasks: the report gives success_rate)"
    )
    run.add_argument(
        "--build-dir", default=None, help=f"where the controller was built (default: {DEFAULT_BUILD_DIR})"
    )
    run.add_argument(
        "--state-file",
        default=None,
        help="initial mjSTATE_INTEGRATION states (text, np.savetxt): one row per episode, or one for all",
    )
    run.add_argument("--init-qpos", default=None, help="initial qpos (text, nq numbers)")
    run.add_argument("--init-qvel", default=None, help="initial qvel (text, nv numbers)")
    run.add_argument("--actions-out", default=None, help="write the actions, one line per step")
    run.add_argument("--obs-out", default=None, help="write the observations, one line per step")
    run.add_argument(
        "--states-out",
        default=None,
        help="write the mjSTATE_INTEGRATION state after each step, one line per step",
    )
    run.add_argument(
        "--no-terminate",
        action="store_true",
        help="keep running after the robot fell (or an arm task succeeded)",
    )
    run.add_argument("--realtime", action="store_true", help="pace the loop at the control timestep")
    run.add_argument("--spin", action="store_true", help="with --realtime: busy-wait instead of sleeping")
    run.add_argument("--cpu", type=int, default=None, help="pin the control thread to this core")
    run.add_argument("--rt-priority", type=int, default=None, help="SCHED_FIFO priority (needs CAP_SYS_NICE)")
    run.add_argument(
        "--reset-noise", type=float, default=None, help="walkers: uniform noise on the initial qpos/qvel"
    )
    run.add_argument(
        "--seed", type=int, default=None, help="seed of the resets (--reset-noise; arm tasks' cube and goal)"
    )


def main(args: argparse.Namespace) -> int:
    """Run ``gail-robot controller``."""
    if args.action == "build":
        print(build_controller(args.build_dir, args.source_dir, args.jobs, args.verbose))
        return 0
    if args.action == "path":
        print(binary_path(args.build_dir))
        return 0
    if args.action == "cmake-prefix":
        print(cmake_prefix(args.build_dir))
        return 0
    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be at least 1")
    if args.episodes is not None and args.episodes < 1:
        raise UserError("--episodes must be at least 1")
    extra: list[str] = []
    for flag, value in (
        ("--episodes", args.episodes),
        ("--states-out", args.states_out),
        ("--state-file", args.state_file),
        ("--init-qpos", args.init_qpos),
        ("--init-qvel", args.init_qvel),
        ("--actions-out", args.actions_out),
        ("--obs-out", args.obs_out),
        ("--reset-noise", args.reset_noise),
        ("--seed", args.seed),
        ("--cpu", args.cpu),
        ("--rt-priority", args.rt_priority),
    ):
        if value is not None:
            extra += [flag, str(value)]
    extra += ["--no-terminate"] if args.no_terminate else []
    extra += ["--realtime"] if args.realtime else []
    extra += ["--spin"] if args.spin else []
    print(json.dumps(run_controller(args.policy, args.model, args.steps, args.build_dir, extra)))
    return 0
