"""The web page served at ``/``: plain HTML, CSS and JavaScript, no build step.

Scripts and styles are separate files (``/app.js``, ``/app.css``) so the page's
Content-Security-Policy can forbid inline code altogether.
"""

from __future__ import annotations

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
const token = new URLSearchParams(location.search).get("token");
const auth = token === null ? "" : "token=" + encodeURIComponent(token) + "&";

function setState(text) { state.textContent = text; document.body.dataset.state = text; }
function connect() {
  audio.src = "stream." + format.value + "?" + auth + "t=" + Date.now();
  audio.play().catch(() => {});
  setState("connecting");
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
  if (wanted) { meterSetup(); lastMove = Date.now(); connect(); }
  else { audio.pause(); audio.removeAttribute("src"); audio.load(); setState("stopped"); }
  playButton.textContent = wanted ? "Pause" : "Play";
};
format.onchange = () => {
  try { localStorage.setItem("deskcast-format", format.value); } catch (e) { /* storage off */ }
  if (wanted) { lastMove = Date.now(); connect(); }
};
$("volume").oninput = (e) => { audio.volume = Number(e.target.value); };
audio.addEventListener("playing", () => { setState("playing"); backoff = 1000; });
audio.addEventListener("error", () => { if (wanted) setState("reconnecting"); });
// A dead server makes the element fire waiting/stalled but no error: watch the clock instead.
setInterval(() => {
  if (!wanted) return;
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
