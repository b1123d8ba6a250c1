"""`longwatch config show`: the effective configuration as YAML, each key commented with where its value came from."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from longwatch.app.cli import VERBOSE, UserError, add_config_flags
from longwatch.app.config import Config, resolve_config
from longwatch.app.schema import format_bytes
from longwatch.eval.config import Resolved, yaml_value

LAYERS = "default < configs/default.yaml < --config FILE < env LONGWATCH_<SECTION>__<KEY> < flags"
"""The layers, later ones winning (eval/config.py)."""


class _FlagNames:
    """Stands in for a parser while add_config_flags adds its flags, remembering the flag of each dotted dest."""

    def __init__(self, target: Any, names: dict[str, str]) -> None:
        self.target, self.names = target, names

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = self.target.add_argument(*args, **kwargs)
        if "." in action.dest and action.option_strings:
            self.names[action.dest] = f"flag {action.option_strings[0]}"
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> _FlagNames:
        return _FlagNames(self.target.add_argument_group(*args, **kwargs), self.names)


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help="show the effective configuration and where each value came from",
                              description=f"Configuration tools. Layers, later ones winning: {LAYERS}.")
    actions = p.add_subparsers(dest="config_action", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show", parents=[VERBOSE], help="print the effective config as YAML, each key's source as a comment",
        description="Print the config every verb would run with, as YAML, each key followed by a comment naming "
                    f"where its value came from ({LAYERS}). The output is itself a valid --config file.")
    names: dict[str, str] = {}
    add_config_flags(_FlagNames(show, names))  # type: ignore[arg-type]
    show.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override any dotted key, e.g. --set ui.server_port=8080 (the value is read as YAML)")
    show.set_defaults(run=run, flag_names=names)
    return p


def render(resolved: Resolved[Config]) -> str:
    """The config as YAML, every key commented with its source (byte sizes also in binary units)."""
    lines = [f"# the effective config; after each key, where its value came from ({LAYERS})"]
    for section in dataclasses.fields(resolved.config):
        obj = getattr(resolved.config, section.name)
        rows = []
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            # a one-item flow list, unwrapped: "rekv", "'448'", "[rtsp, http]", with YAML's own quoting
            flow = yaml.safe_dump([list(value) if isinstance(value, tuple) else value], default_flow_style=True,
                                  width=1 << 20).strip()[1:-1]
            where = resolved.source(f"{section.name}.{f.name}")
            rows.append((f"  {f.name}: {flow}", f"{where} ({format_bytes(value)})" if f.metadata.get("bytes") else where))
        width = max(len(text) for text, _ in rows)
        lines += [f"{section.name}:", *(f"{text:<{width}}  # {where}" for text, where in rows)]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    labels = {k: args.flag_names.get(k, "flag") for k in overrides}
    for item in args.set:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set memory.policy=sliding")
        overrides[key], labels[key] = yaml_value(text), f"flag --set {key}"
    print(render(resolve_config(args.config, overrides, labels=labels)), end="")
    return 0
