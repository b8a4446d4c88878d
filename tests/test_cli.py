"""The gail-robot command itself: --help, --version, unknown subcommands."""

from cli_runner import run_cli

import gail_robot


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"gail-robot {gail_robot.__version__}"


def test_help_lists_subcommands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for name in ("record", "data", "train", "eval", "export"):
        assert name in result.stdout


def test_unknown_subcommand_is_one_clear_error() -> None:
    result = run_cli("fly")
    assert result.returncode != 0
    assert "invalid choice: 'fly'" in result.stderr
    assert "Traceback" not in result.stderr
