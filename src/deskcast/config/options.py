"""Every setting in one place: its unit, its default and the reason for that default; what
``--low-latency`` changes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deskcast.errors import ConfigError

Value = int | float | str | bool | None


@dataclass(frozen=True)
class Option:
    section: str
    name: str
    type: type
    default: Value
    help: str
    short: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    multiple: bool = False
    metavar: str | None = None
    """Takes several values (``--allow A B``, a TOML list), kept as one space-separated str."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, origin: str) -> Value:
        """Coerce and validate ``value``; ``origin`` says where it came from for the error."""
        if value is None:
            return None
        where = f"{origin}: {self.section}.{self.name}" if origin != "command line" else self.flag
        if self.multiple and isinstance(value, list | tuple):
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must be a list of text, not {value!r}")
            value = " ".join(value)
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{where} must be true or false, not {value!r}")
            return value
        try:
            if self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            if isinstance(value, bool):
                raise ValueError
            coerced = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where} must be {_type_name(self.type)}, not {value!r}"
            ) from None
        if self.choices is not None and coerced not in self.choices:
            raise ConfigError(f"{where} must be one of {', '.join(self.choices)}, not {value!r}")
        if self.minimum is not None and coerced < self.minimum:
            raise ConfigError(f"{where} must be at least {self.minimum:g}, not {value!r}")
        if self.maximum is not None and coerced > self.maximum:
            raise ConfigError(f"{where} must be at most {self.maximum:g}, not {value!r}")
        return coerced  # type: ignore[no-any-return]


def _type_name(t: type) -> str:
    return {int: "a whole number", float: "a number", str: "text"}.get(t, t.__name__)


OPTIONS: tuple[Option, ...] = (
    # [audio]: the PCM format and device behaviour shared by every command that moves audio.
    Option("audio", "rate", int, 48000,
           "sample rate in Hz (48000: Opus' native rate and what the snd-aloop hub is fixed to)",
           minimum=8000, maximum=384000),
    Option("audio", "channels", int, 2, "channels (2: desktop audio is stereo)",
           minimum=1, maximum=8),
    Option("audio", "sample_format", str, "s16le",
           "sample encoding (s16le: what the hub, trx and every sound server speak natively)",
           choices=("s16le", "s32le", "f32le")),
    Option("audio", "block_ms", float, 10.0,
           "block size in ms (10: small enough for low delay, large enough that Python's "
           "per-block work stays under 1% of a core)", minimum=1.0, maximum=1000.0),
    Option("audio", "buffer_ms", float, 40.0,
           "device buffer in ms (40: rides out scheduler hiccups on a loaded 2-core machine; "
           "lower it for less delay, raise it if you hear clicks)", minimum=2.0, maximum=5000.0),
    Option("audio", "rtprio", int, 80,
           "SCHED_FIFO priority of audio threads, 0 for none (80: what trx asks for)",
           minimum=0, maximum=99),
    # [play]
    Option("play", "source", str, "desktop",
           "where audio comes from (desktop: the hub if set up, else what you are hearing)"),
    Option("play", "sink", str, "pulse",
           "where audio goes (pulse: this machine's speakers)"),
    Option("run", "duration", float, None,
           "stop after this many seconds (default: run until Ctrl-C or the source ends)",
           short="-t", minimum=0.0),
    # [send]
    Option("send", "source", str, "desktop", "what to send (desktop: the hub, else what you "
           "are hearing)", short="-s"),
    Option("send", "low_latency", bool, False,
           "5 ms frames for the least delay: --frame-ms 5 --buffer-ms 10 (receiver: "
           "--low-latency too); ~3x the packets and 2-3x the CPU of 20 ms frames, less margin "
           "on a loaded machine. Settings given explicitly still win"),
    Option("send", "frame_ms", float, 20.0,
           "Opus frame in ms: 2.5, 5, 10, 20, 40 or 60 (20: trx's default and Opus' sweet spot;"
           " 5 for the lowest delay at ~3x the packet rate)"),
    Option("send", "bitrate", float, 128.0,
           "Opus bitrate in kbit/s, really enforced (128: transparent for music in stereo)",
           minimum=6, maximum=510),
    Option("send", "complexity", int, 10, "Opus encoder complexity 0-10 (10: best quality; "
           "lower it on very slow machines)", minimum=0, maximum=10),
    Option("send", "application", str, "lowdelay",
           "Opus mode: lowdelay (CELT only, 4 ms less delay, what desktop audio uses anyway), "
           "audio, voip", choices=("lowdelay", "audio", "voip")),
    Option("send", "cbr", bool, False,
           "constant bitrate: every packet the same size (default: constrained VBR at the "
           "bitrate, better quality for the same average)"),
    Option("send", "fec", str, "",
           "K:R adds R repair packets after every K audio packets; up to R losses per group "
           "are rebuilt (4:2 = +50 % bandwidth, up to 4 frames more delay). Default: off",
           ),
    Option("send", "latency_ms", float, None,
           "play on one timeline at every destination, each sample heard this long after it "
           "was captured, in ms (default: 0 = none, each receiver plays as early as it can, "
           "for one destination; a schedule is kept once there are several: see `deskcast "
           "send --help`); raise it for Wi-Fi", minimum=0, maximum=5000),
    Option("send", "trx", bool, False,
           "send what trx-rx expects (payload type 0, 8 kHz timestamps)"),
    Option("send", "ttl", int, None, "IP TTL / hop limit, for multicast (default: system's, "
           "1 for multicast)", minimum=0, maximum=255),
    Option("send", "dscp", int, 46, "DSCP mark of the packets (46 = EF, expedited "
           "forwarding: Wi-Fi and routers that honour it queue audio first)",
           minimum=0, maximum=63),
    Option("send", "key", str, None, "SRTP key file from `deskcast keygen`: encrypt and "
           "authenticate the stream (AES_CM_128_HMAC_SHA1_80, +10 bytes a packet); the "
           "receiver needs the same file (default: plain RTP, as trx)", metavar="FILE"),
    # [receive]
    Option("receive", "sink", str, "pulse", "where to play (pulse: the speakers)",
           short="-o"),
    Option("receive", "low_latency", bool, False,
           "for a sender with --low-latency (5 ms frames): --jitter-ms 5 --jitter-min-ms 2 "
           "--buffer-ms 20 --block-ms 5; ~30 ms from the sender's capture to this sink "
           "instead of ~75 (one machine, null sinks; a sound card adds its own few ms). "
           "Settings given explicitly still win"),
    Option("receive", "jitter_ms", float, 20.0,
           "jitter buffer target in ms; adapts to the measured network jitter unless "
           "--no-adaptive (20: enough for a LAN, one 20 ms frame)", minimum=0, maximum=2000),
    Option("receive", "jitter_min_ms", float, 5.0, "floor of the adaptive jitter buffer",
           minimum=0, maximum=2000),
    Option("receive", "jitter_max_ms", float, 250.0,
           "ceiling of the adaptive jitter buffer (250: rides out Wi-Fi hiccups)",
           minimum=1, maximum=5000),
    Option("receive", "adaptive", bool, True, "adapt the jitter buffer to the network"),
    Option("receive", "inband_fec", bool, True, "use the Opus inband FEC of the next packet "
           "to rebuild a lost one (when the sender's encoder adds it; repair packets from "
           "`send --fec` are always used)"),
    Option("receive", "drift", bool, True,
           "follow the sender's clock by resampling within ±2‰ (inaudible), so the delay "
           "stays at the jitter target for hours"),
    Option("receive", "timeline", bool, True,
           "play on the sender's timeline when it keeps one (`send` to several rooms, `route`):"
           " each sample at the sender's capture time plus its latency, every room at once"),
    Option("receive", "output_offset_ms", float, 0.0,
           "what this room's output adds beyond what the sound server reports, in ms "
           "(speakers with DSP, Bluetooth, an AV receiver: measure it, e.g. with a clap and "
           "a phone); it is played that much earlier to stay on the timeline",
           minimum=-1000, maximum=5000),
    Option("receive", "takeover_ms", float, 100.0,
           "a new sender is played once the current one has been silent this long",
           minimum=0, maximum=60000),
    Option("receive", "key", str, None, "SRTP key file from `deskcast keygen`: play only "
           "packets authenticated with it, drop forged and replayed ones (default: plain RTP "
           "from anyone allowed)", metavar="FILE"),
    Option("receive", "allow", str, None, "only read datagrams from these networks "
           "(CIDR, e.g. 192.168.1.0/24 fd00::/8), dropping others unread; give it after "
           "[ADDR][:PORT] (default: from anywhere)", multiple=True,
           metavar="CIDR"),
    # [serve]
    Option("serve", "source", str, "desktop", "what to stream (desktop: the hub, else what "
           "you are hearing)", short="-s"),
    Option("serve", "listen", str, ":8000", "HOST:PORT to serve on (:8000: every address)"),
    Option("serve", "mp3_bitrate", int, 128, "MP3 bitrate in kbit/s, constant (128: what "
           "browsers and radios expect)", minimum=32, maximum=320),
    Option("serve", "burst_s", float, 1.0, "recent audio sent to a new listener at once, so "
           "players start immediately (1 s: enough for media players and a plain <audio> to start "
           "at once; deskcast's page plays the last 0.5 s of it and stays ~0.6 s behind live)",
           minimum=0, maximum=10),
    Option("serve", "max_lag_s", float, 4.0, "a listener further behind than this is cut "
           "(its player reconnects) so nobody drifts minutes behind", minimum=1, maximum=60),
    Option("serve", "max_listeners", int, 1000, "listeners at once; more get 503 (1000: "
           "what one core fans out at 128 kbit/s)", minimum=1, maximum=100000),
    Option("serve", "max_per_address", int, 20, "listeners at once from one IP address "
           "(20: a household, not a flood)", minimum=1, maximum=100000),
    Option("serve", "opus_bitrate", float, 96.0, "Ogg/Opus bitrate in kbit/s for "
           "/stream.opus (96: transparent stereo music for most ears, 3/4 of MP3's 128)",
           minimum=6, maximum=510),
    Option("serve", "opus_burst_s", float, 2.0, "like --burst-s, for /stream.opus (2 s: "
           "an <audio> element given the stream URL starts Ogg/Opus only with ~2 s buffered: "
           "1.0 s from Play to sound with 2 s, 2.1 s with 1 s; deskcast's page feeds it "
           "through Media Source Extensions and starts in ~0.4 s either way)",
           minimum=0, maximum=10),
    Option("serve", "always_on", bool, False, "keep every format's encoder running "
           "(default: a format's encoder runs only while somebody listens to it, saving the "
           "CPU of encoding for nobody)"),
    Option("serve", "idle_stop_s", float, 2.0, "stop a format's encoder this many seconds "
           "after its last listener left (2 s: a reconnecting page finds it still running)",
           minimum=0, maximum=3600),
    Option("serve", "aac_bitrate", int, 128, "AAC-LC bitrate in kbit/s for /stream.aac "
           "and --hls (128: transparent stereo music, what Apple's streams use)",
           minimum=16, maximum=320),
    Option("serve", "hls", str, "", "also write HTTP Live Streaming (AAC packed audio: "
           "index.m3u8 and its segments) into this folder, for any web server or CDN to "
           "serve (default: none)", metavar="DIR"),
    Option("serve", "hls_segment_s", float, 2.0, "length of an HLS segment (2 s: players "
           "start ~3 segments behind live, so ~6-8 s of delay; longer is sturdier)",
           minimum=0.5, maximum=30),
    Option("serve", "stream_name", str, "deskcast", "station name players show (icy-name)"),
    Option("serve", "icecast", str, "", "also push the stream as a source to this Icecast "
           "mount, which fans it out further: icecast://[source:]PASSWORD@HOST[:PORT]/MOUNT "
           "(.mp3 mount: MP3, .opus/.ogg: Ogg/Opus; default: none)", metavar="URL"),
    Option("serve", "icy_metaint", int, 16000, "bytes of MP3 between ICY title blocks for "
           "players that ask for them (16000: ~1 s at 128 kbit/s, like Icecast)",
           minimum=256, maximum=1 << 20),
    Option("serve", "token", str, None, "bearer token for POST /api/metadata and `deskcast "
           "meta` (default: a random one saved in $XDG_STATE_HOME/deskcast/serve-token, "
           "mode 0600)"),
    Option("serve", "tls_cert", str, None, "serve HTTPS with this PEM certificate (chain "
           "after it); needs --tls-key (default: plain HTTP, as for a trusted home network)",
           metavar="FILE"),
    Option("serve", "tls_key", str, None, "the unencrypted PEM private key of --tls-cert",
           metavar="FILE"),
    Option("serve", "listen_token", str, None, "a password listeners need: the page, "
           "streams, /api/status, /api/events and /metrics then want ?token=TOKEN or HTTP "
           "basic auth with any user name (default: none; listening is read-only, like a "
           "radio)", metavar="TOKEN"),
    Option("serve", "header_timeout_s", float, 15.0, "close a connection that has not sent "
           "a whole request this long after connecting (or after its last answer): stops "
           "slow-header (slowloris) clients holding sockets (15: Icecast's header-timeout; "
           "players send theirs in milliseconds)", minimum=1, maximum=3600),
    Option("serve", "tracker_url", str, None, "poll this URL for JSON saying what plays "
           "(a \"song tracker\"; default: none)"),
    Option("serve", "tracker_interval_s", float, 30.0, "seconds between song-tracker polls "
           "(30: what audiostreamer's page did)", minimum=1, maximum=86400),
    Option("serve", "tracker_title_field", str, "artist,title", "dotted paths into the "
           "tracker's JSON: ARTIST,TITLE or just TITLE (e.g. now.song.artist,now.song.title)"),
    Option("serve", "mpris", bool, True, "take the title from the desktop's media player "
           "that is playing (MPRIS over the D-Bus session bus; nothing happens without one)"),
    # [route]
    Option("route", "port", int, 1350, "receiver port for `route HOST` without :PORT (1350: "
           "what `deskcast receive` and trx-rx listen on)", minimum=1, maximum=65535),
    Option("route", "speakers", str, "", "PulseAudio/PipeWire sink that `route local` plays "
           "to (empty: the sink that was the default before the hub took over)"),
    Option("route", "alsa_speakers", str, "hw:0", "ALSA device that `route local` plays to "
           "on plain ALSA (hw:0: the first card, not the dmix default that feeds the hub)"),
    Option("route", "local_latency_ms", float, 30.0, "delay of the local loopback from the "
           "hub to the speakers (30: no underruns on a loaded 2-core machine, below what "
           "lip-sync notices)", minimum=5, maximum=2000),
    Option("route", "web_listen", str, ":8000", "HOST:PORT where `route web` serves "
           "(:8000: every address, like `serve`)"),
    Option("route", "answer_timeout_s", float, 4.0, "a host whose receiver has not reported "
           "within this long is shown as not answering (receivers report every 2 s)",
           minimum=0.5, maximum=60),
    Option("route", "restart_max_s", float, 30.0, "longest wait before restarting a leg "
           "that keeps failing (the wait doubles from 0.5 s per failure)", minimum=1,
           maximum=3600),
    # [hub]
    Option("hub", "sink_name", str, "deskcast",
           "name of the PulseAudio/PipeWire null sink that mixes all desktop audio"),
    Option("hub", "backend", str, "auto",
           "pulse (PulseAudio/PipeWire), alsa (snd-aloop + ~/.asoundrc) or auto (pulse when a "
           "sound server answers)", choices=("auto", "pulse", "alsa")),
    Option("hub", "asoundrc", str, "~/.asoundrc",
           "ALSA config file the alsa hub writes its fragment into"),
)

LOW_LATENCY: dict[str, dict[str, Value]] = {
    "send": {"frame_ms": 5.0, "buffer_ms": 10.0},
    "receive": {"jitter_ms": 5.0, "jitter_min_ms": 2.0, "buffer_ms": 20.0, "block_ms": 5.0},
}
"""What ``--low-latency`` (``low_latency = true`` in [send] or [receive]) changes from the
defaults, per section: measured with bench/latency.py (BENCHMARKS.md, latency)."""

SECTIONS: dict[str, tuple[Option, ...]] = {}
for _opt in OPTIONS:
    SECTIONS[_opt.section] = (*SECTIONS.get(_opt.section, ()), _opt)
