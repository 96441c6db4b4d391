"""The web page served at ``/``: plain HTML, CSS and JavaScript, no build step.

Scripts and styles are separate files (``/app.js``, ``/app.css``) so the page's
Content-Security-Policy can forbid inline code altogether.

Where the browser has Media Source Extensions, the script fetches the stream itself and appends
each batch to a MediaSource as it arrives (Ogg/Opus rewrapped as WebM on the way, MP3 as it is),
then keeps the element's playhead ~0.5 s behind the newest audio: it skips the join burst at
the start, seeks forward after a stall and nudges ``playbackRate`` by 5 % for small drifts.
Given the stream URL instead, Chromium passes data on in 32 KiB blocks and so plays 2-3 s
behind live (BENCHMARKS.md section 5); ``/?mse=0`` still does that, and so does a browser
without MSE.
"""

from __future__ import annotations

from aiohttp import web

from deskcast.http.responses import NO_CACHE

# media-src blob:: the page feeds its <audio> element through a MediaSource (an object URL).
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "media-src 'self' blob:; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
PAGE_HEADERS = {"Cache-Control": NO_CACHE, "Content-Security-Policy": CSP,
                "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY"}

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>deskcast</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="app.css"></head>
<body><h1>deskcast</h1>
<p class="np">Now playing: <span id="nowplaying">&mdash;</span></p>
<p><button id="play">Play</button> <span id="state">stopped</span></p>
<p><label>Volume <input id="volume" type="range" min="0" max="1" step="0.01" value="1"></label>
<label>Format <select id="format"><option value="opus">Opus</option>
<option value="mp3">MP3</option></select></label></p>
<p><label>Level <meter id="level" min="-60" max="0" low="-20" high="-6" optimum="-30"
value="-60"></meter></label> <span id="leveldb"></span></p>
<p class="small"><span id="listeners">?</span> listening &middot; <span id="conn">connecting to
server</span></p>
<audio id="audio" preload="none"></audio>
<script src="app.js"></script></body></html>
"""

CSS = """body{font:16px system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}
button{font-size:1.2em;padding:.4em 1.2em}#state,.small{color:#555}.small{font-size:.9em}
.np{font-size:1.1em}#nowplaying{font-weight:bold}meter{width:12em}label{margin-right:1em}
"""

JS = r""""use strict";
const $ = (id) => document.getElementById(id);
const audio = $("audio"), state = $("state"), playButton = $("play"), format = $("format");
const opusOk = audio.canPlayType("audio/ogg; codecs=opus") !== "";
if (!opusOk) format.options[0].textContent = "Opus (this browser may not play it)";
let chosen = null;
try { chosen = localStorage.getItem("deskcast-format"); } catch (e) { /* storage off */ }
format.value = chosen === "mp3" || chosen === "opus" ? chosen : (opusOk ? "opus" : "mp3");
let wanted = false, lastTime = 0, lastMove = Date.now(), backoff = 1000;
let analyser = null, samples = null;
// A server with a listen token is opened as /?token=TOKEN: carry it to the stream and events.
const params = new URLSearchParams(location.search);
const token = params.get("token");
const auth = token === null ? "" : "token=" + encodeURIComponent(token) + "&";

// Staying near live.  Given a stream URL, Chromium's <audio> hands the decoder data in 32 KiB
// blocks only (2.7 s of 96 kbit/s Opus, 2 s of 128 kbit/s MP3), so it can never play closer
// to live than that.  Where Media Source Extensions exist the page fetches the stream itself
// and appends every batch as it comes (Ogg/Opus rewrapped as WebM, which MSE takes; MP3 as
// it is), and keeps the element's buffer ahead of its playhead near AHEAD_S.
const AHEAD_S = 0.5;       // the server writes ~0.1 s batches: 0.5 s rides out a busy machine
const SEEK_OVER_S = 0.5;   // this much more ahead (the join burst, a stall): jump forward
const NUDGE_S = 0.15;      // this much off AHEAD_S: play at NUDGE_RATE (or its inverse) until
const NUDGE_RATE = 1.05;   // back at AHEAD_S; 5 % with the pitch kept is hard to hear
const KEEP_BEHIND_S = 10;  // played audio kept in the MSE buffer (older is removed)
const MSE_TYPES = { mp3: "audio/mpeg", opus: 'audio/webm; codecs="opus"' };
let generation = 0, aborter = null;

function mseType(name) {
  // ?mse=0 opts out (the element is then given the stream URL).
  if (params.get("mse") === "0" || typeof MediaSource === "undefined") return null;
  const type = MSE_TYPES[name];
  return type && MediaSource.isTypeSupported(type) ? type : null;
}
function setState(text) { state.textContent = text; document.body.dataset.state = text; }
function stopFeed() {
  generation += 1;
  if (aborter) { aborter.abort(); aborter = null; }
}
function connect() {
  stopFeed();
  const url = "stream." + format.value + "?" + auth + "t=" + Date.now();
  // What is playing (as src would show it), also when src is a MediaSource's blob: URL.
  audio.dataset.stream = new URL(url, location.href).href;
  audio.playbackRate = 1;
  lastMove = Date.now();
  setState("connecting");
  const type = mseType(format.value);
  if (type === null) {
    audio.src = url;
  } else {
    const source = new MediaSource(), mine = generation;
    source.addEventListener("sourceopen", () => {
      if (mine !== generation) return;  // replaced before it opened
      URL.revokeObjectURL(audio.src);
      feed(source, type, url, mine);
    }, { once: true });
    audio.src = URL.createObjectURL(source);
  }
  audio.play().catch(() => {});
}
function retry(mine) {
  // The stream ended or failed: connect again after the backoff (the watchdog is the backstop).
  if (mine !== generation || !wanted) return;
  setState("reconnecting");
  const wait = backoff;
  backoff = Math.min(backoff * 2, 10000);
  lastMove = Date.now() + wait;
  setTimeout(() => { if (mine === generation && wanted) connect(); }, wait);
}
async function feed(source, type, url, mine) {
  let buffer;
  try {
    buffer = source.addSourceBuffer(type);
    buffer.mode = "sequence";
  } catch (e) { retry(mine); return; }
  const pending = [], rewrap = type === MSE_TYPES.opus ? oggToWebm() : null;
  const next = () => {
    if (mine !== generation || buffer.updating || source.readyState !== "open") return;
    const b = audio.buffered;
    if (b.length && audio.currentTime - b.start(0) > 2 * KEEP_BEHIND_S) {
      buffer.remove(0, audio.currentTime - KEEP_BEHIND_S);
    } else if (pending.length) {
      try { buffer.appendBuffer(pending.shift()); } catch (e) { retry(mine); }
    }
  };
  buffer.addEventListener("updateend", () => { follow(); next(); });
  const ctl = new AbortController();
  aborter = ctl;
  try {
    const resp = await fetch(url, { signal: ctl.signal, cache: "no-store" });
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const reader = resp.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done || mine !== generation) break;
      const data = rewrap ? rewrap(value) : value;
      if (data.length) { pending.push(data); next(); }
    }
  } catch (e) { /* refused, cut or aborted */ }
  retry(mine);
}
function follow() {
  // Keep the playhead AHEAD_S behind the newest audio the element holds.
  if (!audio.dataset.stream || audio.src.indexOf("blob:") !== 0 || audio.seeking) return;
  const b = audio.buffered;
  if (!b.length || audio.readyState < 1) return;
  const end = b.end(b.length - 1), ahead = end - audio.currentTime;
  let rate = audio.playbackRate;
  if (ahead > AHEAD_S + SEEK_OVER_S || audio.currentTime < b.start(b.length - 1)) {
    audio.currentTime = end - AHEAD_S;
    rate = 1;
  } else if (ahead > AHEAD_S + NUDGE_S) {
    rate = NUDGE_RATE;
  } else if (ahead < AHEAD_S - NUDGE_S) {
    rate = 1 / NUDGE_RATE;  // after an underrun: rebuild the margin against the next one
  } else if ((rate > 1 && ahead <= AHEAD_S) || (rate < 1 && ahead >= AHEAD_S)) {
    rate = 1;
  }
  if (rate !== audio.playbackRate) audio.playbackRate = rate;
}

// Ogg/Opus to WebM for MSE: returns a function taking the stream's bytes as they come and
// giving WebM bytes (the header once the OpusHead packet is in, then a cluster per call).
function cat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
function beBytes(value, size) {
  const out = new Uint8Array(size);
  for (let i = size - 1; i >= 0; i--) { out[i] = value % 256; value = Math.floor(value / 256); }
  return out;
}
function ebml(id, ...body) {
  // Element: ID (its length marker included), size as an 8-byte varint, body.
  const data = cat(body), idLen = id > 0xffffff ? 4 : id > 0xffff ? 3 : id > 0xff ? 2 : 1;
  const size = beBytes(data.length, 8);
  size[0] = 1;
  return cat([beBytes(id, idLen), size, data]);
}
const uintEl = (id, v) => ebml(id, beBytes(v, 8));
const textEl = (id, s) => ebml(id, new TextEncoder().encode(s));
function webmHeader(head) {
  const channels = head[9], preSkip = head[10] | (head[11] << 8), rate = new Uint8Array(8);
  new DataView(rate.buffer).setFloat64(0, 48000);
  return cat([
    ebml(0x1a45dfa3, uintEl(0x4286, 1), uintEl(0x42f7, 1), uintEl(0x42f2, 4),
         uintEl(0x42f3, 8), textEl(0x4282, "webm"), uintEl(0x4287, 4), uintEl(0x4285, 2)),
    [0x18, 0x53, 0x80, 0x67, 1, 255, 255, 255, 255, 255, 255, 255],  // Segment, size unknown
    ebml(0x1549a966, uintEl(0x2ad7b1, 1000000), textEl(0x4d80, "deskcast"),
         textEl(0x5741, "deskcast")),  // Info: timestamps in ms
    ebml(0x1654ae6b, ebml(0xae, uintEl(0xd7, 1), uintEl(0x73c5, 1), uintEl(0x83, 2),
                          textEl(0x86, "A_OPUS"), ebml(0x63a2, head),
                          uintEl(0x56aa, Math.round(preSkip * 1e9 / 48000)),
                          uintEl(0x56bb, 80000000),
                          ebml(0xe1, ebml(0xb5, rate), uintEl(0x9f, channels)))),
  ]);
}
function opusSamples(packet) {
  // Samples at 48 kHz in an Opus packet, from its TOC byte (RFC 6716 section 3.1).
  const toc = packet[0], config = toc >> 3, code = toc & 3;
  const frame = config < 12 ? [480, 960, 1920, 2880][config & 3]
    : config < 16 ? [480, 960][config & 1] : [120, 240, 480, 960][config & 3];
  return frame * (code === 0 ? 1 : code === 3 ? (packet[1] & 63) : 2);
}
function oggToWebm() {
  let rest = new Uint8Array(0), parts = [], headers = 0, started = false, clock = 0;
  return (bytes) => {
    const b = cat([rest, bytes]), out = [], blocks = [];
    let pos = 0;
    while (b.length - pos >= 27) {
      if (b[pos] !== 0x4f || b[pos + 1] !== 0x67 || b[pos + 2] !== 0x67 || b[pos + 3] !== 0x53) {
        pos += 1;  // not at a page: resynchronise on the next "OggS"
        continue;
      }
      const segments = b[pos + 26];
      if (b.length - pos < 27 + segments) break;
      let at = pos + 27 + segments, size = 0;
      for (let i = 0; i < segments; i++) size += b[pos + 27 + i];
      if (b.length < at + size) break;
      if (b[pos + 5] & 2) { headers = 2; parts = []; }  // a new stream: OpusHead, OpusTags
      for (let i = 0; i < segments; i++) {
        const n = b[pos + 27 + i];
        parts.push(b.subarray(at, at + n));
        at += n;
        if (n === 255) continue;  // the packet goes on
        const packet = cat(parts);
        parts = [];
        if (headers === 2) {
          if (!started) out.push(webmHeader(packet));
          started = true;
        } else if (headers === 0 && started && packet.length) {
          blocks.push([Math.round(clock / 48), packet]);  // ms
          clock += opusSamples(packet);
        }
        if (headers) headers -= 1;
      }
      pos = at;
    }
    rest = b.slice(pos);
    parts = parts.map((p) => p.slice());  // no views into the old buffer
    let i = 0;
    while (i < blocks.length) {  // clusters of at most 30 s (block times are 16-bit)
      const t0 = blocks[i][0], cluster = [uintEl(0xe7, t0)];
      for (; i < blocks.length && blocks[i][0] - t0 < 30000; i++) {
        const head = new Uint8Array(4), rel = blocks[i][0] - t0;
        head[0] = 0x81; head[1] = rel >> 8; head[2] = rel & 255; head[3] = 0x80;  // keyframe
        cluster.push(ebml(0xa3, head, blocks[i][1]));
      }
      out.push(ebml(0x1f43b675, ...cluster));
    }
    return cat(out);
  };
}

function meterSetup() {
  // Web Audio taps the element for the level meter; without it the page still plays.
  if (analyser) return;
  try {
    const ctx = new AudioContext();
    const node = ctx.createMediaElementSource(audio);
    analyser = ctx.createAnalyser();
    analyser.fftSize = 2048;
    samples = new Float32Array(analyser.fftSize);
    node.connect(analyser);
    analyser.connect(ctx.destination);
    ctx.resume().catch(() => {});
  } catch (e) { analyser = null; }
}
playButton.onclick = () => {
  wanted = !wanted;
  if (wanted) { meterSetup(); connect(); }
  else {
    stopFeed(); audio.pause(); audio.removeAttribute("src"); delete audio.dataset.stream;
    audio.load(); setState("stopped");
  }
  playButton.textContent = wanted ? "Pause" : "Play";
};
format.onchange = () => {
  try { localStorage.setItem("deskcast-format", format.value); } catch (e) { /* storage off */ }
  if (wanted) connect();
};
$("volume").oninput = (e) => { audio.volume = Number(e.target.value); };
audio.addEventListener("playing", () => { setState("playing"); backoff = 1000; });
audio.addEventListener("error", () => { if (wanted) setState("reconnecting"); });
// A dead server makes the element fire waiting/stalled but no error: watch the clock instead.
setInterval(() => {
  if (!wanted) return;
  follow();
  if (audio.currentTime !== lastTime) {
    lastTime = audio.currentTime; lastMove = Date.now(); return;
  }
  if (Date.now() - lastMove > 3000) {
    setState("reconnecting"); lastMove = Date.now() + backoff;
    backoff = Math.min(backoff * 2, 10000); connect();
  }
}, 500);
setInterval(() => {
  let db = -60;
  if (analyser && wanted && !audio.paused) {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const x of samples) sum += x * x;
    db = Math.max(-60, 10 * Math.log10(sum / samples.length + 1e-12));
  }
  $("level").value = db;
  $("leveldb").textContent = db > -60 ? db.toFixed(0) + " dBFS" : "";
}, 100);
const events = new EventSource("api/events?" + auth);
events.addEventListener("open", () => { $("conn").textContent = "connected"; });
events.addEventListener("error", () => { $("conn").textContent = "server unreachable, retrying"; });
events.addEventListener("metadata", (e) => {
  const track = JSON.parse(e.data);
  $("nowplaying").textContent = track.text || "\u2014";
  document.title = track.text ? track.text + " \u2014 deskcast" : "deskcast";
});
events.addEventListener("status", (e) => {
  $("listeners").textContent = String(JSON.parse(e.data).listeners);
});
"""


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", page)
    app.router.add_get("/app.js", asset)
    app.router.add_get("/app.css", asset)


async def page(request: web.Request) -> web.Response:
    return web.Response(text=HTML, content_type="text/html", headers=PAGE_HEADERS)


async def asset(request: web.Request) -> web.Response:
    if request.path == "/app.js":
        return web.Response(text=JS, content_type="text/javascript", headers=PAGE_HEADERS)
    return web.Response(text=CSS, content_type="text/css", headers=PAGE_HEADERS)
