"""The legs of a route: each reads the hub and takes its audio somewhere.

* :class:`LoopbackLeg` — ``local`` on PulseAudio/PipeWire: the server's own ``module-loopback``
  from the hub's monitor to the speakers (see the module docstring of :mod:`deskcast.route.daemon`
  for why a loopback and not moving the streams back).
* :class:`ProcessLeg` — a ``deskcast`` child process: ``serve`` for the web, ``play
  alsa:hubcap alsa:SPEAKERS`` for ``local`` on plain ALSA. A process per leg keeps a crash (or
  a stuck device) of one leg away from the daemon and the other legs.
* :class:`SendLeg` — a host: every host of the route joins the one ``send`` child of its
  :class:`SendGroup` (one stream for all), and leaves it without disturbing the others.

One module per kind (loopback, process, send, web), beside :mod:`~deskcast.route.legs.base`
(the interface) and :mod:`~deskcast.route.legs.children` (starting children, a spare one kept
ready). Every leg can ``start`` (raises :class:`DeskcastError` when it cannot), ``wait`` until
it dies (returning why), ``stop`` and describe itself with ``info``. The daemon restarts dead
legs.
"""

from deskcast.route.legs.base import Leg
from deskcast.route.legs.children import SparePool
from deskcast.route.legs.loopback import LoopbackLeg, remove_stale_loopbacks
from deskcast.route.legs.process import ProcessLeg
from deskcast.route.legs.send import SendGroup, SendLeg, answer_state
from deskcast.route.legs.web import WebLeg

__all__ = ["Leg", "LoopbackLeg", "ProcessLeg", "SendGroup", "SendLeg", "SparePool", "WebLeg",
           "answer_state", "remove_stale_loopbacks"]
