"""The receiving end, a chain of stages (see :mod:`deskcast.transport.receive.receiver`)."""
