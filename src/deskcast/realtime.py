"""Real-time scheduling for audio threads (SCHED_FIFO), asked for politely.

Like trx: try, and when the system says no, warn once and carry on at normal priority.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

logger = logging.getLogger(__name__)

_warned = threading.Event()
_lock = threading.Lock()


def _set_fifo(priority: int) -> None:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))


def request(priority: int, setter: Callable[[int], None] = _set_fifo) -> bool:
    """Put the calling thread in SCHED_FIFO at ``priority`` (0 = don't). True on success."""
    if priority <= 0:
        return False
    try:
        setter(priority)
    except (PermissionError, OSError) as err:
        with _lock:
            if not _warned.is_set():
                _warned.set()
                logger.warning(
                    "cannot get real-time priority %d (%s): audio may glitch under load; allow "
                    "it with `@audio - rtprio 95` in /etc/security/limits.conf (and join the "
                    "audio group), or pass --rtprio 0 to silence this",
                    priority, err.strerror or err,
                )
        return False
    logger.debug("audio thread %s runs SCHED_FIFO %d", threading.current_thread().name, priority)
    return True


def reset_warning() -> None:
    """For tests: forget that the warning was already shown."""
    _warned.clear()
