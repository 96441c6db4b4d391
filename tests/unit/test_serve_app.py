"""serve's aiohttp application put together by make_app: its background tasks and audio thread
live and die with the application, and the listen token is read from ``?token=`` or basic auth
(aiohttp's decoder) and nothing else."""

from __future__ import annotations

import asyncio
import base64

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from deskcast.capture import make_source
from deskcast.http.app import BACKGROUND, make_app
from deskcast.http.auth import has_listen_token
from deskcast.http.server import SERVER, Server
from deskcast.media import AudioFormat

TOKEN = "s3cret:with-colon"


def _basic(user_pass: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(user_pass).decode()}


@pytest.mark.parametrize(("path", "headers", "expected"), [
    (f"/stream.mp3?token={TOKEN}", {}, True),
    ("/stream.mp3?token=wrong", _basic(f"u:{TOKEN}".encode()), False),  # the query decides
    ("/stream.mp3", _basic(f"anyone:{TOKEN}".encode()), True),
    ("/stream.mp3", _basic(f":{TOKEN}".encode()), True),  # an empty user name is fine
    ("/stream.mp3", _basic(b"anyone:s3cret"), False),
    ("/stream.mp3", _basic(TOKEN.encode()), False),  # "s3cret" is the user: wrong password
    ("/stream.mp3", _basic(b"no colon at all"), False),
    ("/stream.mp3", _basic(b"u:\xff\xfe"), False),  # not UTF-8
    ("/stream.mp3", {"Authorization": "Basic !!!"}, False),
    ("/stream.mp3", {"Authorization": f"Bearer {TOKEN}"}, False),
    ("/stream.mp3", {}, False),
])
def test_listen_token_from_the_query_or_basic_auth_only(path: str, headers: dict[str, str],
                                                        expected: bool) -> None:
    request = make_mocked_request("GET", path, headers=headers)
    assert has_listen_token(request, TOKEN) is expected


def test_tasks_and_audio_start_with_the_app_and_stop_before_connections_close() -> None:
    """Startup runs the audio thread and the tasks; shutdown sets the tasks' event, cancels
    them, then ends every stream and the event streams, all before cleanup."""
    fmt = AudioFormat()
    source = make_source("tone:1000", fmt, fmt.frames_for_ms(20))
    seen: list[str] = []

    async def task(stopping: asyncio.Event) -> None:
        seen.append("started")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append(f"cancelled, stopping={stopping.is_set()}")
            raise

    async def scenario(server: Server) -> tuple[bool, bool, bool]:
        app = make_app(server, [task])
        assert app[SERVER] is server
        runner = web.AppRunner(app)
        await runner.setup()
        await asyncio.sleep(0.1)
        alive = server._thread is not None and server._thread.is_alive()
        closing_before = server.closing.is_set()
        await app.shutdown()  # what runner.cleanup() does before closing connections
        ended = all(s.ended for s in server.streams.values()) and server.closing.is_set()
        await runner.cleanup()
        assert not app[BACKGROUND]._running
        return alive and not closing_before, ended, server._thread is not None and \
            not server._thread.is_alive()

    with source:
        server = Server(source)
        running, ended_on_shutdown, thread_gone = asyncio.run(scenario(server))
    assert running
    assert seen == ["started", "cancelled, stopping=True"]
    assert ended_on_shutdown
    assert thread_gone
