"""Every setting in one place: its unit, its default and the reason for that default.

Settings come from three layers, later ones winning:

1. the defaults below;
2. the config file, ``~/.config/deskcast/config.toml`` (``$XDG_CONFIG_HOME``, ``$DESKCAST_CONFIG``
   or ``--config PATH``), one TOML table per section::

       [audio]
       buffer_ms = 60

       [play]
       source = "pulse:hub.monitor"

3. command-line flags, which are the option names with dashes (``--buffer-ms 60``).

:mod:`~deskcast.config.options` is the table of every setting (:class:`Option`),
:mod:`~deskcast.config.layers` reads the file and the flags and merges the layers.
"""

from deskcast.config.layers import (
    Settings,
    add_arguments,
    default_config_path,
    load_file,
    merge,
    validate,
)
from deskcast.config.options import LOW_LATENCY, OPTIONS, SECTIONS, Option, Value

__all__ = ["LOW_LATENCY", "OPTIONS", "SECTIONS", "Option", "Settings", "Value", "add_arguments",
           "default_config_path", "load_file", "merge", "validate"]
