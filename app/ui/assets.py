"""The page's CSS and script: seek links, reading the player's position, panel styles."""

from __future__ import annotations

# Seek links are plain `<a href="#t=SECONDS">` (the chat's sanitizer keeps href and class, drops
# data-* and handlers), so one capturing click listener on the document serves every message,
# including ones streamed in after load. Capturing runs before Gradio's own link handling.
HEAD = """
<script>
(() => {
  const player = () => document.querySelector('#lw-player video');
  window.lwPlayPos = () => {
    const v = player();
    return v && v.currentSrc && isFinite(v.currentTime) ? v.currentTime : null;
  };
  document.addEventListener('click', (ev) => {
    const a = ev.target && ev.target.closest ? ev.target.closest('a[href^="#t="]') : null;
    if (!a) return;
    ev.preventDefault();
    ev.stopPropagation();
    const t = parseFloat(a.getAttribute('href').slice(3));
    const v = player();
    if (!v || !v.currentSrc || !isFinite(t)) {
      a.title = 'live source: there is no player to seek; the thumbnail shows that moment';
      return;
    }
    v.currentTime = Math.min(t, isFinite(v.duration) ? v.duration : t);
    document.querySelectorAll('a.lw-seeked').forEach((x) => x.classList.remove('lw-seeked'));
    a.classList.add('lw-seeked');
  }, true);
})();
</script>
"""

# The play position rides along with events as an input value (Gradio runs `js` before the
# server function and sends what it returns).
TICK_JS = "(pos) => (window.lwPlayPos ? window.lwPlayPos() : null)"
ASK_JS = "(q, pos, history) => [q, window.lwPlayPos ? window.lwPlayPos() : null, history]"

CSS = """
#lw-banner { background: #fff4d6; border: 1px solid #e8c35a; border-radius: 8px; padding: 8px 12px; color: #4a3b00; }
#lw-banner code { background: #fbe7a8; }
.lw-box { border-radius: 8px; padding: 6px 10px; margin: 2px 0; font-size: 0.92em; }
.lw-ok { background: #e8f6ec; border: 1px solid #9fd3ae; }
.lw-warn { background: #fff6e0; border: 1px solid #f0cf7a; }
.lw-error { background: #fdecec; border: 1px solid #eaa2a2; color: #7a1111; }
.lw-info { background: #eef3fb; border: 1px solid #a9c0e6; }
.lw-idle { background: #f3f4f6; border: 1px solid #d9dce1; color: #555; }
.lw-mem { font-size: 0.88em; }
.lw-mem table { width: 100%; border-collapse: collapse; margin: 4px 0; border: none !important; }
.lw-mem tr { border: none !important; }
.lw-mem td, .lw-mem th { padding: 2px 6px !important; text-align: left; border: none !important;
  border-bottom: 1px solid #eee !important; background: none !important; font-size: 0.95em; }
.lw-bar { width: 120px; height: 8px; background: #e5e7eb; border-radius: 4px; overflow: hidden; }
.lw-bar > div { height: 100%; background: #4f7cd9; }
.lw-dim { color: #888; }
.lw-facts { color: #444; }
.lw-ev { display: flex; gap: 6px; overflow-x: auto; padding: 6px 0 2px; margin-top: 6px; border-top: 1px dashed #ccc; }
.lw-ev-title { writing-mode: vertical-rl; transform: rotate(180deg); font-size: 0.72em; color: #777; }
.lw-ev-item { display: flex; flex-direction: column; align-items: center; font-size: 0.75em; min-width: 72px; }
.lw-ev-item img { width: 72px; border-radius: 4px; border: 2px solid #d0d5dd; margin: 0 !important; }
.lw-ev-retrieved img, .lw-ev-time img { border-color: #4f7cd9; }
.lw-ev-item small { color: #777; }
a.lw-seek { color: #1d4ed8; text-decoration: underline dotted; cursor: pointer; }
a.lw-seeked { background: #dbe7ff; border-radius: 3px; }
.lw-foot { font-size: 0.72em; color: #888; margin-top: 2px; }
#lw-now-box { min-width: 110px; max-width: 130px; align-self: center; font-size: 0.85em; line-height: 1.35; }
#lw-ask, #lw-stop { max-height: 44px; align-self: center; }
.lw-stopped { color: #888; font-style: italic; }
"""
