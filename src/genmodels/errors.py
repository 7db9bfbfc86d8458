"""User-facing errors: one clear line naming the problem and the fix.

Everything the CLI reports as ``error: ...`` with exit code 2 is a ``GenmodelsError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class GenmodelsError(Exception):
    """A problem the user can fix; its message is one line naming the problem and the fix."""


class ConfigError(GenmodelsError, ValueError):
    """A bad config value, key or name."""


class DataError(GenmodelsError):
    """A dataset that cannot be found, read or verified."""


class CheckpointError(GenmodelsError):
    """A run directory or checkpoint that cannot be read, verified or written."""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The closest valid spelling of ``name`` among ``choices``, or None."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """A ConfigError for an unknown ``kind`` name that suggests the closest valid one."""
    choices = sorted(choices)
    guess = closest(name, choices)
    hint = f"did you mean '{guess}'? " if guess else ""
    return ConfigError(f"unknown {kind} '{name}'; {hint}valid: {', '.join(choices)}")
