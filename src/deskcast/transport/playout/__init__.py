"""Playout: the receiver's last stage, between the jitter buffer and the sink.

The receiver reads as a chain: network input -> admission -> jitter buffer
(:mod:`deskcast.transport.jitter`) -> decode and conceal -> **playout** -> sink. Playout keeps
the delay where it belongs while the sender's clock and our sink's drift apart, by resampling
each frame a few hundred ppm at most. Its parts, each its own module:

* :mod:`~deskcast.transport.playout.clocktrack` — one clock read against ours through noisy
  readings (:class:`ClockTrack`, :class:`LevelTrack`);
* :mod:`~deskcast.transport.playout.clocks` — clock estimation: the sender's, our sink's and
  the two against each other, the feed-forward (:class:`Clocks`);
* :mod:`~deskcast.transport.playout.setpoint` — the level to hold (:class:`SetPoint`,
  :class:`SettledLevel`): the place where a "play this sample at time T" schedule plugs in;
* :mod:`~deskcast.transport.playout.stalls` — time the device loses, found and dropped
  (:class:`StallWatch`);
* :mod:`~deskcast.transport.playout.law` — the control law (:class:`ControlLaw`);
* :mod:`~deskcast.transport.playout.controller` — the parts put together, one read at a time
  (:class:`DriftController`);
* :mod:`~deskcast.transport.playout.resampler` — the ratio applied (:class:`AdaptiveResampler`);
* :mod:`~deskcast.transport.playout.stage` — jitter buffer, controller and resampler as the
  receiver calls them (:class:`Playout`).
"""

from deskcast.transport.playout.clocks import Clocks
from deskcast.transport.playout.clocktrack import ClockTrack, LevelTrack
from deskcast.transport.playout.controller import DriftController
from deskcast.transport.playout.law import MAX_PPM, ControlLaw
from deskcast.transport.playout.resampler import AdaptiveResampler, CorrectionMeter
from deskcast.transport.playout.setpoint import SetPoint, SettledLevel
from deskcast.transport.playout.stage import Playout, Read
from deskcast.transport.playout.stalls import StallWatch

__all__ = ["MAX_PPM", "AdaptiveResampler", "ClockTrack", "Clocks", "ControlLaw",
           "CorrectionMeter", "DriftController", "LevelTrack", "Playout", "Read", "SetPoint",
           "SettledLevel", "StallWatch"]
