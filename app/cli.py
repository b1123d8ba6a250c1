"""The `longwatch` console script: one command, many verbs, each in app/commands/<verb>.py."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys
from typing import Any

from longwatch import __version__
from longwatch.app.config import Config
from longwatch.backbone.presets import is_random_preset
from longwatch.eval.flags import add_config_flags
from longwatch.eval.flags import config_from_args as run_config_from_args
from longwatch.memory.schema import ConfigError

__all__ = ["COMMANDS", "UserError", "Verbs", "add_config_flags", "config_from_args", "main", "warn_if_random_weights"]

# verb -> module in app.commands; each module has add_parser(subparsers) and run(args) -> int.
COMMANDS = {
    "ask": "ask",
    "demo": "demo",
    "ui": "ui",
    "serve": "serve",
    "ingest": "ingest",
    "bench": "bench",
    "eval": "eval_cmd",
    "make-bench": "make_bench",
    "train": "train",
    "average-weights": "average_weights",
    "config": "config_cmd",
}


class UserError(Exception):
    """A problem with the user's input; printed as one line, exit status 2."""

    user_facing = True


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Config:
    """The whole config (with the `ui` section): --config's YAML plus every dotted flag given, then `extra`."""
    return run_config_from_args(args, extra, Config)


def warn_if_random_weights(model_name: str) -> None:
    """One stderr line when a verb answers with a random-weights preset (tiny, random-*): its answers mean nothing."""
    if is_random_preset(model_name):
        print(f"longwatch: warning: model {model_name!r} has random weights, so its answers are meaningless; "
              "for real answers pass a checkpoint: --model Qwen/Qwen3-VL-2B-Instruct (or a local folder)",
              file=sys.stderr, flush=True)


def _verbose_flag() -> argparse.ArgumentParser:
    """-v as a parent of every verb, so it works after the verb too; SUPPRESS keeps a -v given before the verb."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress to stderr")
    return p


VERBOSE = _verbose_flag()


class Verbs:
    """The `COMMAND` subparsers, handed to each verb's add_parser: every parser made here also takes -v."""

    def __init__(self, action: Any) -> None:
        self.action = action

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        return self.action.add_parser(name, parents=[*kwargs.pop("parents", []), VERBOSE], **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="longwatch",
        description="Streaming long-video assistant with bounded memory on Qwen3-VL.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr (before or after the verb)")
    parser.add_argument("--version", action="version", version=f"longwatch {__version__}")
    sub = Verbs(parser.add_subparsers(dest="command", metavar="COMMAND"))
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
