"""Decode: codec packets in, PCM out, with concealment of what was lost."""
