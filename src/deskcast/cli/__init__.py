"""The ``deskcast`` command line: a thin layer over the packages, testable as ``main(argv)``.

:mod:`.parser` holds every command's options; each command builds its pipeline in its own module
(:mod:`.play`, :mod:`.rtp` for send/receive/keygen, :mod:`.serve`, :mod:`.meta`, :mod:`.devices`
for devices/hub, :mod:`.route` for route/daemon) from the feature packages, importing them when
it runs so that ``deskcast --help`` stays quick.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from deskcast.cli import devices, meta, play, route, rtp, serve
from deskcast.cli.parser import PROG, build_parser
from deskcast.errors import DeskcastError

__all__ = ["COMMANDS", "build_parser", "main", "run", "setup_logging"]

logger = logging.getLogger("deskcast")


class _OneLineFormatter(logging.Formatter):
    """``deskcast: error: …`` — one line per message; tracebacks only when asked for."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info and record.levelno >= logging.ERROR:
            text += "\n" + self.formatException(record.exc_info)
        return text


def setup_logging(verbosity: int, stream: TextIO | None = None) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_OneLineFormatter())
    root = logging.getLogger("deskcast")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # aiohttp logs every malformed request from the outside world with a traceback: that is
    # bad input to drop quietly, shown only with --debug.
    web = logging.getLogger("aiohttp")
    web.handlers[:] = [handler]
    web.setLevel(logging.DEBUG if verbosity >= 2 else logging.CRITICAL)
    web.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbosity = 2 if args.debug else args.verbose
    setup_logging(verbosity)
    if not args.command:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except DeskcastError as err:
        if verbosity >= 2:
            logger.exception("%s", err)
        else:
            logger.error("%s", err)
        return err.exit_status
    except KeyboardInterrupt:
        return 130


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "devices": devices.cmd_devices,
    "play": play.cmd_play,
    "send": rtp.cmd_send,
    "tx": rtp.cmd_send,
    "receive": rtp.cmd_receive,
    "serve": serve.cmd_serve,
    "meta": meta.cmd_meta,
    "rx": rtp.cmd_receive,
    "hub": devices.cmd_hub,
    "keygen": rtp.cmd_keygen,
    "route": route.cmd_route,
    "daemon": route.cmd_daemon,
}
COMMANDS["receive"] = COMMANDS["rx"] = route.announced(COMMANDS["receive"])  # route: --announce
