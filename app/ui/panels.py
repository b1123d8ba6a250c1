"""HTML for the live panels (source state, memory per tier, the "now" label) and the chat's answer messages."""

from __future__ import annotations

import html
import os
from collections.abc import Callable
from typing import Any

from longwatch.app.schema import format_bytes
from longwatch.app.ui.answer import AnswerUpdate
from longwatch.app.ui.reasoning import split_reasoning
from longwatch.app.ui.thumbs import data_uri
from longwatch.app.ui.timelinks import format_clock, linkify, seek_link
from longwatch.app.worker import WorkerStatus

_REASON = {"sink": "sink", "memory": "memory", "window": "recent", "retrieved": "retrieved", "time": "named time"}


def _box(level: str, body: str, elem_id: str = "") -> str:
    ident = f' id="{elem_id}"' if elem_id else ""
    return f'<div{ident} class="lw-box lw-{level}">{body}</div>'


def notice_html(level: str, text: str) -> str:
    """A message box: level info | error."""
    return _box(level, html.escape(text), "lw-notice")


def source_html(status: WorkerStatus | None, notice: tuple[str, str] | None = None) -> str:
    """The source line: what is being watched and its state (connecting, streaming, reconnecting, failed)."""
    parts = [notice_html(*notice)] if notice else []
    if status is None:
        if not notice:
            parts.append(_box("idle", "No source yet: upload a video, start the webcam, or connect a camera URL."))
        return "".join(parts)
    s = status
    # uploads live in Gradio's temporary folder: the file name is what the user knows
    name = html.escape(os.path.basename(s.source) if s.kind == "upload" else s.source)
    progress = f"{s.patches} patches, up to {format_clock(s.t_last)}"
    if s.state == "failed":
        body, level = f"<b>failed</b> · {html.escape(s.reason or 'unknown error')}", "error"
    elif s.state == "reconnecting" and s.kind == "webcam":
        body, level = "<b>resuming</b> the webcam after a pause", "ok"
    elif s.state == "reconnecting":
        retry = f", next retry in {s.next_retry_s:.1f} s" if s.next_retry_s is not None else ""
        body = (f"<b>reconnecting</b> to {name} (attempt {s.attempt}{retry})"
                + (f" · {html.escape(s.reason)}" if s.reason else ""))
        level = "warn"
    elif s.state == "connecting":
        body = ("<b>waiting</b> for the webcam's first frames" if s.kind == "webcam"
                else f"<b>connecting</b> to {name}" + (f" (attempt {s.attempt + 1})" if s.attempt else ""))
        level = "warn"
    elif s.state == "ended" and s.busy:
        body, level = _encoding(s, name, progress), "ok"
    elif s.state == "ended":
        note = f" · {html.escape(s.reason)}" if s.reason and s.reason != "closed" else ""
        body, level = f"<b>ended</b> · {name} is in memory: {progress}{note}", "ok"
    elif s.kind == "upload":
        body, level = _encoding(s, name, progress), "ok"
    else:
        body, level = f"<b>streaming</b> {name} · {progress}", "ok"
    parts.append(f'<div id="lw-state" class="lw-box lw-{level}" data-state="{s.state}">{body}</div>')
    return "".join(parts)


def _encoding(s: WorkerStatus, name: str, progress: str) -> str:
    """An upload being encoded, against its length when the probe knew it: "encoding 12.0 of 40.0 s (30%)"."""
    if not s.duration_s:
        return f"<b>encoding</b> {name} · {progress}"
    done = min(s.t_last, s.duration_s)  # the last patch ends one frame period after its last frame
    return (f"<b>encoding</b> {done:.1f} of {s.duration_s:.1f} s ({100 * done / s.duration_s:.0f}%) · {name} · "
            f"{s.patches} patches")


def _tier_row(name: str, tier: dict[str, Any]) -> str:
    budget = tier.get("budget")
    used = tier.get("bytes", 0)
    if budget == 0:
        return f'<tr><td>{name}</td><td colspan="3" class="lw-dim">off (budget 0)</td></tr>'
    share = min(1.0, used / budget) if budget else 0.0
    bar = (f'<div class="lw-bar"><div style="width:{100 * share:.0f}%"></div></div>' if budget
           else '<span class="lw-dim">unbounded</span>')
    limit = format_bytes(budget) if budget else "∞"
    return (f'<tr><td>{name}</td><td id="lw-{name}-blocks">{tier.get("blocks", 0)}</td>'
            f'<td>{format_bytes(used)} / {limit}</td><td>{bar}</td></tr>')


def memory_html(status: WorkerStatus | None, play_pos: float | None = None) -> str:
    """Policy, blocks and bytes per tier against their budgets, ingest rate, lag and dropped frames."""
    if status is None or status.memory is None:
        return '<div id="lw-mem" class="lw-mem"><b>Memory</b> <span class="lw-dim">empty</span></div>'
    m, ing = status.memory, status.ingest
    tiers = "".join(_tier_row(n, m["tiers"][n]) for n in ("device", "host", "disk") if n in m["tiers"])
    index = m.get("index") or {}
    if status.kind == "upload":
        ahead = f" · playback at {format_clock(play_pos)}" if play_pos is not None else ""
        lag = f"encoded up to {format_clock(status.t_last)}{ahead}"
    else:
        lag = f'lag behind live <span id="lw-lag">{ing.get("lag_s", 0.0):.1f}</span> s'
    facts = [f'ingest <span id="lw-rate">{status.rate:.1f}</span>× real time', lag,
             f'dropped frames <span id="lw-dropped">{ing.get("dropped_frames", 0)}</span>',
             f'evicted {m.get("evicted", 0)} blocks']
    if index:
        facts.append(f'index {index.get("blocks", 0)} blocks ({html.escape(str(index.get("backend")))})')
    return (f'<div id="lw-mem" class="lw-mem"><div><b>Memory</b> · policy <b>{html.escape(m["policy"])}</b> · '
            f'<span id="lw-patches">{m["patches"]}</span> patches, up to {format_clock(m["t_last"])}</div>'
            f'<table><tr><th>tier</th><th>blocks</th><th>bytes / budget</th><th></th></tr>{tiers}</table>'
            f'<div class="lw-facts">{" · ".join(facts)}</div></div>')


def now_label(kind: str | None, play_pos: float | None, t_last: float) -> str:
    """What "now" means for the next question: the play position of an upload, the live edge of a stream."""
    if kind is None:
        return '<span id="lw-now" class="lw-dim">now: no video</span>'
    if kind == "upload":
        t = play_pos or 0.0
        return f'<span id="lw-now" data-now="{t:.2f}">now <b>{format_clock(t)}</b><br>play position</span>'
    return f'<span id="lw-now" data-now="{t_last:.2f}">now <b>{format_clock(t_last)}</b><br>live edge</span>'


def evidence_html(evidence: list[Any], thumbnail: Any) -> str:
    """A strip of the blocks an answer used: thumbnail and time span each, both seeking the player.

    `thumbnail(t)` returns JPEG bytes near stream time t, or None.
    """
    seen, items = set(), []
    for e in evidence:
        if e.block_id in seen:
            continue
        seen.add(e.block_id)
        jpeg = thumbnail(e.t_start)
        img = f'<img src="{data_uri(jpeg)}" alt="{format_clock(e.t_start)}">' if jpeg else ""
        why = _REASON.get(e.reason, e.reason)
        score = f" {e.score:.2f}" if e.score is not None else ""
        items.append(f'<span class="lw-ev-item lw-ev-{html.escape(e.reason)}">'
                     f'<a class="lw-seek" href="#t={e.t_start:.2f}">{img}</a>'
                     f'{seek_link(e.t_start, f"{format_clock(e.t_start)}–{format_clock(e.t_end)}")}'
                     f'<small>{html.escape(why)}{score}</small></span>')
    if not items:
        return ""
    return f'<div class="lw-ev"><div class="lw-ev-title">evidence · {len(items)} blocks</div>{"".join(items)}</div>'


STOPPED = '<span class="lw-stopped">… (stopped)</span>'
"""The end of an answer the user stopped."""


def answer_html(text: str, evidence: str = "", footer: str = "", stopped: bool = False) -> str:
    """An assistant message: the answer with seek links (marked when stopped), its evidence strip, a timing line."""
    body = linkify(text) + (("" if not text or text[-1:].isspace() else " ") + STOPPED if stopped else "")
    foot = f'<div class="lw-foot">{html.escape(footer)}</div>' if footer else ""
    return f"{body}\n\n{evidence}{foot}" if evidence or foot else body


def reasoning_message(text: str, thinking: bool) -> dict[str, Any]:
    """A Thinking checkpoint's reasoning as the chat's folded "Reasoning" message (a Gradio thought).

    Open with a spinner while it grows (status pending), closed once `</think>` came (done); the answer
    is the next message.
    """
    return {"role": "assistant", "content": linkify(text) + (" ▍" if thinking else ""),
            "metadata": {"title": "Reasoning", "status": "pending" if thinking else "done"}}


def error_html(text: str) -> str:
    return f'<div class="lw-box lw-error">⚠ {html.escape(text)}</div>'


def answer_messages(up: AnswerUpdate, thumbnail: Callable[[float], bytes | None],
                    thinking_model: bool = False) -> list[dict[str, Any]]:
    """The chat's assistant messages for one answer update: the folded reasoning (if any), then the answer.

    While the model still reasons there is no answer message yet; the last update adds the evidence
    strip and the timing line, and "… (stopped)" when the user stopped it.
    """
    if up.error:
        return [{"role": "assistant", "content": error_html(up.error)}]
    split = split_reasoning(up.text, final=up.answer is not None or up.stopped, thinking_model=thinking_model)
    out = [reasoning_message(split.reasoning, split.thinking)] if split.reasoning is not None else []
    if split.thinking:
        return out
    if up.answer is not None:
        a = up.answer
        foot = ("stopped · " if up.stopped else "") + (
            f"first token {a.ttft_s * 1000:.0f} ms · {len(a.token_ids)} tokens · {a.context_tokens} context tokens")
        text = split.answer or ("No answer after the reasoning." if split.reasoning is not None and not up.stopped
                                else "")
        body = answer_html(text, evidence_html(a.evidence, thumbnail), foot, stopped=up.stopped)
    elif up.stopped:  # the model was still busy (or never asked) when the page moved on
        body = answer_html(split.answer, stopped=True)
    else:
        body = linkify(split.answer) + " ▍" if split.answer else "…"
    return out + [{"role": "assistant", "content": body}]
