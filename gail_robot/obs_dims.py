"""Observation-dim lists (``[7, "0:3"]``): which inputs a learner ignores (docs/DESIGN.md §8.9, §8.10) or an
evaluation zeroes. Below every room that reads them: the config, the discriminator and ``gail-robot eval``."""

from __future__ import annotations

import numpy as np

from gail_robot.errors import UserError


def ignored_obs_indices(spec: list[int | str], obs_dim: int, key: str) -> np.ndarray:
    """A list of observation dims (``policy.ignore_obs``, ``bc.ignore_obs``, ``gail.disc_ignore_obs``,
    ``eval --zero-obs``: the setting ``key``) as sorted unique indices, e.g. ``[7, "0:3"] -> [0, 1, 2, 7]``.

    Raises:
        UserError: an entry that is not an index or an ``"a:b"`` range inside ``[0, obs_dim)``.
    """
    out: set[int] = set()
    for item in spec:
        text = str(item).strip()
        try:
            if ":" in text:
                a, b = (int(x) for x in text.split(":"))
                if not 0 <= a < b <= obs_dim:
                    raise ValueError
                out.update(range(a, b))
            else:
                i = int(text)
                if not 0 <= i < obs_dim:
                    raise ValueError
                out.add(i)
        except ValueError:
            raise UserError(
                f"{key}: {item!r} is not an index or a range a:b within the {obs_dim} observation dims"
            ) from None
    return np.array(sorted(out), dtype=np.int64)
