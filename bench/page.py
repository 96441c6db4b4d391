"""The web page in headless Chromium: time to first sound and delay behind live, in one run
for deskcast's page (Opus, MP3) and for Chromium playing icecast2's mount directly.

A private PulseAudio has one 4-channel null sink ``meter`` with the stereo sinks ``hub`` and
``out`` remapped onto its channels 0-1 and 2-3 (as in bench/latency.py). ``deskcast serve -s
pulse:hub.monitor`` streams the hub; headless Chromium (Debian's /usr/bin/chromium driven by
Playwright, its audio sent to ``out``) plays it. pacat plays into ``hub`` a continuous 1 kHz
tone at -30 dBFS with a 40 ms burst of band-limited noise (each one different, -15 dBFS) every
0.5 s. ``meter.monitor`` is recorded: the hub and the page's sound on one sample clock, so each
burst's delay is a sample offset inside one recording. For each run, with the tone already
playing:

* navigation starts (``page.goto``); on deskcast's page Play is clicked when the page has
  loaded; the icecast page is a bare ``<audio>`` whose ``play()`` is called on ``load``;
* first sound = the first 10 ms block at ``out`` above -50 dBFS after navigation start (the
  one wall-clock figure: the moment of navigation is put on the recording's clock by when the
  recording grew, see :class:`FrameClock`);
* delay behind live = each burst's delay from ``hub`` to ``out`` (cross-correlation; the noise
  bursts are all different, so delays of many seconds are not ambiguous), taken around 5 s,
  20 s and 60 s after the first sound, and its range from 5 s on.

Configurations (interleaved, a fresh ``deskcast serve`` and a fresh browser for every run):

* ``deskcast page, Opus``: what Chromium picks on the page by default (serve at its defaults:
  the encoder and the capture start with the listener);
* ``deskcast page, Opus, always-on``: the same with ``serve --always-on``;
* ``deskcast page, MP3``: the page's format set to MP3 (localStorage ``deskcast-format``);
* ``deskcast page, Opus, plain <audio>``: the page opened as ``/?mse=0``, so the ``<audio>``
  element is given the stream URL instead of being fed through Media Source Extensions;
* ``icecast2 mount (MP3)``: a private icecast2 fed by ``deskcast serve --icecast`` (MP3);
  the page, served from 127.0.0.1, is one ``<audio>`` whose src is icecast2's listen URL.

A run listens for a minute after the first sound by default: the page's MSE feed keeps only
the last 10-20 s of played audio and steers its buffer with the playback rate, so the steady
state (and a trim or a slow creep) shows only after 20 s; the first sound is measured once
per run, hence 3 runs. That is ~17 min for all five configurations: to hold the benchmark
lock for less, run them in two goes with ``--configs``.

    .venv/bin/python bench/page.py            # 3 runs x 60 s per configuration, ~17 min
    .venv/bin/python bench/page.py --configs opus,opus-always-on,mp3     # ~10 min
    .venv/bin/python bench/page.py --configs opus-plain,icecast          # ~7 min
    .venv/bin/python bench/page.py --quick    # 1 run x 20 s each, ~2.5 min (not for the record)
    .venv/bin/python bench/page.py -v --configs opus,icecast   # every burst and silence
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402
import numpy.typing as npt  # noqa: E402
from playwright import sync_api  # noqa: E402

from bench.common import (  # noqa: E402
    DESKCAST,
    METER,
    RATE,
    BenchError,
    BenchServer,
    FrameClock,
    MachineLoad,
    Pipeline,
    Procs,
    Progress,
    add_server_priority,
    block_levels_db,
    header,
    median,
    package_version,
    print_footer,
    table,
    wait_for_log,
)
from bench.pagekit import (  # noqa: E402
    BURST_S,
    CHROMIUM,
    MIN_CORR,
    SOUND_BLOCK_MS,
    SOUND_DB,
    TONE_DB,
    PageSignal,
    chromium,
    find_bursts,
    free_tcp_port,
    icecast_page,
    silences,
    wait_for_sound,
)
from rig.capture import CaptureError  # noqa: E402
from rig.icecast import IcecastError, IcecastServer  # noqa: E402
from rig.meter import MeterRecording, SignalPlayer  # noqa: E402
from rig.soundserver import SoundServerError  # noqa: E402

FIRST_SOUND_TIMEOUT_S = 20.0
AT_S = (5.0, 20.0, 60.0)
"""Delay behind live is reported for bursts heard this long after the first sound (those
within the run) ..."""
AT_HALF_WIDTH_S = 0.75
"""... give or take this much (3 bursts)."""
ICECAST_MOUNT = "/live.mp3"
ICECAST_WARMUP_S = 5.0
"""icecast2 keeps a 64 KiB burst (~4 s of 128 kbit/s MP3) for new listeners: let it fill, as
on a station that has been on the air for a while."""


@dataclass(frozen=True)
class PageConfig(Pipeline):
    """One way of listening (a Pipeline only so that ``print_footer`` can describe it)."""

    key: str = ""
    text: str = ""

    def describe(self) -> str:
        return self.text


CONFIGS: tuple[PageConfig, ...] = (
    PageConfig("deskcast page, Opus", "deskcast", key="opus",
               text="deskcast serve -s pulse:hub.monitor; Chromium opens http://127.0.0.1:P/, "
               "clicks Play on load (the page picks Opus)"),
    PageConfig("deskcast page, Opus, always-on", "deskcast", key="opus-always-on",
               text="as the first with serve --always-on (encoders and capture running before "
               "the tone starts)"),
    PageConfig("deskcast page, MP3", "deskcast", key="mp3",
               text="as above with localStorage deskcast-format=mp3 set before the page loads"),
    PageConfig("deskcast page, Opus, plain <audio>", "deskcast", key="opus-plain",
               text="as the first with the page opened as /?mse=0: the <audio> element is "
               "given the stream URL (no Media Source Extensions), as before the page fed it"),
    PageConfig("icecast2 mount (MP3)", "deskcast", key="icecast",
               text="deskcast serve -s pulse:hub.monitor --icecast icecast://source:PW@"
               f"127.0.0.1:P{ICECAST_MOUNT} (icecast2 {package_version('icecast2')}, burst "
               "64 KiB); Chromium opens a page on 127.0.0.1 whose <audio> gets src=http://127.0.0.1:P"
               f"{ICECAST_MOUNT} and play() on load"),
)


@dataclass
class Result:
    pipeline: Pipeline
    nav_to_load_s: list[float] = field(default_factory=list)
    nav_to_sound_s: list[float] = field(default_factory=list)
    click_to_sound_s: list[float] = field(default_factory=list)
    delay_s: dict[float, list[float]] = field(default_factory=lambda: {a: [] for a in AT_S})
    range_ms: list[float] = field(default_factory=list)
    """Per run: max - min of the bursts' delays from AT_S[0] after the first sound on."""
    silent_pct: list[float] = field(default_factory=list)
    gaps: list[int] = field(default_factory=list)
    hub_gap_ms: float = 0.0
    """ms of out not judged for silence because the hub was silent one delay earlier."""
    ahead_s: list[float] = field(default_factory=list)
    found: int = 0
    expected: int = 0
    srcs: set[str] = field(default_factory=set)
    per_run: list[str] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# one run
# --------------------------------------------------------------------------- #


@dataclass
class Setup:
    bs: BenchServer
    seconds: float
    """How long a run listens after the first sound."""
    verbose: bool

    @property
    def at_s(self) -> tuple[float, ...]:
        return tuple(a for a in AT_S if a <= self.seconds)


@dataclass
class Timing:
    nav: float = math.nan
    loaded: float = math.nan
    click: float = math.nan
    nav_frame: float = math.nan
    """Navigation start on the recording's clock (FrameClock)."""
    end_frame: int = 0
    """Frames recorded when the run ended (the browser is closed after that)."""
    ahead: float = math.nan
    """At the end: seconds the <audio> element had buffered ahead of its playhead."""
    src: str = ""


def measure_once(cfg: PageConfig, result: Result, setup: Setup, tag: str) -> None:
    bs = setup.bs
    server = bs.server
    load = MachineLoad().start()
    timing = Timing()
    path = bs.workdir / f"{tag}-meter.raw"
    with contextlib.ExitStack() as stack:
        if not os.environ.get("BENCH_KEEP"):
            stack.callback(path.unlink, missing_ok=True)
        procs = stack.enter_context(Procs(bs.workdir))
        port = free_tcp_port()
        serve = [*DESKCAST, "-v", "serve", "-s", "pulse:hub.monitor", "--listen",
                 f"127.0.0.1:{port}", "--no-mpris"]
        if cfg.key.endswith("always-on"):
            serve.append("--always-on")
        ice: IcecastServer | None = None
        if cfg.key == "icecast":
            ice = stack.enter_context(IcecastServer())
            serve += ["--icecast", ice.source_url(ICECAST_MOUNT)]
        child = procs.start(f"{tag}-serve", serve, bs.env)
        wait_for_log(child, "serving")

        rec = stack.enter_context(MeterRecording(METER, path, server))
        clock = stack.enter_context(FrameClock(rec))
        # Longer than any run needs (stopped when the run ends), with a buffer that outlasts
        # Chromium's launch on a busy machine (60 ms did not: a gap went into the hub).
        stack.enter_context(SignalPlayer(server, "hub", PageSignal(), setup.seconds + 90,
                                         latency_ms=500))
        if ice is not None:
            ice.wait_source(ICECAST_MOUNT, timeout=10)
            time.sleep(ICECAST_WARMUP_S)
        else:
            time.sleep(1.0)  # the tone is playing in the hub before the page is opened
        procs.check_alive()

        page = stack.enter_context(chromium(bs.env, bs.workdir / f"{tag}-home"))
        if cfg.key == "mp3":
            page.add_init_script(
                "try { localStorage.setItem('deskcast-format', 'mp3'); } catch (e) {}")
        url = (stack.enter_context(icecast_page(ice.listen_url(ICECAST_MOUNT)))
               if ice is not None
               else f"http://127.0.0.1:{port}/{'?mse=0' if cfg.key == 'opus-plain' else ''}")
        clock.stop()
        timing.nav = time.monotonic()
        timing.nav_frame = clock.frame_at(timing.nav)
        page.goto(url, wait_until="load", timeout=15_000)
        timing.loaded = time.monotonic()
        if ice is None:
            timing.click = time.monotonic()
            page.click("#play")
        if not wait_for_sound(rec, FIRST_SOUND_TIMEOUT_S):
            raise BenchError(f"no sound at out within {FIRST_SOUND_TIMEOUT_S:.0f} s of "
                             "navigation start")
        heard = time.monotonic()
        # The page keeps the stream's URL in data-stream (src is a blob: URL with MSE).
        timing.src = str(page.evaluate(
            "() => { const a = document.getElementById('audio');"
            " return a.dataset.stream || a.src; }"))
        # Until the last burst of interest has surely been played out.
        time.sleep(max(0.0, setup.seconds + AT_HALF_WIDTH_S + 0.5 - (time.monotonic() - heard)))
        timing.ahead = float(page.evaluate(
            "() => { const a = document.getElementById('audio'), b = a.buffered;"
            " return b.length ? b.end(b.length - 1) - a.currentTime : NaN; }"))
        timing.end_frame = rec.frames()
        procs.check_alive()
        bs.check()
        x = rec.read(0, timing.end_frame)
    bs.check()
    load.stop()
    analyse(result, x, timing, setup)
    result.loads.append(load)  # beside its line in result.per_run


def analyse(result: Result, x: npt.NDArray[np.float32], timing: Timing, setup: Setup) -> None:
    """``x``: the meter's recording up to the end of the run (hub and out, one clock)."""
    c_hub, c_out = METER.channel("hub"), METER.channel("out")
    h = np.asarray(x[:, c_hub:c_hub + 2].mean(axis=1), dtype=np.float64)
    o = np.asarray(x[:, c_out:c_out + 2].mean(axis=1), dtype=np.float64)

    # First sound after navigation start.
    nav_frame = max(0, round(timing.nav_frame))
    levels = block_levels_db(o[nav_frame:], RATE, SOUND_BLOCK_MS)
    hits = np.flatnonzero(levels >= SOUND_DB)
    if hits.size == 0:
        raise BenchError("no sound at out after navigation start (in the recording)")
    block = round(SOUND_BLOCK_MS / 1000 * RATE)
    sound_frame = nav_frame + int(hits[0]) * block
    nav_to_sound = (sound_frame - timing.nav_frame) / RATE
    t_sound = timing.nav + nav_to_sound
    result.nav_to_load_s.append(timing.loaded - timing.nav)
    result.nav_to_sound_s.append(nav_to_sound)
    if not math.isnan(timing.click):
        result.click_to_sound_s.append(t_sound - timing.click)
    result.srcs.add(timing.src.split("?")[0].rsplit("/", 1)[-1])

    # Delay behind live: where each burst from the hub turns up at out.
    found, refs = find_bursts(h, o, sound_frame)
    result.found += len(found)
    since = [((f - sound_frame) / RATE, d / RATE) for f, d in found]
    if found:
        # Bursts that should have been heard between the first sound and the end of the
        # recording at this run's delay (a missing one means a gap or a jump).
        d_run = round(median([d for _, d in found]))
        result.expected += sum(1 for e in refs if sound_frame + 0.05 * RATE <= e + d_run
                               <= o.shape[0] - (BURST_S + 0.05) * RATE)
    picked: dict[float, float] = {}
    for at in setup.at_s:
        near = [d for t, d in since if abs(t - at) <= AT_HALF_WIDTH_S]
        if near:
            picked[at] = median(near)
            result.delay_s[at].append(picked[at])
    steady = [d for t, d in since if t >= AT_S[0] - AT_HALF_WIDTH_S]
    wander = 1000 * (max(steady) - min(steady)) if steady else math.nan
    if steady:
        result.range_ms.append(wander)

    # Steadiness: silent 10 ms blocks at out from 0.5 s after the first sound to the end.
    start = sound_frame + RATE // 2
    runs, checked_ms, skipped_ms = silences(h, o, start, found)
    result.ahead_s.append(timing.ahead)
    result.silent_pct.append(100 * sum(runs) / checked_ms if checked_ms else math.nan)
    result.gaps.append(len(runs))
    result.hub_gap_ms += skipped_ms

    line = (f"nav->load {timing.loaded - timing.nav:.2f} s, nav->sound {nav_to_sound:.2f} s"
            + (f", click->sound {t_sound - timing.click:.2f} s"
               if not math.isnan(timing.click) else "")
            + "".join(f", delay@{at:g}s {fmt(picked.get(at, math.nan))} s" for at in setup.at_s)
            + f", range from {AT_S[0]:g} s {fmt(wander, 0)} ms, silences {len(runs)} "
            f"({sum(runs):.0f} ms), buffered {fmt(timing.ahead)} s, src {timing.src[:80]}"
            + (f"; {skipped_ms:.0f} ms of out not judged (the hub silent)" if skipped_ms else ""))
    if setup.verbose:
        quiet = block_levels_db(o[start:], RATE, SOUND_BLOCK_MS) < SOUND_DB
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
        line += "\n      silences (s after first sound, ms): " + (" ".join(
            f"{0.5 + a * SOUND_BLOCK_MS / 1000:.2f}:{(b - a) * SOUND_BLOCK_MS:.0f}"
            for a, b in zip(edges[::2], edges[1::2], strict=True)) or "none")
        line += "\n      bursts (s after first sound:delay s): " + " ".join(
            f"{t:.1f}:{d:.2f}" for t, d in since)
    result.per_run.append(line)


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #


def fmt(v: float, digits: int = 2) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max)"""
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0], digits)
    return (f"{fmt(median(values), digits)} ({fmt(min(values), digits)}-"
            f"{fmt(max(values), digits)})")


def report(results: list[Result], at_s: tuple[float, ...]) -> str:
    rows: list[list[str]] = []
    for r in results:
        runs = len(r.nav_to_sound_s)
        rows.append([
            r.pipeline.label, f"{runs}/{runs + len(r.failures)}",
            spread(r.nav_to_load_s), spread(r.nav_to_sound_s), spread(r.click_to_sound_s),
            *(spread(r.delay_s[at]) for at in at_s), spread(r.range_ms, 0),
            spread(r.ahead_s), f"{r.found}/{r.expected}", spread(r.silent_pct, 1),
            f"{sum(r.gaps)} ({' '.join(map(str, r.gaps))})" if r.gaps else "-",
        ])
    return table(["configuration", "runs", "nav->load s", "nav->sound s", "click->sound s",
                  *(f"behind live @{at:g} s" for at in at_s), f"range from {AT_S[0]:g} s ms",
                  "buffered s", "bursts", "silent %", "silences (per run)"], rows)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run every cleanup (children, temp dirs) as on Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="how long each run listens after the first sound, s (60)")
    parser.add_argument("--quick", action="store_true",
                        help="1 run x 20 s per configuration (not for the record)")
    parser.add_argument("--configs", metavar="KEYS",
                        default="opus,opus-always-on,mp3,opus-plain,icecast",
                        help="comma-separated subset of opus, opus-always-on, mp3, opus-plain, "
                        "icecast (all)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print every burst's delay and every silence, run by run")
    add_server_priority(parser)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.seconds = 1, 20.0
    if args.seconds < AT_S[0]:
        parser.error(f"--seconds must be at least {AT_S[0]:g}")
    keys = [k.strip() for k in args.configs.split(",") if k.strip()]
    by_key = {c.key: c for c in CONFIGS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        parser.error(f"unknown configuration(s) {', '.join(unknown)}")
    if not CHROMIUM.exists():
        parser.error(f"{CHROMIUM} is missing (apt-get install chromium)")
    configs = [by_key[k] for k in keys]
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    progress = Progress(args.quiet)
    results = {c.label: Result(c) for c in configs}
    print(header("Page: first sound and delay behind live in headless Chromium, hub and out "
                 f"on one sample clock ({args.server_priority} PulseAudio), {args.runs} x "
                 f"{args.seconds:g} s after the first sound"), flush=True)
    print(f"chromium {package_version('chromium')}, icecast2 {package_version('icecast2')}",
          flush=True)
    with BenchServer(realtime=args.server_priority == "realtime") as bs:
        setup = Setup(bs, args.seconds, args.verbose)
        for run in range(args.runs):
            for i, c in enumerate(configs):
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{i}")
                    progress("  " + results[c.label].per_run[-1])
                except (BenchError, CaptureError, IcecastError, SoundServerError,
                        AssertionError, sync_api.Error) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()
                    results[c.label].failures.append(f"{type(err).__name__}: {err}")
                    progress(f"  FAILED: {type(err).__name__}: {err}")
        ordered = list(results.values())
        print()
        print(report(ordered, setup.at_s))
        print()
        print("nav: page.goto() called (navigation start); load: its load event; click: Play "
              "clicked right after load (deskcast's page; the icecast page calls play() on "
              f"load). sound: the first {SOUND_BLOCK_MS:g} ms block at out >= {SOUND_DB:g} "
              f"dBFS (a {TONE_DB:g} dBFS tone plays into hub all along).")
        print(f"behind live @N s: delay from hub to out of the noise bursts heard N +- "
              f"{AT_HALF_WIDTH_S:g} s after the first sound (median per run; table: median "
              f"(min-max) over runs). range from {AT_S[0]:g} s: max - min of the delays of "
              f"every burst heard from {AT_S[0]:g} s after the first sound to the end (per run; "
              "table: median (min-max) over runs). buffered: how far the <audio> element's "
              "buffer reached beyond its playhead at the end of the run. bursts: found "
              f"(correlation >= {MIN_CORR:g}) / due at out between the first sound and the end "
              f"(at the run's median delay). silent %, silences: {SOUND_BLOCK_MS:g} ms blocks "
              f"below {SOUND_DB:g} dBFS at out, and runs of them, from 0.5 s after the first "
              f"sound to the end of the run (~{args.seconds + 1.25:g} s; a run is cut before the "
              "browser closes).")
        print("the delays are sample offsets inside one recording; first sound is too, from "
              "navigation start put on the recording's clock by when the recording grew before "
              "it (bench/common.py FrameClock: when the meter mixed the sound, as in "
              "bench/latency.py).")
        skipped = {r.pipeline.label: r.hub_gap_ms for r in ordered if r.hub_gap_ms}
        if skipped:
            print("out not judged for silence where the hub was silent one delay earlier (a "
                  "gap in what went in): " + "; ".join(f"{k}: {v:.0f} ms"
                                                       for k, v in skipped.items()))
        srcs = {r.pipeline.label: ", ".join(sorted(r.srcs)) for r in ordered if r.srcs}
        print("what the <audio> element played: " + "; ".join(
            f"{k}: {v}" for k, v in srcs.items()))

        def per_run(r: Result) -> None:
            for i, line in enumerate(r.per_run):
                busy = f" (machine {100 * r.loads[i].busy:.0f}% busy)" if i < len(r.loads) else ""
                print(f"    run {i + 1}{busy}: {line}")

        print_footer(bs, ordered, per_config=per_run)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
