"""Environments: the project's manipulation tasks (registered on import) and env helpers."""
