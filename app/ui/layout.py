"""The page: sources on the left (upload player, webcam, camera URL), chat and live panels on the right."""

from __future__ import annotations

import html
from typing import Any

import gradio as gr

from longwatch.app.ui.assets import ASK_JS, TICK_JS
from longwatch.app.ui.events import Handlers

REFRESH_S = 1.0
"""Live panels (source state, memory, "now") refresh this often."""


def demo_banner(model: str) -> str:
    return (
        '<div id="lw-banner"><b>Offline demo.</b> The <code>' + html.escape(model) + "</code> preset has random "
        "weights: its answers are meaningless text. Everything else is real: ingest, bounded KV memory, "
        "retrieval, the evidence each answer used and the timings. Start with a real checkpoint: "
        "<code>longwatch ui --model Qwen/Qwen3-VL-2B-Instruct</code></div>")


def build(handlers: Handlers, *, fps: float, max_sessions: int, webcam_time_limit_s: float = 0.0,
          banner: str | None = None) -> gr.Blocks:
    """Wire the page to `handlers`. `fps` sets how often the webcam sends a frame; `webcam_time_limit_s`
    (0: none) how long one webcam stream event may run (ui.webcam_time_limit_s)."""
    h = handlers
    # uploads pile up in Gradio's temporary folder: drop them a day after upload (ingest is long done
    # by then); the preloaded sample is a default value, which Gradio never deletes
    with gr.Blocks(title="longwatch", delete_cache=(3600, 86400)) as demo:
        if banner:
            gr.HTML(banner)
        gr.Markdown("### longwatch · ask a video questions while it plays")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                with gr.Tabs(elem_id="lw-tabs"):
                    with gr.Tab("Upload", id="upload", elem_id="lw-tab-upload"):
                        video = gr.Video(value=h.preload, sources=["upload"], label="Video", height=380,
                                         elem_id="lw-player")
                    with gr.Tab("Webcam", id="webcam", elem_id="lw-tab-webcam"):
                        cam = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam",
                                       elem_id="lw-cam", height=380)
                    with gr.Tab("Camera URL", id="url", elem_id="lw-tab-url"):
                        url = gr.Textbox(label="RTSP, RTMP or HTTP(S) URL", elem_id="lw-url",
                                         placeholder="rtsp://user:password@camera.local:8554/live")
                        with gr.Row():
                            connect = gr.Button("Connect", variant="primary", elem_id="lw-connect")
                            disconnect = gr.Button("Disconnect", elem_id="lw-disconnect")
                source = gr.HTML(elem_id="lw-source")
                memory = gr.HTML(elem_id="lw-memory")
            with gr.Column(scale=2):
                chat = gr.Chatbot(label="Answers", elem_id="lw-chat", height=560, feedback_options=None,
                                  placeholder="Ask about what has been seen so far. Times in answers seek "
                                              "the video; each answer shows the blocks it used.")
                with gr.Row(equal_height=False):
                    question = gr.Textbox(show_label=False, placeholder="Ask about the video…", scale=5,
                                          elem_id="lw-question", submit_btn=False, lines=1, container=False)
                    now = gr.HTML(elem_id="lw-now-box")
                    ask = gr.Button("Ask", variant="primary", scale=1, min_width=70, elem_id="lw-ask")
                    stop = gr.Button("Stop", variant="stop", scale=1, min_width=70, elem_id="lw-stop", visible=False)
        play_pos = gr.Number(visible=False)
        timer = gr.Timer(REFRESH_S)

        demo.load(h.load, None, [source, memory, now])
        demo.unload(h.unload)
        video.upload(h.upload, [video], [source, chat])
        video.clear(h.clear_source, None, [source], show_progress="hidden")
        # one stream event per recording tab, held while it sends frames: Gradio closes it when the tab closes,
        # Record stops or no frame comes for 30 s; at its time limit (if any) the page opens a new one
        limit = max(1, round(webcam_time_limit_s)) if webcam_time_limit_s > 0 else None
        streaming = cam.stream(h.webcam_frame, [cam], None, stream_every=min(0.5, 1.0 / fps), time_limit=limit,
                               concurrency_limit=max_sessions, show_progress="hidden")
        streaming.then(h.webcam_ended, None, None, show_progress="hidden", api_visibility="private")
        for trigger in (connect.click, url.submit):
            trigger(h.connect, [url], [source, chat], show_progress="hidden")
        disconnect.click(h.clear_source, None, [source], show_progress="hidden")
        # Stop shows from the question on (queued or streaming); its click sets the answer's stop flag, so the
        # model stops decoding and the answer ends on its own, marked stopped with its evidence and timings
        # (Gradio's `cancels=` would close the event before that last update)
        quiet: dict[str, Any] = dict(queue=False, show_progress="hidden", api_visibility="private")
        for trigger in (question.submit, ask.click):
            trigger(h.stop_shown, None, [stop], **quiet).then(
                h.ask, [question, play_pos, chat], [chat, question], js=ASK_JS, concurrency_limit=max_sessions,
                show_progress="hidden").then(h.stop_hidden, None, [stop], **quiet)
        stop.click(h.stop, None, [stop], concurrency_limit=None, show_progress="hidden")
        timer.tick(h.tick, [play_pos], [source, memory, now], js=TICK_JS, show_progress="hidden",
                   concurrency_limit=None)
    return demo
