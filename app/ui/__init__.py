"""The Gradio UI: ask a video questions while it plays, from an upload, the browser webcam or a camera URL.

Modules, one idea each: sessions (per-tab state and limits; background ingest is app/worker.py), webcam
(browser frames as an ingest source), answer (token streaming and Stop), reasoning (a Thinking model's
<think> split off), timelinks (times -> seek links), thumbs (evidence thumbnails), panels (HTML and chat
messages), validate (inputs), events (handlers), layout (the page), assets (CSS and script), server (launch).
"""
