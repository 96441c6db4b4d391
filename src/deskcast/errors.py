"""Errors that reach the user.

A :class:`DeskcastError` is about the outside world (a device, a file, an address, a setting):
the CLI prints its message as one line and exits with status 2. Anything else is a bug and gets
a traceback.
"""

from __future__ import annotations


class DeskcastError(Exception):
    """A problem the user can fix; ``str(err)`` is one line that says what to do next."""

    exit_status = 2


class EndpointError(DeskcastError):
    """A malformed source/sink URI or one that names something that does not exist."""


class DeviceError(DeskcastError):
    """A sound device or sound server could not be opened or used."""


class ConfigError(DeskcastError):
    """The configuration file or a command-line value is invalid."""
