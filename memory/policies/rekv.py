"""rekv: offload blocks leaving the window to host/disk, retrieve the top-k per question (ReKV).

Selection = blocks covering the times the question names (always), then the best-scoring blocks by
question-query vs block-key similarity (memory/retrieval.py), excluding those already chosen.
"""

from __future__ import annotations

import torch

from longwatch.memory.policies.base import Exit, Policy, Selection
from longwatch.memory.retrieval import combine_layers, top_k


class ReKVPolicy(Policy):
    name = "rekv"
    on_exit = Exit.OFFLOAD
    retrieves = True

    def select(self, ids: list[int], scores: torch.Tensor, k: int, forced: list[int]) -> list[Selection]:
        """ids of indexed blocks, their per-layer scores [layers, N], k similarity picks, forced time picks."""
        chosen = [Selection(b, "time") for b in forced]
        if k > 0 and ids:
            combined = combine_layers(scores)
            chosen += [Selection(b, "retrieved", s) for b, s in top_k(ids, combined, k, exclude=set(forced))]
        return chosen
