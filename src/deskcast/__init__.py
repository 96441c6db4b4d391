"""deskcast: send a Linux desktop's audio anywhere.

The pipeline reads left to right, one package per stage::

    capture -> (encode -> transport -> decode) -> playback

``capture`` turns a device, file or generator into fixed-size :class:`~deskcast.media.PcmBlock`
objects; ``playback`` consumes them. ``hub`` sets up the desktop mix that everything captures.
"""

__version__ = "0.1.0"
