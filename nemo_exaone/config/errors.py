"""The two errors a user fixes without reading code; every other exception is a bug and keeps
its traceback.

- :class:`ConfigError`: a setting (YAML, override, command-line flag) is invalid or does not
  fit the model or the machine. Reported as ``config error: ...`` with exit code 2.
- :class:`InputError`: a file the user gave is missing, malformed or damaged (a checkpoint, a
  dataset). Reported as ``error: ...`` with exit code 2.

Both subclass ``ValueError`` so callers that catch that keep working.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and how to fix it."""


class InputError(ValueError):
    """An input file or directory is unusable; the message names the path (and line/field)."""
