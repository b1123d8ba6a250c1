"""The `longwatch` console script: one command, many verbs, each in app/commands/<verb>.py."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from typing import Any

from longwatch.app.schema import ConfigError

# verb -> module in app.commands; each module has add_parser(subparsers) and run(args) -> int.
COMMANDS = {
    "ask": "ask",
    "demo": "demo",
    "ui": "ui",
    "ingest": "ingest",
    "bench": "bench",
    "eval": "eval_cmd",
    "make-bench": "make_bench",
}


class UserError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""

    user_facing = True


def add_config_flags(p: argparse.ArgumentParser, *, model: bool = True, ingest: bool = True,
                     memory: bool = True) -> None:
    """Flags shared by the verbs; each overrides the matching key of the YAML config."""
    p.add_argument("--config", help="YAML config file (default: configs/default.yaml)")
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
        g.add_argument("--seed", dest="model.seed", type=int, help="seed for preset weights and sampling")
    if ingest:
        g = p.add_argument_group("ingest")
        g.add_argument("--fps", dest="ingest.fps", type=float, help="frames sampled per second (default 2)")
        g.add_argument("--frame-size", dest="ingest.frame_size", metavar="S|HxW",
                       help="per-frame size: S (SxS pixel budget, aspect kept) or HxW; multiples of 32")
        g.add_argument("--reader", dest="ingest.reader", help="file reader: auto, pyav, decord, opencv")
    if memory:
        g = p.add_argument_group("memory")
        g.add_argument("--policy", dest="memory.policy",
                       help="full, sliding, rekv, infinipot, streammem")
        g.add_argument("--device-budget", dest="memory.device_budget", metavar="B", help="e.g. 512MB, 2GiB")
        g.add_argument("--host-budget", dest="memory.host_budget", metavar="B", help="e.g. 8GiB; 0 disables")
        g.add_argument("--disk-budget", dest="memory.disk_budget", metavar="B", help="e.g. 100GB; 0 disables")
        g.add_argument("--window", dest="memory.window_blocks", type=int, metavar="W",
                       help="recent temporal patches attended when encoding and answering")
        g.add_argument("--retrieve", dest="memory.retrieve_blocks", type=int, metavar="K",
                       help="blocks retrieved per question")


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None):
    """Load the YAML config and apply every dotted flag given on the command line."""
    from longwatch.app.config import load_config

    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    overrides.update(extra or {})
    return load_config(getattr(args, "config", None), overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longwatch",
        description="Streaming long-video assistant with bounded memory on Qwen3-VL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for verb, module in COMMANDS.items():
        name = f"longwatch.app.commands.{module}"
        if importlib.util.find_spec(name) is None:  # verb not built in this checkout
            continue
        importlib.import_module(name).add_parser(sub, verb)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("longwatch: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, UserError) as e:
        print(f"longwatch: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # errors from the layers mark themselves user_facing
        if getattr(e, "user_facing", False) and not os.environ.get("LONGWATCH_DEBUG"):
            print(f"longwatch: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
