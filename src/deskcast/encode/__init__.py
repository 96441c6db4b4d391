"""Encode: PCM blocks in, codec packets out (Opus for RTP; MP3/Ogg for HTTP later)."""
