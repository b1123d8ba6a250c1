"""Config flags shared by the benches and the app's verbs: each flag overrides one dotted key of the YAML config."""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from longwatch.eval.config import RunConfig, load_config

T = TypeVar("T")


def add_config_flags(p: argparse.ArgumentParser, *, model: bool = True, ingest: bool = True,
                     memory: bool = True, policy_help: str = "full, sliding, rekv, infinipot, streammem, livevlm, streamchat") -> None:
    """Flags shared by the verbs; each overrides the matching key of the YAML config."""
    p.add_argument("--config", help="YAML config file (default: the packaged configs/default.yaml)")
    if model:
        g = p.add_argument_group("model")
        g.add_argument("--model", dest="model.name", metavar="M",
                       help="preset (tiny, random-2b, random-4b, random-8b), HF hub id or local folder")
        g.add_argument("--dtype", dest="model.dtype", help="auto, float32, bfloat16, float16")
        g.add_argument("--device", dest="model.device", help="auto, cpu, cuda, cuda:N")
        g.add_argument("--attn", dest="model.attn", help="auto, sdpa, eager, flash_attention_2")
        g.add_argument("--max-new-tokens", dest="model.max_new_tokens", type=int, help="answer length cap")
        g.add_argument("--temperature", dest="model.temperature", type=float, help="0 = greedy")
        g.add_argument("--top-p", dest="model.top_p", type=float, help="nucleus mass when sampling")
        g.add_argument("--top-k", dest="model.top_k", type=int, help="sample among the k most likely tokens (0 = off)")
        g.add_argument("--min-p", dest="model.min_p", type=float, help="drop tokens below min_p x the top one's probability")
        g.add_argument("--repetition-penalty", dest="model.repetition_penalty", type=float,
                       help="> 1 discourages repeating the answer's own tokens")
        g.add_argument("--seed", dest="model.seed", type=int, help="seed for preset weights and sampling")
    if ingest:
        g = p.add_argument_group("ingest")
        g.add_argument("--fps", dest="ingest.fps", type=float, help="frames sampled per second (default 2)")
        g.add_argument("--frame-size", dest="ingest.frame_size", metavar="S|HxW",
                       help="per-frame size: S (SxS pixel budget, aspect kept) or HxW; multiples of 32")
        g.add_argument("--min-pixels", dest="ingest.min_pixels", type=int, metavar="P",
                       help="per-frame pixel floor, as qwen-vl-utils (131072 = 128 tokens); overrides --frame-size")
        g.add_argument("--max-pixels", dest="ingest.max_pixels", type=int, metavar="P",
                       help="per-frame pixel cap, as qwen-vl-utils (at most 786432 = 768 tokens); "
                       "overrides --frame-size")
        g.add_argument("--total-pixels", dest="ingest.total_pixels", type=int, metavar="P",
                       help="a file's pixel budget, spread over its frames as qwen-vl-utils does; live streams: unused")
        g.add_argument("--reader", dest="ingest.reader", help="file reader: auto, pyav, decord, opencv, torchcodec")
    if memory:
        g = p.add_argument_group("memory")
        g.add_argument("--policy", dest="memory.policy", help=policy_help)
        g.add_argument("--device-budget", dest="memory.device_budget", metavar="B", help="e.g. 512MB, 2GiB")
        g.add_argument("--host-budget", dest="memory.host_budget", metavar="B", help="e.g. 8GiB; 0 disables")
        g.add_argument("--disk-budget", dest="memory.disk_budget", metavar="B", help="e.g. 100GB; 0 disables")
        g.add_argument("--window", dest="memory.window_blocks", type=int, metavar="W",
                       help="recent temporal patches attended when encoding and answering")
        g.add_argument("--retrieve", dest="memory.retrieve_blocks", type=int, metavar="K",
                       help="blocks retrieved per question")


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None,
                     schema: type[T] = RunConfig) -> T:
    """Load the YAML config (--config) and apply every dotted flag given on the command line, then `extra`."""
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    overrides.update(extra or {})
    return load_config(getattr(args, "config", None), overrides, schema)
