"""Errors a user can cause. The CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input from the user (missing file, wrong env, bad option): no traceback at the CLI."""
