"""Retrieval index benchmark: faiss vs torch matmul, time to score every block for one question.

    longwatch bench retrieval --blocks 1000,10000,50000 --layers 36 --dim 1024 [--device cuda]

Sizes default to Qwen3-VL-8B (36 layers, 8 KV heads x 128 = 1024 dims per layer summary); 14,400
blocks is four hours at one temporal patch per second. `index: auto` uses the faster one here.
"""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--blocks", default="1000,10000,20000", help="indexed blocks, comma-separated")
    p.add_argument("--layers", type=int, default=36, help="layers (default 36, Qwen3-VL-8B)")
    p.add_argument("--dim", type=int, default=1024, help="summary dims per layer (default 1024)")
    p.add_argument("--queries", type=int, default=20, help="questions timed per size")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", metavar="DIR", help="results folder (default ./runs)")


def _time(index, queries) -> float:
    index.scores(queries[0])  # warm up
    t0 = time.perf_counter()
    for q in queries:
        index.scores(q)
    return (time.perf_counter() - t0) / len(queries)


def main(args: argparse.Namespace) -> int:
    import torch

    from longwatch.eval.environment import results_dir, save_result
    from longwatch.memory.retrieval import FaissIndex, TorchIndex

    out = results_dir(args.out)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in [int(b) for b in args.blocks.split(",")]:
        vecs = torch.randn(n, args.layers, args.dim, generator=gen)
        queries = [torch.randn(args.layers, args.dim, generator=gen) for _ in range(args.queries)]
        row = {"blocks": n}
        for name, make in (("torch", lambda: TorchIndex(args.layers, args.dim, device)),
                           ("faiss", lambda: FaissIndex(args.layers, args.dim, use_gpu=device.type == "cuda"))):
            idx = make()
            t0 = time.perf_counter()
            for i in range(n):
                idx.add(i, vecs[i])
            row[f"{name}_add_ms_per_block"] = (time.perf_counter() - t0) / n * 1000
            row[f"{name}_query_ms"] = _time(idx, queries) * 1000
            row[f"{name}_backend"] = idx.name
        rows.append(row)
        if not args.json:
            print(f"{n:6d} blocks: torch {row['torch_query_ms']:8.2f} ms/question, "
                  f"{row['faiss_backend']} {row['faiss_query_ms']:8.2f} ms/question "
                  f"(add {row['torch_add_ms_per_block']:.3f} / {row['faiss_add_ms_per_block']:.3f} ms per block)")
    path = save_result(f"retrieval_{device.type}", {"device": str(device), "layers": args.layers, "dim": args.dim,
                                                      "rows": rows}, out)
    if args.json:
        print(json.dumps({"rows": rows, "saved": str(path)}))
    else:
        print(f"saved {path}")
    return 0
