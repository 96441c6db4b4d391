"""The web page in headless Chromium: time to first sound and delay behind live, in one run
for deskcast's page (Opus, MP3) and for Chromium playing icecast2's mount directly.

A private PulseAudio has two null sinks, ``hub`` and ``out``. ``deskcast serve -s
pulse:hub.monitor`` streams the hub; headless Chromium (Debian's /usr/bin/chromium driven by
Playwright, its audio sent to ``out``) plays it. paplay plays into ``hub`` a continuous 1 kHz
tone at -30 dBFS with a 40 ms burst of band-limited noise (each one different, -15 dBFS) every
0.5 s. ``hub.monitor`` and ``out.monitor`` are recorded on one time axis (as in
bench/latency.py). For each run, with the tone already playing:

* navigation starts (``page.goto``); on deskcast's page Play is clicked when the page has
  loaded; the icecast page is a bare ``<audio>`` whose ``play()`` is called on ``load``;
* first sound = the first 10 ms block at ``out`` above -50 dBFS after navigation start;
* delay behind live = each burst's delay from ``hub`` to ``out`` (cross-correlation; the noise
  bursts are all different, so delays of many seconds are not ambiguous), taken around 5 s and
  around 20 s after the first sound.

Configurations (interleaved, a fresh server and a fresh browser for every run):

* ``deskcast page, Opus``: what Chromium picks on the page by default (serve at its defaults:
  the encoder and the capture start with the listener);
* ``deskcast page, Opus, always-on``: the same with ``serve --always-on``;
* ``deskcast page, MP3``: the page's format set to MP3 (localStorage ``deskcast-format``);
* ``deskcast page, Opus, plain <audio>``: the page opened as ``/?mse=0``, so the ``<audio>``
  element is given the stream URL instead of being fed through Media Source Extensions;
* ``icecast2 mount (MP3)``: a private icecast2 fed by ``deskcast serve --icecast`` (MP3);
  the page is a ``data:`` URL with one ``<audio>`` whose src is icecast2's listen URL.

    .venv/bin/python bench/page.py            # 3 runs per configuration, ~6 min
    .venv/bin/python bench/page.py --quick    # 1 run each, ~2 min
    .venv/bin/python bench/page.py -v --configs opus,icecast   # every burst and silence
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import socket
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

_ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests")]

import numpy as np  # noqa: E402
from playwright import sync_api  # noqa: E402

from bench.common import (  # noqa: E402
    DESKCAST,
    RATE,
    BenchError,
    BenchServer,
    MachineLoad,
    Pipeline,
    Procs,
    Progress,
    TimedRecorder,
    block_levels_db,
    header,
    median,
    package_version,
    print_footer,
    silent_runs_ms,
    table,
    wait_for_log,
)
from rig.capture import CaptureError  # noqa: E402
from rig.icecast import IcecastError, IcecastServer  # noqa: E402
from rig.signals import Audio, correlation, find_delay, tone, write_wav  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [  # as in tests/integration/test_page_chromium.py
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    # Chromium's Private Network Access check blocks a non-secure page (the icecast page is a
    # data: URL, origin "null") from fetching from loopback; deskcast's page is same-origin
    # and not affected.
    "--disable-features=BlockInsecurePrivateNetworkRequests,"
    "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
    "LocalNetworkAccessChecks",
]
SIGNAL_S = 70.0
"""Length of the test signal (a run stops it as soon as it has what it needs)."""
PERIOD_S = 0.5
BURST_S = 0.04
TONE_DB = -30.0
BURST_DB = -15.0
SOUND_DB = -50.0
"""First sound: the first 10 ms block at ``out`` at or above this level."""
SOUND_BLOCK_MS = 10.0
FIRST_SOUND_TIMEOUT_S = 20.0
MAX_DELAY_S = 15.0
"""Bursts are searched for in the output up to this long after they were in the hub."""
AT_S = (5.0, 20.0)
"""Delay behind live is reported for bursts heard this long after the first sound ..."""
AT_HALF_WIDTH_S = 0.75
"""... give or take this much (3 bursts)."""
MIN_CORR = 0.5
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
               "64 KiB); Chromium opens a data: page whose <audio> gets src=http://127.0.0.1:P"
               f"{ICECAST_MOUNT} and play() on load"),
)


@dataclass
class Result:
    pipeline: Pipeline
    nav_to_load_s: list[float] = field(default_factory=list)
    nav_to_sound_s: list[float] = field(default_factory=list)
    click_to_sound_s: list[float] = field(default_factory=list)
    delay_s: dict[float, list[float]] = field(default_factory=lambda: {a: [] for a in AT_S})
    silent_pct: list[float] = field(default_factory=list)
    ahead_s: list[float] = field(default_factory=list)
    found: int = 0
    expected: int = 0
    srcs: set[str] = field(default_factory=set)
    align_err_ms: list[float] = field(default_factory=list)
    per_run: list[str] = field(default_factory=list)
    loads: list[MachineLoad] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# the test signal
# --------------------------------------------------------------------------- #


def noise_burst(seed: int) -> Audio:
    """40 ms of noise, 300 Hz-8 kHz (survives MP3 and Opus alike), 2 ms fades, BURST_DB RMS."""
    n = round(BURST_S * RATE)
    rng = np.random.default_rng(seed)
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spec[(freqs < 300) | (freqs > 8000)] = 0
    x = np.fft.irfft(spec, n)
    fade = round(0.002 * RATE)
    ramp = np.linspace(0.0, 1.0, fade)
    x[:fade] *= ramp
    x[-fade:] *= ramp[::-1]
    x *= 10 ** (BURST_DB / 20) / math.sqrt(float(np.mean(x * x)))
    return np.repeat(x[:, None], 2, axis=1)


def burst_starts() -> list[int]:
    """Frame of each burst in the test signal."""
    return [round((PERIOD_S * (i + 1)) * RATE) for i in range(int(SIGNAL_S / PERIOD_S) - 1)]


def test_signal() -> Audio:
    x = tone(1000.0, SIGNAL_S, RATE, level_db=TONE_DB)
    for i, start in enumerate(burst_starts()):
        b = noise_burst(1000 + i)
        x[start:start + b.shape[0]] += b
    return np.clip(x, -1.0, 1.0)


# --------------------------------------------------------------------------- #
# child processes that Procs does not own: Chromium and icecast2
# --------------------------------------------------------------------------- #


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_chromium_of(home: Path) -> int:
    """SIGKILL any Chromium process still running with HOME=``home`` (this run's own, unique
    directory: only browsers this script started). Returns how many there were."""
    needle = f"HOME={home}".encode()
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{entry}/exe")
            if "chromium" not in exe:
                continue
            env = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
    return killed


@contextlib.contextmanager
def chromium(env: dict[str, str], home: Path) -> Iterator[sync_api.Page]:
    """A headless Chromium page whose audio plays into ``out``; it is gone afterwards."""
    home.mkdir(parents=True, exist_ok=True)
    benv: dict[str, str | float | bool] = dict(env)
    benv.update(PULSE_SINK="out", HOME=str(home))
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
                ignore_default_args=["--mute-audio"], env=benv, timeout=30_000)
            try:
                yield browser.new_page()
            finally:
                with contextlib.suppress(Exception):
                    browser.close()
    finally:
        kill_chromium_of(home)


def icecast_page(listen_url: str) -> str:
    html = ("<!doctype html><title>icecast</title><audio id=audio></audio><script>"
            "addEventListener('load',()=>{const a=document.getElementById('audio');"
            f"a.src={listen_url!r};a.play().catch(()=>{{}});}});</script>")
    return "data:text/html," + urllib.parse.quote(html)


# --------------------------------------------------------------------------- #
# one run
# --------------------------------------------------------------------------- #


@dataclass
class Setup:
    bs: BenchServer
    wav: Path
    head: Audio
    """The first 3 s of the test signal (to find where it starts in the hub recording)."""
    verbose: bool


@dataclass
class Timing:
    nav: float = math.nan
    loaded: float = math.nan
    click: float = math.nan
    end: float = math.nan
    ahead: float = math.nan
    """At the end: seconds the <audio> element had buffered ahead of its playhead."""
    src: str = ""


def measure_once(cfg: PageConfig, result: Result, setup: Setup, tag: str) -> None:
    bs = setup.bs
    server = bs.server
    load = MachineLoad().start()
    timing = Timing()
    with contextlib.ExitStack() as stack:
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

        hub = TimedRecorder(server, "hub.monitor")
        out = TimedRecorder(server, "out.monitor")
        check = TimedRecorder(server, "hub.monitor")
        for rec in (hub, out, check):
            stack.enter_context(rec)
        procs.start(f"{tag}-paplay", ["paplay", "--device=hub", str(setup.wav)], bs.env)
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
        url = (icecast_page(ice.listen_url(ICECAST_MOUNT)) if ice is not None
               else f"http://127.0.0.1:{port}/{'?mse=0' if cfg.key == 'opus-plain' else ''}")
        timing.nav = time.monotonic()
        page.goto(url, wait_until="load", timeout=15_000)
        timing.loaded = time.monotonic()
        if ice is None:
            timing.click = time.monotonic()
            page.click("#play")
        if not out.wait_for_sound(timeout=FIRST_SOUND_TIMEOUT_S, threshold_db=SOUND_DB,
                                  window=SOUND_BLOCK_MS / 1000):
            raise BenchError(f"no sound at out within {FIRST_SOUND_TIMEOUT_S:.0f} s of "
                             "navigation start")
        heard = time.monotonic()
        # The page keeps the stream's URL in data-stream (src is a blob: URL with MSE).
        timing.src = str(page.evaluate(
            "() => { const a = document.getElementById('audio');"
            " return a.dataset.stream || a.src; }"))
        # Until the last burst of interest has surely been played out.
        time.sleep(max(0.0, AT_S[-1] + AT_HALF_WIDTH_S + 0.5 - (time.monotonic() - heard)))
        timing.ahead = float(page.evaluate(
            "() => { const a = document.getElementById('audio'), b = a.buffered;"
            " return b.length ? b.end(b.length - 1) - a.currentTime : NaN; }"))
        timing.end = time.monotonic()  # the browser is closed after this: analyse up to here
        procs.check_alive()
        bs.check()
    bs.check()
    load.stop()
    result.loads.append(load)
    analyse(result, (hub, out, check), timing, setup)


def analyse(result: Result, recs: tuple[TimedRecorder, TimedRecorder, TimedRecorder],
            timing: Timing, setup: Setup) -> None:
    """``recs``: hub.monitor, out.monitor and a second hub.monitor (time-axis self-check)."""
    hub, out, check = recs
    h, o, c = hub.audio, out.audio, check.audio
    t_hub, t_out, t_check = hub.start_time(), out.start_time(), check.start_time()
    o = o[: max(0, round((timing.end - t_out) * RATE))]
    true_offset = find_delay(c[: 10 * RATE], h[: 10 * RATE], RATE, max_delay=0.2)
    result.align_err_ms.append(1000 * abs((t_check - t_hub) - true_offset))

    # First sound after navigation start.
    nav_frame = max(0, round((timing.nav - t_out) * RATE))
    levels = block_levels_db(o[nav_frame:], RATE, SOUND_BLOCK_MS)
    hits = np.flatnonzero(levels >= SOUND_DB)
    if hits.size == 0:
        raise BenchError("no sound at out after navigation start (in the recording)")
    block = round(SOUND_BLOCK_MS / 1000 * RATE)
    sound_frame = nav_frame + int(hits[0]) * block
    t_sound = t_out + sound_frame / RATE
    result.nav_to_load_s.append(timing.loaded - timing.nav)
    result.nav_to_sound_s.append(t_sound - timing.nav)
    if not math.isnan(timing.click):
        result.click_to_sound_s.append(t_sound - timing.click)
    result.srcs.add(timing.src.split("?")[0].rsplit("/", 1)[-1])

    # Delay behind live: where each burst from the hub turns up at out.
    signal_frame = round(find_delay(setup.head, h[: 15 * RATE], RATE) * RATE)
    pre = round(0.005 * RATE)
    ref_len = round((BURST_S + 0.01) * RATE)
    found: list[tuple[float, float]] = []  # (seconds after first sound at out, delay s)
    refs: list[float] = []  # when each searched burst was in the hub
    for start in burst_starts():
        e = signal_frame + start - pre
        if e < 0 or e + ref_len > h.shape[0]:
            continue
        t_ref = t_hub + e / RATE
        if t_ref < t_sound - MAX_DELAY_S:
            continue
        w0 = max(sound_frame, round((t_ref - 0.01 - t_out) * RATE))
        w1 = min(o.shape[0], round((t_ref + MAX_DELAY_S - t_out) * RATE))
        if w1 - w0 < ref_len:
            continue
        refs.append(t_ref)
        ref = h[e:e + ref_len]
        window = o[w0:w1]
        lag = find_delay(ref, window, RATE, max_delay=(w1 - w0) / RATE)
        k = round(lag * RATE)
        if lag < 0 or correlation(ref, window[k:k + ref_len]) < MIN_CORR:
            continue
        t_at_out = t_out + w0 / RATE + lag
        found.append((t_at_out - t_sound, t_at_out - t_ref))
    result.found += len(found)
    if found:
        # Bursts that should have been heard between the first sound and the end of the
        # recording at this run's delay (a missing one means a gap or a jump).
        d_run = median([d for _, d in found])
        t_end = t_out + o.shape[0] / RATE
        result.expected += sum(1 for t in refs
                               if t_sound + 0.05 <= t + d_run <= t_end - BURST_S - 0.05)
    picked: dict[float, float] = {}
    for at in AT_S:
        near = [d for since, d in found if abs(since - at) <= AT_HALF_WIDTH_S]
        if near:
            picked[at] = median(near)
            result.delay_s[at].append(picked[at])

    # Steadiness: silent 10 ms blocks at out from 0.5 s after the first sound to the end.
    seg = o[sound_frame + RATE // 2:]
    runs = silent_runs_ms(seg, RATE, SOUND_BLOCK_MS)
    total_ms = block_levels_db(seg, RATE, SOUND_BLOCK_MS).size * SOUND_BLOCK_MS
    result.ahead_s.append(timing.ahead)
    result.silent_pct.append(100 * sum(runs) / total_ms if total_ms else math.nan)

    line = (f"nav->load {timing.loaded - timing.nav:.2f} s, nav->sound "
            f"{t_sound - timing.nav:.2f} s"
            + (f", click->sound {t_sound - timing.click:.2f} s"
               if not math.isnan(timing.click) else "")
            + "".join(f", delay@{at:g}s {fmt(picked.get(at, math.nan), 2)} s" for at in AT_S)
            + f", buffered {fmt(timing.ahead)} s, src {timing.src[:80]}")
    if setup.verbose:
        quiet = block_levels_db(seg, RATE, SOUND_BLOCK_MS) < SOUND_DB
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(np.int8), [0]))))
        line += "\n      silences (s after first sound, ms): " + (" ".join(
            f"{0.5 + a * SOUND_BLOCK_MS / 1000:.2f}:{(b - a) * SOUND_BLOCK_MS:.0f}"
            for a, b in zip(edges[::2], edges[1::2], strict=True)) or "none")
        line += "\n      bursts (s after first sound:delay s): " + " ".join(
            f"{since:.1f}:{d:.2f}" for since, d in found)
    result.per_run.append(line)


# --------------------------------------------------------------------------- #
# report
# --------------------------------------------------------------------------- #


def fmt(v: float, digits: int = 2) -> str:
    return "-" if math.isnan(v) else f"{v:.{digits}f}"


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max)"""
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0], digits)
    return (f"{fmt(median(values), digits)} ({fmt(min(values), digits)}-"
            f"{fmt(max(values), digits)})")


def report(results: list[Result]) -> str:
    rows: list[list[str]] = []
    for r in results:
        runs = len(r.nav_to_sound_s)
        rows.append([
            r.pipeline.label, f"{runs}/{runs + len(r.failures)}",
            spread(r.nav_to_load_s), spread(r.nav_to_sound_s), spread(r.click_to_sound_s),
            *(spread(r.delay_s[at]) for at in AT_S),
            spread([a for a in r.ahead_s if not math.isnan(a)]),
            f"{r.found}/{r.expected}", spread(r.silent_pct, 1),
        ])
    return table(["configuration", "runs", "nav->load s", "nav->sound s", "click->sound s",
                  *(f"behind live @{at:g} s" for at in AT_S), "buffered s", "bursts",
                  "silent %"], rows)


# --------------------------------------------------------------------------- #
# main
# --------------------------------------------------------------------------- #


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run every cleanup (children, temp dirs) as on Ctrl-C


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per configuration (3)")
    parser.add_argument("--quick", action="store_true", help="1 run per configuration")
    parser.add_argument("--configs", metavar="KEYS",
                        default="opus,opus-always-on,mp3,opus-plain,icecast",
                        help="comma-separated subset of opus, opus-always-on, mp3, opus-plain, "
                        "icecast (all)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also print every burst's delay, run by run")
    args = parser.parse_args()
    if args.quick:
        args.runs = 1
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
    print(header("Page: first sound and delay behind live in headless Chromium "
                 "(bench/page.py)"), flush=True)
    print(f"chromium {package_version('chromium')}, icecast2 {package_version('icecast2')}",
          flush=True)
    with BenchServer() as bs:
        sig = test_signal()
        wav = write_wav(bs.workdir / "signal.wav", sig, RATE)
        setup = Setup(bs, wav, sig[: 3 * RATE], args.verbose)
        for run in range(args.runs):
            for i, c in enumerate(configs):
                progress(f"run {run + 1}/{args.runs}: {c.label}")
                try:
                    measure_once(c, results[c.label], setup, f"run{run}-{i}")
                    progress("  " + results[c.label].per_run[-1])
                except (BenchError, CaptureError, IcecastError, AssertionError,
                        sync_api.Error) as err:
                    with contextlib.suppress(BenchError):
                        bs.check()
                    results[c.label].failures.append(f"{type(err).__name__}: {err}")
                    progress(f"  FAILED: {type(err).__name__}: {err}")
        ordered = list(results.values())
        print()
        print(report(ordered))
        print()
        print("nav: page.goto() called (navigation start); load: its load event; click: Play "
              "clicked right after load (deskcast's page; the icecast page calls play() on "
              f"load). sound: the first {SOUND_BLOCK_MS:g} ms block at out >= {SOUND_DB:g} "
              f"dBFS (a {TONE_DB:g} dBFS tone plays into hub all along).")
        print(f"behind live @N s: delay from hub to out of the noise bursts heard N +- "
              f"{AT_HALF_WIDTH_S:g} s after the first sound (median per run; table: median "
              "(min-max) over runs). buffered: how far the <audio> element's buffer reached "
              "beyond its playhead at the end of the run. bursts: found (correlation >= "
              f"{MIN_CORR:g}) / due at out between the first sound and the end (at the run's "
              "median delay). silent %: 10 ms blocks below "
              f"{SOUND_DB:g} dBFS at out from 0.5 s after the first sound to the end of the run "
              f"(~{AT_S[-1] + 1:g} s; a run is cut before the browser closes).")
        errs = [e for r in ordered for e in r.align_err_ms]
        if errs:
            print(f"time-axis self-check (second hub.monitor recording): max error "
                  f"{max(errs):.2f} ms over {len(errs)} runs.")
        srcs = {r.pipeline.label: ", ".join(sorted(r.srcs)) for r in ordered if r.srcs}
        print("what the <audio> element played: " + "; ".join(
            f"{k}: {v}" for k, v in srcs.items()))

        def per_run(r: Result) -> None:
            for i, line in enumerate(r.per_run):
                print(f"    run {i + 1}: {line}")

        print_footer(bs, ordered, per_config=per_run if args.verbose else None)
    return 1 if any(r.failures for r in ordered) else 0


if __name__ == "__main__":
    sys.exit(main())
