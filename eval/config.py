"""The run configuration: a YAML file (default: the packaged configs/default.yaml) plus dotted overrides.

Benches, the evaluator and the lmms-eval adapter load `RunConfig` (model, ingest, memory) here;
app/config.py extends it with the `ui` section and loads the same file through `load_config`.
The default file is package data, read with importlib.resources, so an installed wheel finds it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from longwatch.backbone.config import ModelConfig
from longwatch.backbone.presets import NATIVE_FRAME_SIZE
from longwatch.ingest.config import IngestConfig
from longwatch.memory.config import MemoryConfig
from longwatch.memory.schema import ConfigError, build

T = TypeVar("T")

DEFAULT_CONFIG = "default.yaml"
"""The commented default configuration, a resource of the package longwatch.configs."""

APP_SECTIONS = ("ui", "serve")
"""Top-level sections the app layer validates (app/config.py); `RunConfig` passes over them."""


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)


def default_config_text() -> str:
    """The packaged configs/default.yaml, every key commented."""
    return resources.files("longwatch.configs").joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def read_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The YAML at `path` (default: the packaged file) as a dict, with dotted `overrides` applied; not validated."""
    if path:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path} (give --config an existing YAML file, "
                              "or leave --config out to use the packaged defaults)")
        text, name = path.read_text(encoding="utf-8"), str(path)
    else:
        text, name = default_config_text(), f"longwatch/configs/{DEFAULT_CONFIG}"
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {name} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {name}: top level must be a mapping")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    native = NATIVE_FRAME_SIZE.get(str((data.get("model") or {}).get("name")))
    if native and (overrides or {}).get("ingest.frame_size") is None:
        _set_dotted(data, "ingest.frame_size", native)  # the size the checkpoint was trained at
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                schema: type[T] = RunConfig) -> T:
    """Load `path`, apply dotted `overrides` ({"memory.policy": "rekv"}) and validate into `schema`.

    Raises ConfigError naming the bad key or value; a missing file or broken YAML is a ConfigError too.
    Sections in APP_SECTIONS are skipped unless `schema` has them.
    """
    data = read_config(path, overrides)
    known = {f.name for f in dataclasses.fields(schema)}
    return build(schema, {k: v for k, v in data.items() if k in known or k not in APP_SECTIONS})
