"""Model settings: which Qwen3-VL checkpoint or preset, dtype, device, attention and decoding."""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("auto", "float32", "bfloat16", "float16")
ATTN = ("auto", "sdpa", "eager", "flash_attention_2")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "tiny"
    """Preset (tiny, random-2b, random-4b, random-8b), Hugging Face hub id, or local checkpoint folder."""
    dtype: str = "auto"
    """auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda, cuda:N."""
    attn: str = "auto"
    """auto (= sdpa), sdpa, eager, or flash_attention_2 (asked for by name; no hidden-slot masks, see backbone/loading.py)."""
    max_new_tokens: int = 64
    """Upper bound on answer length in tokens."""
    temperature: float = 0.0
    """0 = greedy; > 0 samples with temperature and top_p."""
    top_p: float = 1.0
    """Nucleus sampling mass when temperature > 0."""
    seed: int = 0
    """Seed for preset weights and sampling."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name: must name a preset, hub id or folder")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.attn not in ATTN:
            raise ValueError(f"attn: {self.attn!r} is not one of {', '.join(ATTN)}")
        if not (self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device: {self.device!r} is not auto, cpu, cuda or cuda:N")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
