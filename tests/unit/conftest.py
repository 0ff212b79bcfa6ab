"""Fixtures of the unit tests."""

from tests.config_helpers import write

__all__ = ["write"]
