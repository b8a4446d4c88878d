"""The _core extension: its .pyi stub matches the compiled functions, and a missing build fails loudly."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import gail_robot
from gail_robot import _core

STUB = Path(gail_robot.__file__).with_name("_core.pyi")
STUB_ALIASES = {"_F32": "f32", "_F64": "f64", "_Bool": "bool"}


def canonical_doc_type(text: str) -> str:
    """Reduce a pybind11 signature type to f32 / f64 / bool / float / int / str / None."""
    text = text.strip()
    array = re.search(r"(?:ndarray|NDArray)\[numpy\.(float32|float64|bool_?)", text)
    if array:
        return {"float32": "f32", "float64": "f64"}.get(array.group(1), "bool")
    if "SupportsFloat" in text:
        return "float"
    if "SupportsInt" in text:
        return "int"
    return text


def split_top_level(params: str) -> list[str]:
    """Split 'a: X[b, c], d: Y' at commas that are not inside brackets."""
    parts, depth, current = [], 0, ""
    for ch in params:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def compiled_signatures() -> dict[str, tuple[list[tuple[str, str]], str]]:
    out = {}
    for name in dir(_core):
        if name.startswith("_") or not callable(getattr(_core, name)):
            continue
        first_line = getattr(_core, name).__doc__.splitlines()[0]
        match = re.fullmatch(rf"{name}\((.*)\) -> (.+)", first_line)
        assert match, first_line
        params = []
        for part in split_top_level(match.group(1)):
            arg, _, annotation = part.partition(":")
            params.append((arg.strip(), canonical_doc_type(annotation)))
        out[name] = (params, canonical_doc_type(match.group(2)))
    return out


def stub_signatures() -> dict[str, tuple[list[tuple[str, str]], str]]:
    tree = ast.parse(STUB.read_text())
    out = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            params = []
            for arg in node.args.args:
                assert arg.annotation is not None, f"{node.name}({arg.arg}) has no annotation"
                annotation = ast.unparse(arg.annotation)
                params.append((arg.arg, STUB_ALIASES.get(annotation, annotation)))
            assert node.returns is not None
            out[node.name] = (params, ast.unparse(node.returns))
    return out


def stub_constants() -> dict[str, str]:
    tree = ast.parse(STUB.read_text())
    return {
        node.target.id: ast.unparse(node.annotation)
        for node in tree.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
    }


def test_stub_constants_match_compiled_module() -> None:
    compiled = {
        name: type(getattr(_core, name)).__name__
        for name in dir(_core)
        if not name.startswith("_") and not callable(getattr(_core, name))
    }
    assert compiled == stub_constants()
    assert _core.NORM_EPSILON == 1e-8


def test_stub_matches_compiled_module() -> None:
    compiled = compiled_signatures()
    stub = stub_signatures()
    assert sorted(stub) == sorted(compiled)
    for name, signature in compiled.items():
        assert stub[name] == signature, name


def test_missing_extension_fails_loudly() -> None:
    # Simulate a broken build: importing gail_robot._core fails. gail_robot.core must not fall back.
    code = (
        "import sys; sys.modules['gail_robot._core'] = None\n"
        "try:\n    import gail_robot.core\n"
        "except ImportError as e:\n    print(e)\n"
        "else:\n    print('IMPORTED')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "gail_robot._core (the compiled C++ kernels) failed to import" in result.stdout
    assert "pip install --no-build-isolation --no-deps -e ." in result.stdout
