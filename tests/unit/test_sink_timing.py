"""The sink's timing reaches the source through the pump and nothing else: device sinks declare
their buffer as latency, the pump hands Sink.timing() to a source that is not clocked before
each read, and a source paces itself only when the sink's clock does not."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from deskcast.capture.tone import ToneSource
from deskcast.endpoints import Direction, parse
from deskcast.media import AudioFormat, PcmBlock, SinkTiming
from deskcast.playback.alsa import AlsaSink
from deskcast.playback.base import Sink
from deskcast.playback.null import NullSink
from deskcast.playback.pulse import PulseSink
from deskcast.pump import Pump

FMT = AudioFormat(48000, 2)


class CountingPacer:
    def __init__(self) -> None:
        self.waits = 0

    def wait(self, pts: int) -> None:
        self.waits += 1


class ClockedSink(Sink):
    """A device sink as the pump sees it: clocked, 30 ms queued, 40 ms declared."""

    clocked = True
    latency_s = 0.040

    def wait_for_room(self) -> float | None:
        return 0.030

    def write(self, block: PcmBlock) -> None:
        pass


def test_delay_is_what_the_sink_measured_or_else_what_it_declared() -> None:
    assert SinkTiming(True, 0.025, 0.040).delay_s == 0.025
    assert SinkTiming(True, None, 0.040).delay_s == 0.040
    assert SinkTiming(False, None).delay_s == 0.0


@pytest.mark.parametrize("make", [
    lambda: PulseSink(parse("pulse:out", Direction.SINK), FMT, 480, buffer_ms=20),
    lambda: AlsaSink(parse("alsa:hw:0", Direction.SINK), FMT, 480, buffer_ms=20),
])
def test_a_device_sink_declares_its_buffer_as_its_latency(make: Callable[[], Sink]) -> None:
    """Not opened, it cannot measure: its timing says clocked, nothing measured, 20 ms."""
    sink = make()
    assert sink.timing() == SinkTiming(clocked=True, queued_s=None, latency_s=0.020)


def test_files_pipes_and_null_add_nothing() -> None:
    sink = NullSink(parse("null", Direction.SINK), FMT, 480)
    assert sink.timing() == SinkTiming(clocked=False, queued_s=None, latency_s=0.0)


@pytest.mark.parametrize(("sink_type", "paced"), [(NullSink, True), (ClockedSink, False)])
def test_a_source_paces_itself_only_when_the_sinks_clock_does_not(
        sink_type: type[Sink], paced: bool) -> None:
    source = ToneSource(parse("tone:440", Direction.SOURCE), FMT, 480)
    pacer = CountingPacer()
    source.pacer = pacer  # type: ignore[assignment]
    sink = sink_type(parse("null", Direction.SINK), FMT, 480)
    Pump(source, sink, max_frames=5 * 480).run()
    assert pacer.waits == (5 if paced else 0)
    assert source.last_sink_timing == sink.timing()
    assert source.paced_by_sink is not paced
