"""Editing demo files: merging files of the same env and writing train/valid masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gail_robot.data.publish import publish
from gail_robot.data.reader import DemoDataset
from gail_robot.data.schema import demo_name, open_h5, read_header
from gail_robot.data.writer import DemoWriter
from gail_robot.errors import UserError


def merge(sources: list[str | os.PathLike[str]], out: str | os.PathLike[str], overwrite: bool = False) -> int:
    """Concatenate demo files of the same env and spaces into ``out``; returns the number of demos.

    Demos are renumbered ``demo_0 ..`` in source order (numeric order within each source); masks
    are carried over under the new names (masks of the same name are joined). Groups are copied
    with HDF5's own copy, so chunking and compression stay as they were.
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
    for ds in datasets:
        ds.close()
    count = 0
    masks: dict[str, list[str]] = {}

    def edit(f: object) -> None:
        nonlocal count
        import h5py

        assert isinstance(f, h5py.File)
        data = f["data"]
        for ds in datasets:
            renamed: dict[str, str] = {}
            with open_h5(ds.path) as g:
                read_header(g, ds.path)
                for name in ds.demo_names:
                    new = demo_name(count)
                    g.copy(g["data"][name], data, name=new)
                    data.attrs["total"] = int(data.attrs["total"]) + int(g["data"][name].attrs["num_samples"])
                    renamed[name] = new
                    count += 1
            for mask, names in ds.masks().items():
                masks.setdefault(mask, []).extend(renamed[n] for n in names)
            ds.close()
        if masks:
            group = f.create_group("mask")
            for mask, names in masks.items():
                group.create_dataset(mask, data=np.array([n.encode() for n in names], dtype="S"))

    from gail_robot.data.schema import write_header

    with DemoWriter(out_path, meta=first.meta, mode="w") as writer:  # holds the lock; replaced atomically
        publish(writer.path, edit, create=lambda f: write_header(f.create_group("data"), first.meta))
    return count


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
