"""Model settings: which Qwen3-VL checkpoint or preset, dtype, device, attention and decoding."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

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
    temperature: float | None = None
    """0 = greedy; > 0 samples. None (unset, like the other sampling keys): the checkpoint's
    generation_config.json, as transformers' generate() reads it (greedy when it does not sample)."""
    top_p: float | None = None
    """Nucleus sampling mass when sampling (1 = off)."""
    top_k: int | None = None
    """Sample among the k most likely tokens (0 = off)."""
    min_p: float | None = None
    """Drop tokens below min_p times the most likely one's probability (0 = off)."""
    repetition_penalty: float | None = None
    """> 1 discourages repeating the answer's own tokens, greedy or not (1 = off)."""
    seed: int = 0
    """Seed for preset weights and sampling."""

    def greedy(self) -> ModelConfig:
        """This config decoding greedily and unpenalised whatever the checkpoint says (evaluation, benchmarks)."""
        return dataclasses.replace(self, temperature=0.0, top_p=1.0, top_k=0, min_p=0.0, repetition_penalty=1.0)

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
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0, got {self.top_k}")
        if self.min_p is not None and not 0 <= self.min_p < 1:
            raise ValueError(f"min_p: must be in [0, 1), got {self.min_p}")
        if self.repetition_penalty is not None and self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty: must be > 0, got {self.repetition_penalty}")


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.0
    """0 = greedy (after the repetition penalty, if any)."""
    top_p: float = 1.0
    max_new_tokens: int = 64
    seed: int = 0
    top_k: int = 0
    """0 = off."""
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    """Over the answer's own tokens (the cached video context keeps no token ids to penalise)."""

    def greedy(self) -> "Sampling":
        """The same length, greedy and unpenalised: what evaluation and benchmarks decode with."""
        return Sampling(max_new_tokens=self.max_new_tokens, seed=self.seed)


def checkpoint_sampling(cfg: ModelConfig, generation: Any | None) -> Sampling:
    """Sampling from `cfg`, each key left unset taking the checkpoint's generation config (transformers'
    GenerationConfig from generation_config.json). The checkpoint's top_p / top_k / min_p apply only when
    the checkpoint itself samples (do_sample), so a greedy checkpoint with --temperature 0.7 samples from
    the whole distribution rather than from GenerationConfig's unrequested top_k=50."""
    samples = bool(getattr(generation, "do_sample", False))

    def value(name: str, off: float) -> Any:
        mine = getattr(cfg, name)
        theirs = getattr(generation, name, None) if samples or name == "repetition_penalty" else None
        return mine if mine is not None else (off if theirs is None else theirs)

    temperature = value("temperature", 0.0) if cfg.temperature is not None or samples else 0.0
    return Sampling(temperature=float(temperature), top_p=float(value("top_p", 1.0)), max_new_tokens=cfg.max_new_tokens,
                    seed=cfg.seed, top_k=int(value("top_k", 0)), min_p=float(value("min_p", 0.0)),
                    repetition_penalty=float(value("repetition_penalty", 1.0)))
