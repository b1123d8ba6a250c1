"""GPU checks (run with `python -m pytest -m gpu` on a CUDA machine): bf16 streaming, pinned offload, GPU index."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from longwatch.backbone.config import ModelConfig
from longwatch.backbone.model import Backbone, Sampling
from longwatch.ingest.patches import TemporalPatch
from longwatch.memory.config import MemoryConfig
from longwatch.memory.stream import MemoryStream

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on a GPU machine with -m gpu)")]


def _patches(n: int):
    rng = np.random.default_rng(0)
    return [TemporalPatch(i, rng.integers(0, 256, (2, 64, 96, 3), dtype=np.uint8), (i, i + 0.5), i, i + 1.0)
            for i in range(n)]


def test_bf16_cuda_stream_tracks_fp32_cpu():
    cpu = Backbone.load(ModelConfig(name="tiny", device="cpu", dtype="float32"))
    gpu = Backbone.load(ModelConfig(name="tiny", device="cuda"))
    assert gpu.dtype == torch.bfloat16
    answers = []
    for bb in (cpu, gpu):
        ms = MemoryStream(bb, MemoryConfig(policy="rekv", window_blocks=3, device_budget=256 * 2**20))
        for p in _patches(10):
            ms.ingest(p)
        answers.append(ms.ask("What happened?", keep_logits=True, sampling=Sampling(max_new_tokens=1)))
    a, b = answers[0].logits[0], answers[1].logits[0]
    assert torch.nn.functional.cosine_similarity(a, b.float(), dim=0) > 0.99


def test_offload_uses_pinned_host_memory():
    bb = Backbone.load(ModelConfig(name="tiny", device="cuda"))
    ms = MemoryStream(bb, MemoryConfig(policy="rekv", window_blocks=2, device_budget=256 * 2**20))
    for p in _patches(6):
        ms.ingest(p)
    host = [ms.store.host.get(b) for b in ms.store.host.ids()]
    assert host and all(t.is_pinned() for t in host)


def test_gpu_index_scores_match_cpu():
    from longwatch.memory.retrieval import FaissIndex, TorchIndex

    q = torch.randn(4, 32)
    rows = {i: torch.randn(4, 32) for i in range(50)}
    results = []
    for idx in (TorchIndex(4, 32, "cuda"), FaissIndex(4, 32, use_gpu=True), TorchIndex(4, 32, "cpu")):
        for i, r in rows.items():
            idx.add(i, r)
        ids, s = idx.scores(q)
        order = np.argsort(ids)
        results.append(s[:, order])
    assert torch.allclose(results[0], results[2], atol=1e-3) and torch.allclose(results[1], results[2], atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None, reason="needs the flash-attn package")
def test_flash_attention_answers_like_sdpa():
    """attn flash_attention_2 is allowed by name only where it gives SDPA's greedy answers on a stream
    whose positions are not consecutive (retrieved blocks, a re-base)."""
    answers = []
    for attn in ("sdpa", "flash_attention_2"):
        bb = Backbone.load(ModelConfig(name="tiny", device="cuda", attn=attn))
        ms = MemoryStream(bb, MemoryConfig(policy="rekv", window_blocks=2, retrieve_blocks=4,
                                           device_budget=256 * 2**20, rebase_limit=4096))
        for i, p in enumerate(_patches(12)):
            if i == 6:
                ms.rebase(3000)
            ms.ingest(p)
        answers.append(ms.ask("What happened at 0:03?", keep_logits=True, sampling=Sampling(max_new_tokens=8)))
    assert answers[0].token_ids == answers[1].token_ids
    assert torch.nn.functional.cosine_similarity(answers[0].logits[0], answers[1].logits[0], dim=0) > 0.99
