"""Task variants with changed dynamics, derived from a Gymnasium env's own MuJoCo model.

The AIRL transfer experiment (Fu et al. 2018, "Learning Robust Rewards with Adversarial Inverse
Reinforcement Learning", sec. 7.2) learns a reward on one body and re-optimises it on another. A
variant here is the original task with its model edited: the same observation and action spaces and
the same reward function (forward velocity, healthy bonus, control cost of the v5 walker), on
changed dynamics. Each variant's model is built at construction from the XML that Gymnasium ships for
the original task (so it follows the installed version), edited with :mod:`xml.etree`, written to a
temporary file for MuJoCo to read, and deleted once the env holds the compiled model.

Variants (registered by :mod:`gail_robot.envs` and declared with the original's task properties):

* ``gail_robot/HopperCrippled-v0``: Hopper-v5 with its foot motor's gear cut from 200 to 20: the
  ankle is nearly powerless (the "crippled joint" of the issue; cf. the paper's disabled Ant).
* ``gail_robot/HopperHeavy-v0``: Hopper-v5 with a torso three times as dense (mass 3.53 -> 10.6 kg).
* ``gail_robot/HalfCheetahShortShin-v0``: HalfCheetah-v5 with its front shin half as long (the front
  foot moves up to meet it), the paper's "disabled Ant" with shortened legs in HalfCheetah's form.
  HalfCheetah never terminates, so a learned reward's level cannot pay for falling or for standing.
* ``gail_robot/Walker2dCrippled-v0``: Walker2d-v5 with its right ankle's gear cut tenfold (100 -> 10),
  the Hopper variant's crippled joint on a biped that keeps a working leg. The shipped Walker2d
  expert falls on it after ~140 steps (328 +- 12 over 5 episodes, 4253 on Walker2d-v5).
"""

from __future__ import annotations

import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple


class Variant(NamedTuple):
    """A changed-dynamics variant of a Gymnasium MuJoCo task.

    Attributes:
        original: the Gymnasium id whose model, reward and time limit it keeps (e.g. ``Hopper-v5``).
        xml: the model file of the original, relative to Gymnasium's ``envs/mujoco/assets``.
        edit: edits the parsed model in place.
        description: one line for docs and the transfer table.
    """

    original: str
    xml: str
    edit: Callable[[ET.Element], None]
    description: str


def _find(root: ET.Element, tag: str, **attrs: str) -> ET.Element:
    for element in root.iter(tag):
        if all(element.get(k) == v for k, v in attrs.items()):
            return element
    raise ValueError(f"no <{tag} {attrs}> in the model")


def _cripple_foot(root: ET.Element, gear: str) -> None:
    # "foot_joint" is Hopper's only ankle and Walker2d's right one
    _find(root, "motor", joint="foot_joint").set("gear", gear)


def _heavy_torso(root: ET.Element) -> None:
    # inertiafromgeom="true": the body's mass is the geom's volume times its density (default 1000)
    _find(root, "geom", name="torso_geom").set("density", "3000")


def _short_front_shin(root: ET.Element) -> None:
    # The shin capsule runs from the knee to the foot's joint at (.13, -.18): halve it and move the foot
    # up to its new end. settotalmass keeps the body's total mass at 14 kg.
    shin = _find(root, "geom", name="fshin")
    shin.set("size", "0.046 .053")
    shin.set("pos", ".0325 0 -.045")
    _find(root, "body", name="ffoot").set("pos", ".065 0 -.09")


VARIANTS: dict[str, Variant] = {
    "gail_robot/HopperCrippled-v0": Variant(
        "Hopper-v5",
        "hopper.xml",
        partial(_cripple_foot, gear="20.0"),
        "Hopper-v5, foot motor gear 200 -> 20 (crippled ankle)",
    ),
    "gail_robot/HopperHeavy-v0": Variant(
        "Hopper-v5", "hopper.xml", _heavy_torso, "Hopper-v5, torso density x3 (10.6 kg instead of 3.5)"
    ),
    "gail_robot/HalfCheetahShortShin-v0": Variant(
        "HalfCheetah-v5",
        "half_cheetah.xml",
        _short_front_shin,
        "HalfCheetah-v5, front shin half as long (0.22 -> 0.11 m from knee to foot joint)",
    ),
    "gail_robot/Walker2dCrippled-v0": Variant(
        "Walker2d-v5",
        "walker2d_v5.xml",
        partial(_cripple_foot, gear="10"),
        "Walker2d-v5, right ankle gear 100 -> 10",
    ),
}


def original_of(env_id: str) -> str:
    """The task ``env_id`` is a variant of, or ``env_id`` itself."""
    variant = VARIANTS.get(env_id)
    return variant.original if variant else env_id


def variant_xml(env_id: str) -> str:
    """The edited model of variant ``env_id`` as XML text."""
    import gymnasium

    variant = VARIANTS[env_id]
    source = Path(gymnasium.__file__).resolve().parent / "envs" / "mujoco" / "assets" / variant.xml
    root = ET.parse(source).getroot()
    variant.edit(root)
    return ET.tostring(root, encoding="unicode")


def make_variant(variant_id: str, **kwargs: Any) -> Any:
    """Gymnasium entry point of a variant: the original's env class on the edited model."""
    import gymnasium as gym

    original = VARIANTS[variant_id].original
    entry = gym.registry[original].entry_point
    assert isinstance(entry, str)
    module_name, class_name = entry.split(":")
    import importlib

    env_class = getattr(importlib.import_module(module_name), class_name)
    fd, path = tempfile.mkstemp(suffix=".xml", prefix="gail_robot_variant_")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(variant_xml(variant_id))
        return env_class(xml_file=path, **kwargs)
    finally:
        os.unlink(path)  # MuJoCo compiled it: the env never reads the file again


__all__ = ["VARIANTS", "Variant", "make_variant", "original_of", "variant_xml"]
