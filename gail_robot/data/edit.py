"""Editing demo files: merging files of the same env and writing train/valid masks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from gail_robot.data.episode import Episode
from gail_robot.data.reader import DemoDataset
from gail_robot.data.schema import demo_name
from gail_robot.data.writer import DemoWriter
from gail_robot.errors import UserError


def merge(sources: list[str | os.PathLike[str]], out: str | os.PathLike[str], overwrite: bool = False) -> int:
    """Concatenate demo files of the same env and spaces into ``out``; returns the number of demos.

    Demos are renumbered ``demo_0 ..`` in source order (numeric order within each source); masks
    are carried over under the new names (masks of the same name are joined). One transaction:
    ``out`` appears complete or not at all.
    """
    if len(sources) < 2:
        raise UserError("merge needs at least two files")
    out_path = Path(out)
    if out_path.exists() and not overwrite:
        raise UserError(f"{out}: exists already (pass --overwrite to replace it)")
    if any(Path(s).resolve() == out_path.resolve() for s in sources):
        raise UserError(f"{out}: the output must not be one of the inputs")
    datasets = [DemoDataset(s) for s in sources]
    first = datasets[0]
    for ds in datasets[1:]:
        problem = first.meta.mismatch(ds.meta)
        if problem is not None:
            raise UserError(f"cannot merge {ds.path} into {first.path}: {problem}")
    masks: dict[str, list[str]] = {}

    def demos() -> Iterator[tuple[str, Episode]]:
        count = 0
        for ds in datasets:
            renamed: dict[str, str] = {}
            for name in ds.demo_names:
                renamed[name] = demo_name(count)
                count += 1
                yield renamed[name], ds.demo(name).episode()
            for mask, names in ds.masks().items():
                masks.setdefault(mask, []).extend(renamed[n] for n in names)
            ds.close()

    with DemoWriter(out_path, meta=first.meta, mode="w") as writer:  # holds the lock; replaced atomically
        written = writer.write_demos(demos(), masks)
    return len(written)


def split(path: str | os.PathLike[str], valid: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """Write ``/mask/train`` and ``/mask/valid`` (a random split of the demos); returns both lists.

    Args:
        path: the demo file (updated atomically).
        valid: fraction of demos for validation, in ``(0, 1)``; at least one demo goes to each side.
        seed: seed of the shuffle.
    """
    if not 0.0 < valid < 1.0:
        raise UserError(f"--valid must be a fraction in (0, 1), got {valid}")
    ds = DemoDataset(path)
    names = list(ds.demo_names)
    meta = ds.meta
    ds.close()
    if len(names) < 2:
        raise UserError(f"{path}: {len(names)} demo(s); a split needs at least 2")
    order = np.random.default_rng(seed).permutation(len(names))
    n_valid = min(len(names) - 1, max(1, round(valid * len(names))))
    valid_set = {names[i] for i in order[:n_valid]}
    train_names = [n for n in names if n not in valid_set]
    valid_names = [n for n in names if n in valid_set]
    with DemoWriter(path, meta=meta, mode="a") as writer:
        writer.write_masks({"train": train_names, "valid": valid_names})
    return train_names, valid_names
