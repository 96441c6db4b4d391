"""The receiver's stages, in the order a datagram meets them (assembled, top to bottom, by
:class:`deskcast.transport.receiver.RtpReceiver`):

* :mod:`~deskcast.transport.receive.network` — sockets and the network thread;
  :mod:`~deskcast.transport.receive.arrival` — when each datagram arrived (kernel stamps);
* :mod:`~deskcast.transport.receive.admission` — what is played: ``--allow``
  (:mod:`~deskcast.transport.receive.allow`), SRTP, RTCP, sender takeover
  (:mod:`~deskcast.transport.receive.senders`), FEC repair;
* the jitter buffer (:mod:`deskcast.transport.jitter`);
* :mod:`~deskcast.transport.receive.decode` — decode and conceal;
* playout (:mod:`deskcast.transport.playout`), then the sink.

Beside them: :mod:`~deskcast.transport.receive.stats` (counters, what a receiver report
carries) and :mod:`~deskcast.transport.receive.delay` (how long audio waits in the receiver).
"""
