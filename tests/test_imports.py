"""The package's import graph: rooms import only downward, and no module imports itself back.

Every ``import`` / ``from ... import`` statement of ``gail_robot`` is read with ``ast``, also those
inside functions and under ``TYPE_CHECKING``: a function-level import that closes a cycle is still
a cycle (docs/DESIGN.md §1).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import gail_robot

PACKAGE_DIR = Path(gail_robot.__file__).resolve().parent

# docs/DESIGN.md §1, bottom to top: a module may import modules of its own room or of lower layers.
# Rooms are matched by the longest prefix; every module must match one.
ROOMS: dict[str, tuple[int, str]] = {
    "gail_robot": (-1, "package"),  # the package's own __init__ (the version): below everything
    "gail_robot.errors": (0, "errors"),
    "gail_robot.versions": (0, "versions"),
    "gail_robot.core": (1, "core"),
    "gail_robot.cluster": (1, "cluster"),
    "gail_robot.obs_dims": (1, "obs_dims"),
    "gail_robot._core": (1, "core"),
    "gail_robot.nets": (2, "nets"),
    "gail_robot.envs": (3, "envs"),
    "gail_robot.data": (4, "data"),
    "gail_robot.policy_io": (5, "policy_io"),
    "gail_robot.reward_io": (5, "reward_io"),
    "gail_robot.evaluate": (6, "evaluate"),
    "gail_robot.algos": (7, "algos"),
    "gail_robot.export": (7, "export"),
    "gail_robot.teleop": (7, "teleop"),
    "gail_robot.cli": (8, "cli"),
    "gail_robot.algos.cli": (8, "cli"),
    "gail_robot.data.cli": (8, "cli"),
    "gail_robot.teleop.cli": (8, "cli"),
    "gail_robot.export.cli": (8, "cli"),
    "gail_robot.export.reward_cli": (8, "cli"),
    "gail_robot.quickstart": (8, "cli"),
    "gail_robot.dagger": (8, "cli"),
    "gail_robot.controller": (8, "cli"),
    "gail_robot.plot": (8, "cli"),
    # an orchestrator of train + eval like quickstart (it reuses the train command's rules and
    # gail_robot.plot), and its own cli imports it: the command's room, not a room of layer 8 beside it
    "gail_robot.sweep": (8, "cli"),
    "gail_robot.sweep.cli": (8, "cli"),
}

# Known cycles, to be removed rather than added to.
KNOWN_CYCLES: set[frozenset[str]] = set()  # none: keep it that way


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def imported_modules(name: str, source: str) -> set[str]:
    """The ``gail_robot`` modules ``source`` (module ``name``) imports anywhere in its body."""
    is_package = MODULES[name].name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES else base)
    out = set()
    for target in found:
        while target and target not in MODULES and target != "gail_robot._core":
            target = target.rpartition(".")[0]
        if target.startswith("gail_robot") and target != name:
            out.add(target)
    return out


def room_of(module: str) -> tuple[int, str]:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in ROOMS:
            return ROOMS[prefix]
    raise AssertionError(f"module {module} is in no room: add it to ROOMS (docs/DESIGN.md §1)")


def import_graph() -> dict[str, set[str]]:
    return {name: imported_modules(name, path.read_text()) for name, path in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_the_parser_sees_function_level_and_relative_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "import gail_robot.core\n"
        "from . import errors\n"
        "def f():\n"
        "    from gail_robot.algos.sac import SAC\n"
        "    import gail_robot.data.reader as r\n"
    )
    found = imported_modules("gail_robot.policy_io", source)
    assert found == {"gail_robot.core", "gail_robot.errors", "gail_robot.algos.sac", "gail_robot.data.reader"}


def test_cycle_finder_finds_a_function_level_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_rooms_import_only_downward() -> None:
    """A lower room never imports a higher one, nor a sibling room of its layer (even in a function)."""
    bad = []
    for module, targets in import_graph().items():
        layer, room = room_of(module)
        for target in sorted(targets):
            t_layer, t_room = room_of(target)
            if t_room != room and t_layer >= layer:
                bad.append(f"{module} ({room}, layer {layer}) imports {target} ({t_room}, layer {t_layer})")
    assert not bad, "\n".join(bad)


def test_no_import_cycles() -> None:
    cycles = [c for c in find_cycles(import_graph()) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not n.endswith("__main__")))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)


def test_ray_stays_off_the_default_code_path() -> None:
    """Ray is an optional extra: the command, the trainers and the vector envs load without it."""
    import subprocess
    import sys

    code = (
        "import sys, gail_robot.cli, gail_robot.algos.trainer, gail_robot.envs.ray_vector, "
        "gail_robot.sweep.cli; "
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
