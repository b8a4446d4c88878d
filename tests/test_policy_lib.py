"""The C++ policy library gail_robot::policy: built, installed and run from pytest against real libtorch.

``policy_check`` (csrc/policy/tests/) counts heap allocations around ``act()`` by interposing malloc & co.
and every operator new, and writes the actions of an observation file; these tests compare those actions
with Python's TorchScript forward of the same file. The build is the session fixture ``controller_build``
(conftest.py).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from policy_factory import make_checkpoint

from gail_robot import controller, export
from gail_robot.errors import UserError
from gail_robot.export import native
from gail_robot.policy_io import PolicyBundle, load_policy

ATOL = 1e-6  # C++ act() vs Python's TorchScript forward, per action component (issue 18)


def make_bundle(tmp: Path, env_id: str, **kwargs: Any) -> PolicyBundle:
    return load_policy(make_checkpoint(tmp / f"{env_id}.pt", env_id, **kwargs))


def policy_check(build: Path, policy: Path, *args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [str(controller.policy_check_path(build)), "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return dict(json.loads(proc.stdout))


def policy_check_error(build: Path, policy: Path, *args: str) -> str:
    """The one line a refused file gives (exit status 2, nothing on stdout)."""
    proc = subprocess.run(
        [str(controller.policy_check_path(build)), "--policy", str(policy), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0].removeprefix("policy_check: error: ")


def torchscript_forward(path: Path, obs: np.ndarray) -> np.ndarray:
    with export.torchscript_calls():
        module = torch.jit.load(str(path))
    with torch.inference_mode():
        return np.asarray(module(torch.from_numpy(obs)).numpy())


def compare(build: Path, tmp: Path, bundle: PolicyBundle, fmt: str, *args: str) -> dict[str, Any]:
    """Exports ``bundle`` as ``fmt``, runs policy_check on 1000 env observations; returns its report
    plus the largest difference to Python's TorchScript forward of the same policy."""
    ts = tmp / "policy.pt"
    export.export_policy(bundle, ts)
    path = ts
    if fmt == "pt2":
        path = tmp / "policy.pt2"
        export.export_policy(bundle, path, fmt="pt2")
    obs = np.ascontiguousarray(export.collect_env_observations(bundle, 1000, seed=0), dtype=np.float32)
    obs.tofile(tmp / "obs.f32")
    report = policy_check(
        build,
        path,
        "--obs",
        str(tmp / "obs.f32"),
        "--actions-out",
        str(tmp / "act.f32"),
        "--calls",
        "10000",
        *args,
    )
    cpp = np.fromfile(tmp / "act.f32", dtype=np.float32).reshape(len(obs), -1)
    python = torchscript_forward(ts, obs)
    report["max_diff"] = float(np.max(np.abs(cpp - python)))
    # How much torch disagrees with itself between batch 1000 and batch 1 (another GEMM, another float32
    # summation order): no implementation with its own kernels can be held closer than this.
    rows = np.concatenate([torchscript_forward(ts, obs[i : i + 1]) for i in range(len(obs))])
    report["torch_self_diff"] = float(np.max(np.abs(rows - python)))
    return report


MLP_CASES = [
    ("Hopper-v5", (64, 64), "tanh", False),
    ("Hopper-v5", (256, 256), "tanh", False),
    ("Humanoid-v5", (256, 256), "tanh", False),  # 348 obs -> 2x256 -> 17
    ("Walker2d-v5", (64, 64), "relu", True),  # SAC's squashed actor
    ("HalfCheetah-v5", (40,), "elu", False),  # widths that are not a multiple of the kernels' tile
    ("Ant-v5", (72, 33), "silu", False),
]
# pt2 packages compile for ~30 s each: the plain MLP and the squashed (tanh head) actor cover what the
# pt2 path adds (the weight records); the kernels themselves are the TorchScript cases'.
PT2_CASES = [MLP_CASES[0], MLP_CASES[3]]


@pytest.mark.parametrize(
    ("fmt", "env_id", "hidden", "activation", "squashed"),
    [("torchscript", *case) for case in MLP_CASES] + [("pt2", *case) for case in PT2_CASES],
)
def test_act_matches_python_torchscript_without_allocating(
    controller_build: Path,
    tmp_path: Path,
    fmt: str,
    env_id: str,
    hidden: tuple[int, ...],
    activation: str,
    squashed: bool,
) -> None:
    bundle = make_bundle(tmp_path, env_id, hidden=hidden, activation=activation, squashed=squashed)
    report = compare(controller_build, tmp_path, bundle, fmt)
    assert report["backend"] == "native-mlp" and report["allocation_free"] is True
    assert report["calls"] == 10000 and report["allocations"] == 0
    if activation == "tanh" and not squashed:  # the walkers' PPO/GAIL actors: within 1e-6 outright
        assert report["max_diff"] <= ATOL
    else:
        # Unsquashed relu/elu/silu layers reach large pre-activations (float32 ulp ~2e-6 at 30): measured
        # HalfCheetah elu 1.85e-6 where torch batch 1 vs 1000 gives 1.49e-6. A third summation order is
        # held to twice torch's own disagreement.
        assert report["max_diff"] <= max(ATOL, 2 * report["torch_self_diff"])
    assert report["rows"] == 1000 and report["all_accepted"] is True
    # A NaN observation is refused and the previous action held; so is an observation of the wrong size.
    assert report["nan_refused"] and report["nan_action_held"] and report["size_refused"]
    assert report["refused"] == 2


def test_libtorch_interpreter_backend_gives_the_same_actions(controller_build: Path, tmp_path: Path) -> None:
    """The fallback for actors the native kernels do not know: same outputs, but it allocates (measured)."""
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    report = compare(controller_build, tmp_path, bundle, "torchscript", "--backend", "libtorch")
    assert report["backend"] == "libtorch-jit" and report["allocation_free"] is False
    assert report["allocations"] > 0  # what the native kernels exist for
    assert report["max_diff"] <= ATOL and report["nan_refused"] and report["nan_action_held"]


def test_pt2_aoti_runner_backend_gives_the_same_actions(controller_build: Path, tmp_path: Path) -> None:
    """libtorch's AOTInductor runner, the pt2 fallback: same outputs, but it allocates (measured)."""
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    report = compare(controller_build, tmp_path, bundle, "pt2", "--backend", "libtorch")
    assert report["backend"] == "libtorch-aoti" and report["allocation_free"] is False
    assert report["allocations"] > 0
    assert report["max_diff"] <= ATOL and report["nan_refused"] and report["nan_action_held"]
    # The same package on the native kernels: the records hold the very weights the module was compiled from.
    native = policy_check(controller_build, tmp_path / "policy.pt2", "--backend", "native", "--calls", "10")
    assert native["backend"] == "native-mlp" and native["allocations"] == 0


def rewrite_pt2(src: Path, out: Path, records: dict[str, bytes | None]) -> Path:
    """A copy of the pt2 package ``src`` with ``records`` (names below the top folder) replaced or
    (None) removed."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        root = zin.namelist()[0].split("/")[0]
        for info in zin.infolist():
            name = info.filename.removeprefix(f"{root}/")
            if name in records:
                continue
            zout.writestr(info, zin.read(info))
        for name, data in records.items():
            if data is not None:
                zout.writestr(f"{root}/{name}", data)
    return out


def test_pt2_native_records_refused_when_corrupt_or_fall_back_when_absent(
    controller_build: Path, tmp_path: Path
) -> None:
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    good = tmp_path / "policy.pt2"
    export.export_policy(bundle, good, fmt="pt2")
    with zipfile.ZipFile(good) as archive:
        root = archive.namelist()[0].split("/")[0]
        description = json.loads(archive.read(f"{root}/{native.JSON_RECORD}"))
        blob = archive.read(f"{root}/{native.BLOB_RECORD}")
    corrupt = "corrupt native weights in the package"

    missing = rewrite_pt2(good, tmp_path / "missing.pt2", {native.BLOB_RECORD: None})
    assert policy_check_error(controller_build, missing) == (
        f"{missing}: {corrupt} (gail_robot/native_mlp.bin is missing)"
    )
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    bad_sum = rewrite_pt2(good, tmp_path / "flipped.pt2", {native.BLOB_RECORD: bytes(flipped)})
    assert policy_check_error(controller_build, bad_sum) == (
        f"{bad_sum}: {corrupt} (gail_robot/native_mlp.bin fails its checksum)"
    )
    short = rewrite_pt2(good, tmp_path / "short.pt2", {native.BLOB_RECORD: blob[:-4]})
    assert policy_check_error(controller_build, short) == (
        f"{short}: {corrupt} (gail_robot/native_mlp.bin has {len(blob) - 4} bytes, {len(blob)} expected)"
    )
    # A consistent description whose layers do not fit the blob (checksum of the blob still right).
    wrong = dict(description, layers=[dict(description["layers"][0], n_out=65), *description["layers"][1:]])
    mismatched = rewrite_pt2(good, tmp_path / "layers.pt2", {native.JSON_RECORD: json.dumps(wrong).encode()})
    assert policy_check_error(controller_build, mismatched).startswith(f"{mismatched}: {corrupt} (")
    junk = rewrite_pt2(good, tmp_path / "junk.pt2", {native.JSON_RECORD: b"{not json"})
    assert policy_check_error(controller_build, junk).startswith(
        f"{junk}: {corrupt} (extra/native_mlp.json: "
    )

    # No records (a package from before they existed) or an actor the kernels do not know: the AOTI
    # runner, and --backend native refuses with the reason.
    old = rewrite_pt2(good, tmp_path / "old.pt2", {native.JSON_RECORD: None, native.BLOB_RECORD: None})
    assert policy_check(controller_build, old, "--calls", "10")["backend"] == "libtorch-aoti"
    assert "carries no native weights" in policy_check_error(controller_build, old, "--backend", "native")
    unsupported = dict(format=native.NATIVE_FORMAT, version=1, why_not="actor X is not an MLP actor")
    other = rewrite_pt2(
        good,
        tmp_path / "other.pt2",
        {native.JSON_RECORD: json.dumps(unsupported).encode(), native.BLOB_RECORD: None},
    )
    assert policy_check(controller_build, other, "--calls", "10")["backend"] == "libtorch-aoti"
    assert policy_check_error(controller_build, other, "--backend", "native") == (
        f"{other}: cannot run allocation-free (actor X is not an MLP actor)"
    )
    # Records that load (checksum consistent) but do not reproduce the module (8 weights of the first
    # layer tripled): caught by the probe check at load, so the runner is used.
    scaled = np.frombuffer(blob, dtype=np.uint8).copy()
    obs_dim, act_dim = description["obs_dim"], description["act_dim"]
    first_weight = 16 * obs_dim + 12 * act_dim  # after the float64 stats and the float32 bounds
    scaled[first_weight : first_weight + 4 * 8].view("<f4")[:] *= 3.0
    swapped = bytes(scaled)
    tampered = dict(description, blob_fnv1a64=native.fnv1a64(swapped))
    off = rewrite_pt2(
        good,
        tmp_path / "tampered.pt2",
        {native.JSON_RECORD: json.dumps(tampered).encode(), native.BLOB_RECORD: swapped},
    )
    assert policy_check(controller_build, off, "--calls", "10")["backend"] == "libtorch-aoti"
    assert "differ from the module by" in policy_check_error(controller_build, off, "--backend", "native")


def test_find_package_app_builds_against_the_installed_prefix(controller_build: Path, tmp_path: Path) -> None:
    """A user's CMake project: only the printed prefix on CMAKE_PREFIX_PATH (no Torch package, no csrc/)."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gail_robot.cli",
            "controller",
            "cmake-prefix",
            "--build-dir",
            str(controller_build),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    prefix = Path(proc.stdout.strip())
    assert prefix == controller.cmake_prefix(controller_build)
    app_src = tmp_path / "app"
    shutil.copytree(
        Path(controller.DEFAULT_SOURCE_DIR).parent / "policy" / "examples" / "find_package_app", app_src
    )
    build = tmp_path / "app-build"
    for cmd in (
        [
            "cmake",
            "-S",
            str(app_src),
            "-B",
            str(build),
            f"-DCMAKE_PREFIX_PATH={prefix}",
            "-DCMAKE_BUILD_TYPE=Release",
        ],
        ["cmake", "--build", str(build), "--parallel", "2"],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    run = subprocess.run([str(build / "policy_app"), str(policy)], capture_output=True, text=True, check=True)
    report = json.loads(run.stdout)
    assert report["obs_dim"] == 11 and report["act_dim"] == 3 and report["backend"] == "native-mlp"
    expected = torchscript_forward(policy, np.zeros((1, 11), dtype=np.float32))[0]
    np.testing.assert_allclose(report["action"], expected, rtol=0, atol=ATOL)


def rewrite_meta(src: Path, out: Path, **changes: Any) -> Path:
    """A copy of the TorchScript export ``src`` whose meta.json has ``changes`` applied."""
    meta = export.read_meta(src)
    meta.update(changes)
    with export.torchscript_calls():
        module = torch.jit.load(str(src))
        torch.jit.save(module, str(out), _extra_files={"meta.json": json.dumps(meta)})
    return out


def test_bad_files_are_refused_in_one_line(controller_build: Path, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    good = tmp_path / "policy.pt"
    export.export_policy(bundle, good)
    missing = tmp_path / "missing.pt"
    assert policy_check_error(controller_build, missing) == f"cannot open policy {missing}: no such file"
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a zip archive")
    checkpoint = tmp_path / "Hopper-v5.pt"  # a training checkpoint: a zip, but no TorchScript code
    for path in (junk, checkpoint):
        assert policy_check_error(controller_build, path) == (
            f"{path} is not an exported gail-robot policy (not a TorchScript or pt2 archive)"
        )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert "is not an exported gail-robot policy" in policy_check_error(controller_build, truncated)
    no_meta = tmp_path / "no_meta.pt"
    with export.torchscript_calls():
        torch.jit.save(torch.jit.load(str(good)), str(no_meta))
    assert (
        policy_check_error(controller_build, no_meta)
        == f"{no_meta} has no meta.json (not exported by gail-robot)"
    )

    newer = rewrite_meta(good, tmp_path / "newer.pt", format_version=2)
    assert policy_check_error(controller_build, newer) == (
        f"{newer}: written by a newer gail-robot (policy format version 2; this library reads up to "
        "version 1): upgrade gail_robot::policy"
    )
    with pytest.raises(UserError, match=r"written by a newer gail-robot \(policy format version 2"):
        export.read_meta(newer)

    layout = export.read_meta(good)["observation_layout"]
    short_layout = [dict(layout[0], size=layout[0]["size"] - 1), *layout[1:]]
    bad_layout = rewrite_meta(good, tmp_path / "layout.pt", observation_layout=short_layout)
    assert policy_check_error(controller_build, bad_layout) == (
        f"{bad_layout}: meta.json's observation_layout has 10 values but obs_dim is 11 (mismatched file)"
    )
    with pytest.raises(UserError, match=r"observation_layout has 10 values but obs_dim is 11"):
        export.read_meta(bad_layout)

    # meta and layout agree on 12 observations, the module takes 11.
    wide_layout = [dict(layout[0], size=layout[0]["size"] + 1), *layout[1:]]
    wide = rewrite_meta(good, tmp_path / "wide.pt", obs_dim=12, observation_layout=wide_layout)
    assert policy_check_error(controller_build, wide) == (
        f"{wide}: the module takes 11 observations, meta.json says obs_dim 12 (mismatched file)"
    )
    with pytest.raises(UserError, match=r"the module takes 11 observations, meta\.json says obs_dim 12"):
        export.load_exported(wide)

    pt2_named = tmp_path / "claims_pt2.pt"
    rewrite_meta(good, pt2_named, module_format="pt2")
    assert policy_check_error(controller_build, pt2_named) == (
        f"{pt2_named}: meta.json says module_format 'pt2' but the file holds a torchscript module "
        "(mismatched file)"
    )


def test_format_is_chosen_by_contents_not_name(controller_build: Path, tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    odd_name = tmp_path / "policy.pt2"  # a TorchScript file named like a pt2 package
    export.export_policy(bundle, tmp_path / "policy.pt")
    shutil.copy(tmp_path / "policy.pt", odd_name)
    assert zipfile.is_zipfile(odd_name)
    assert policy_check(controller_build, odd_name, "--calls", "10")["backend"] == "native-mlp"


def test_realtime_loop_example_runs_at_a_fixed_rate(controller_build: Path, tmp_path: Path) -> None:
    """The template loop runs 500 Hz for 1 s and reports its misses (not asserted: the machine is shared)."""
    bundle = make_bundle(tmp_path, "Hopper-v5", hidden=(64, 64))
    policy = tmp_path / "policy.pt"
    export.export_policy(bundle, policy)
    model = controller.default_model(export.read_meta(policy))
    binary = controller_build / controller.REALTIME_LOOP_NAME
    proc = subprocess.run(
        [str(binary), "--policy", str(policy), "--model", str(model), "--hz", "500", "--seconds", "1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["ticks"] == 500 and report["backend"] == "native-mlp" and report["refused"] == 0
    assert 0 <= report["deadline_misses"] <= report["deadlines_skipped"]
    assert 0 < report["act_us_p50"] <= report["act_us_max"] and report["wake_late_us_p50"] >= 0
