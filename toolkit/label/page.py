"""The labelling page: one HTML file with its script and style inline (no external resources).

Keys: ``1``…``N`` label the frame and move on, ``←``/``→`` move, ``u`` undoes the latest change,
``s`` skips the frame, ``Enter`` takes the model's guess (with ``--model``). Every change is a
``POST`` the server saves before it answers; the page queues them so they land in key order.
"""

from __future__ import annotations

import html
import json
from typing import Mapping

__all__ = ["render_page"]

_CSS = """
*{box-sizing:border-box} body{margin:0;background:#16181b;color:#e4e4e4;font:15px system-ui,sans-serif}
header{display:flex;gap:18px;align-items:center;padding:8px 14px;background:#202328}
#progress{flex:1;height:10px;background:#33373d;border-radius:5px;overflow:hidden}
#bar{height:100%;width:0;background:#3fb37f}
main{display:flex;gap:12px;justify-content:center;align-items:flex-start;padding:10px}
figure{margin:0;text-align:center} figcaption{margin-top:6px;font-size:1.1em}
#frame,#heat{display:block;height:calc(100vh - 190px);max-width:calc(100vw - 24px);object-fit:contain}
main.guessing #frame,main.guessing #heat{max-width:calc(50vw - 18px)}
#current{font-weight:600;padding:2px 10px;border-radius:4px;background:#33373d}
#current.set{background:#2d6a4f} #current.skipped{background:#6c584c}
footer{display:flex;flex-wrap:wrap;gap:8px 18px;padding:6px 14px;color:#aaa}
footer kbd{background:#33373d;color:#fff;border-radius:3px;padding:0 5px}
#counts span{margin-right:14px} #error{color:#ff8a80;padding:0 14px} #done{color:#3fb37f}
"""

_SCRIPT = """
"use strict";
const BOOT = %(boot)s;
let S = null, pos = 0, pending = 0, queue = Promise.resolve();
const $ = id => document.getElementById(id);

async function call(path, body) {
  const r = await fetch(path, {method: "POST", body: JSON.stringify(body), headers: {
    "Content-Type": "application/json", "X-Edgecam-Token": BOOT.token}});
  const text = await r.text();
  if (!r.ok) throw new Error(text.trim() || String(r.status));
  return JSON.parse(text);
}

function apply(r) {
  if (r.index !== null) S.labels[r.index] = r.label;
  S.counts = r.counts; S.done = r.done;
  $("error").textContent = "";
}

function enqueue(step) {
  pending++;
  document.body.dataset.pending = String(pending);
  queue = queue.then(step).catch(err => { $("error").textContent = err.message; })
    .finally(() => { pending--; render(); });
}

function setLabel(name) {
  const i = pos;
  pos = Math.min(i + 1, S.total - 1);
  render();
  enqueue(async () => apply(await call("/api/label", {index: i, label: name})));
}

function undo() {
  enqueue(async () => {
    const r = await call("/api/undo", {});
    apply(r);
    if (r.index !== null) pos = r.index;
  });
}

function move(step) { pos = Math.max(0, Math.min(S.total - 1, pos + step)); render(); }

function render() {
  if (!S) return;
  document.body.dataset.position = String(pos);
  document.body.dataset.pending = String(pending);
  if (S.total === 0) { $("file").textContent = "no images in this folder"; return; }
  const src = "/image/" + pos;
  if ($("frame").getAttribute("src") !== src) $("frame").src = src;
  if (pos + 1 < S.total) new Image().src = "/image/" + (pos + 1);  // prefetch
  $("position").textContent = (pos + 1) + " / " + S.total;
  $("file").textContent = S.files[pos];
  const label = S.labels[pos];
  $("current").textContent = label === null ? "unlabelled" : label;
  $("current").className = label === null ? "" : (label === "skipped" ? "skipped" : "set");
  $("bar").style.width = (100 * S.done / S.total) + "%%";
  $("done").textContent = S.done === S.total ? "all frames labelled" : S.done + " done";
  const counts = $("counts");
  counts.textContent = "";
  S.classes.forEach((name, k) => {
    const span = document.createElement("span");
    span.textContent = (k + 1) + " " + name + ": " + S.counts[name];
    counts.appendChild(span);
  });
  const skipped = document.createElement("span");
  skipped.textContent = "skipped: " + S.counts.skipped;
  counts.appendChild(skipped);
  const guess = S.guesses ? S.guesses[pos] : null;
  $("guessbox").hidden = !S.guesses;
  document.querySelector("main").classList.toggle("guessing", !!S.guesses);
  if (S.guesses) {
    $("guess").textContent = guess === null ? "model: no guess (unreadable)" :
      "model: " + guess.label + " " + (100 * guess.confidence).toFixed(0) + "%%" +
      (guess.key ? "  (Enter = " + guess.key + ")" : "");
    const heat = "/overlay/" + pos;
    if ($("heat").getAttribute("src") !== heat) $("heat").src = heat;
  }
}

document.addEventListener("keydown", e => {
  if (!S || S.total === 0 || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key, n = Number(k);
  const guess = S.guesses ? S.guesses[pos] : null;
  if (/^[1-9]$/.test(k) && n <= S.classes.length) setLabel(S.classes[n - 1]);
  else if (k === "s" || k === "S") setLabel("skipped");
  else if (k === "u" || k === "U") undo();
  else if (k === "ArrowRight") move(1);
  else if (k === "ArrowLeft") move(-1);
  else if (k === "Enter" && guess && guess.key) setLabel(guess.label);
  else return;
  e.preventDefault();
});

fetch("/api/state").then(r => r.json()).then(state => {
  S = state; pos = state.position; render();
  document.body.dataset.ready = "1";
}).catch(err => { $("error").textContent = "cannot load the frames: " + err.message; });
"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgecam label — {title}</title>
<link rel="icon" href="data:,"><style>{css}</style></head>
<body>
<header><span id="position"></span><div id="progress"><div id="bar"></div></div><span id="done"></span></header>
<header><span id="current"></span><span id="file"></span></header>
<div id="error" role="alert"></div>
<main><figure><img id="frame" alt="frame to label"></figure>
<figure id="guessbox" hidden><img id="heat" alt="the model's heatmap"><figcaption id="guess"></figcaption></figure></main>
<footer><div id="counts"></div>
<div><kbd>1</kbd>…<kbd>{n}</kbd> label · <kbd>←</kbd><kbd>→</kbd> move · <kbd>u</kbd> undo · <kbd>s</kbd> skip{enter}</div></footer>
<script nonce="{nonce}">{script}</script>
</body></html>
"""


def _script_json(value: Mapping) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, ``<!--`` or U+2028 can end or bend it."""
    text = json.dumps(value, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(title: str, classes, token: str, nonce: str, with_model: bool) -> str:
    """The page's HTML.

    Args:
        title: shown in the tab (the folder's name); escaped.
        classes: the class names (key order).
        token: the session token every ``POST`` must carry (``X-Edgecam-Token``).
        nonce: the Content-Security-Policy nonce of the inline script.
        with_model: mention the Enter key (take the model's guess).
    """
    script = _SCRIPT % {"boot": _script_json({"token": token})}
    return _PAGE.format(title=html.escape(title), css=_CSS, n=len(classes), nonce=html.escape(nonce),
                        enter=" · <kbd>Enter</kbd> take the model's guess" if with_model else "", script=script)
