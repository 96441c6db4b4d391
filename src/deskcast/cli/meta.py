"""``meta``: tell a running serve what is playing (the request itself:
:func:`deskcast.http.client.post_now_playing`)."""

from __future__ import annotations

import argparse
import logging

from deskcast.cli.common import load_settings
from deskcast.errors import ConfigError

logger = logging.getLogger(__name__)


def cmd_meta(args: argparse.Namespace) -> int:
    from deskcast.http import token as token_file
    from deskcast.http.client import local_serve, post_now_playing
    from deskcast.http.nowplaying import split_artist_title

    s = load_settings(args, ["serve"])
    url = args.server
    context = None
    if not url:
        # Our own serve: its port, and HTTPS trusting exactly its certificate when it has one.
        local = local_serve(s.listen, s.tls_cert, s.listen_token)
        url, context = local.base_url, local.ssl_context
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--server {url!r} must be a URL like http://HOST:8000")
    token = args.token or s.token or token_file.read_token()
    if not token:
        raise ConfigError(f"no token: start `deskcast serve` once (it writes "
                          f"{token_file.token_path()}) or pass --token")
    artist, title = split_artist_title(args.text)
    answer = post_now_playing(url, token, artist, title, context=context,
                              pinned_cert=s.tls_cert if context is not None else None)
    print(f"now playing: {answer['now_playing']['text'] or '(nothing)'}")
    return 0
