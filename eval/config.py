"""The run configuration, layered: dataclass defaults < configs/default.yaml < --config FILE < LONGWATCH_* < flags.

Benches, the evaluator and the lmms-eval adapter load `RunConfig` (model, ingest, memory) here;
app/config.py extends it with the `ui` and `serve` sections and loads the same layers through `load_config`.
The default file is package data, read with importlib.resources, so an installed wheel finds it.
Environment variables name a key as LONGWATCH_<SECTION>__<KEY> (two underscores between section and key:
LONGWATCH_MEMORY__DEVICE_BUDGET=4GiB), their values read as YAML. `resolve_config` also says where each value
came from (`longwatch config show`); eval/validate.py turns the merged dict into the dataclasses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from longwatch.backbone.config import ModelConfig
from longwatch.backbone.presets import NATIVE_FRAME_SIZE
from longwatch.eval.validate import validate
from longwatch.ingest.config import IngestConfig
from longwatch.memory.config import CAPTIONING, MemoryConfig
from longwatch.memory.schema import ConfigError, format_bytes

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CONFIG = "default.yaml"
"""The commented default configuration, a resource of the package longwatch.configs."""
DEFAULT_SOURCE = f"configs/{DEFAULT_CONFIG}"
"""How `resolve_config` names a value that came from the packaged file."""

APP_SECTIONS = ("ui", "serve")
"""Top-level sections the app layer validates (app/config.py); `RunConfig` passes over them."""

ENV_PREFIX = "LONGWATCH_"
ENV_NOT_CONFIG = ("LONGWATCH_READER", "LONGWATCH_INDEX", "LONGWATCH_API_KEYS", "LONGWATCH_AUTH", "LONGWATCH_CACHE",
                  "LONGWATCH_DEBUG", "LONGWATCH_TEST_ARTIFACTS", "LONGWATCH_UPDATE_DOCS")
"""LONGWATCH_ variables the code reads itself; they have no double underscore, so they are never config keys."""

_warned: set[str] = set()


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)

    def __post_init__(self) -> None:
        if self.memory.policy == "videorag":
            sides = [int(v) for v in str(self.ingest.frame_size).split("x")]
            raw = 2 * 3 * (sides[0] * sides[-1] + 32 * (sides[0] + sides[-1]))  # two RGB frames, sides snapped up to 32
            if self.memory.disk_budget < raw:
                raise ConfigError(f"memory.disk_budget: videorag keeps each patch's two frames on disk (lossless; "
                                  f"{format_bytes(raw)} raw at ingest.frame_size {self.ingest.frame_size}); "
                                  f"{format_bytes(self.memory.disk_budget)} cannot hold one, give at least {raw}")
        patch_s = 2 / self.ingest.fps  # two frames make one temporal patch
        gap = self.memory.caption_interval
        if self.memory.policy in CAPTIONING and 0 < gap < patch_s - 1e-9:
            raise ConfigError(f"memory.caption_interval: {gap:g} s is shorter than a temporal patch ({patch_s:g} s: "
                              f"2 frames at ingest.fps {self.ingest.fps:g}), and captions follow patches; use "
                              f"{patch_s:g} or more, or 0 for a caption after every patch")


@dataclass(frozen=True)
class Resolved(Generic[T]):
    """A validated config and, per dotted key, where its value came from."""

    config: T
    sources: dict[str, str]
    """'memory.policy' -> configs/default.yaml, the --config path, 'env LONGWATCH_...' or the flag; absent = default."""

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")


def default_config_text() -> str:
    """The packaged configs/default.yaml, every key commented."""
    return resources.files("longwatch.configs").joinpath(DEFAULT_CONFIG).read_text(encoding="utf-8")


def _read_yaml(text: str, name: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {name} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {name}: top level must be a mapping")
    return data


def _read_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (give --config an existing YAML file, "
                          "or leave --config out to use the packaged defaults)")
    return _read_yaml(path.read_text(encoding="utf-8"), str(path))


def yaml_value(text: str) -> Any:
    """A value given as text (a variable, --set) read as YAML: 8, true, null, [rtsp, http]; empty or not YAML: the text."""
    try:
        return yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        return text


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """The LONGWATCH_<SECTION>__<KEY> variables as {"section.key": (value, variable name)}.

    Variables the code reads itself (ENV_NOT_CONFIG) are skipped; any other LONGWATCH_ variable without the
    double underscore is ignored with one warning per process. Unknown keys of the right form are not dropped
    here: validation fails on them, naming the variable and the nearest key.
    """
    environ = os.environ if environ is None else environ
    found: dict[str, tuple[Any, str]] = {}
    for name, text in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_CONFIG:
            continue
        section, sep, key = name[len(ENV_PREFIX):].partition("__")
        if sep and section and key:
            found[f"{section.lower()}.{key.lower()}"] = (yaml_value(text), name)
        elif name not in _warned:
            _warned.add(name)
            log.warning("%s is not a config variable, ignored (config keys are LONGWATCH_<SECTION>__<KEY>, "
                        "e.g. LONGWATCH_MEMORY__POLICY=sliding)", name)
    return found


def _merge(data: dict[str, Any], sources: dict[str, str], layer: Mapping[str, Any], label: str | Mapping[str, str]) -> None:
    """Put `layer` ({section: {key: value}}) over `data`, recording each key's `label` (or label[dotted])."""
    for section, value in layer.items():
        if isinstance(value, dict):
            node = data.setdefault(section, {})
            if not isinstance(node, dict):
                continue  # an earlier layer's `memory: 5` stays, and validation names it
            for key, v in value.items():
                dotted = f"{section}.{key}"
                node[key] = v
                sources[dotted] = label if isinstance(label, str) else label[dotted]
                sources.setdefault(str(section), sources[dotted])  # where an unknown section came from
        else:
            data[section] = value
            sources[str(section)] = label if isinstance(label, str) else label[str(section)]


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"memory.policy": "rekv"} -> {"memory": {"policy": "rekv"}}; a key without a dot stays top level."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        section, sep, key = dotted.partition(".")
        if sep:
            node = out.setdefault(section, {})
            if isinstance(node, dict):
                node[key] = value
        else:
            out[section] = value
    return out


def _native_frame_size(model: str) -> str | None:
    """A trained preset's frame size, or that of a trained file or folder `model` names (read from its header)."""
    if model in NATIVE_FRAME_SIZE or not Path(model).expanduser().exists():
        return NATIVE_FRAME_SIZE.get(model)
    from longwatch.backbone.shipped import native_frame_size  # imports torch: only for a path

    return native_frame_size(model)


def resolve_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                   schema: type[T] = RunConfig, *, environ: Mapping[str, str] | None = None,
                   labels: Mapping[str, str] | None = None) -> Resolved[T]:
    """The layered config validated into `schema`, with where each value came from.

    Layers, later ones winning: the dataclass defaults, the packaged configs/default.yaml, the YAML at `path`,
    LONGWATCH_<SECTION>__<KEY> variables of `environ` (default os.environ), dotted `overrides` ({"memory.policy":
    "rekv"}, None values skipped; `labels` names their flags: {"memory.policy": "flag --policy"}). A preset with
    a native frame size sets ingest.frame_size unless a variable or an override does. Sections in APP_SECTIONS
    are skipped unless `schema` has them. Raises ConfigError naming the bad key, value, file or variable.
    """
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _merge(data, sources, _read_yaml(default_config_text(), f"longwatch/{DEFAULT_SOURCE}"), DEFAULT_SOURCE)
    if path:
        _merge(data, sources, _read_file(path), str(path))
    env = env_overrides(environ)
    _merge(data, sources, _nest({k: v for k, (v, _) in env.items()}), {k: f"env {n}" for k, (_, n) in env.items()})
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _merge(data, sources, _nest(given), {k: (labels or {}).get(k, "override") for k in given})
    model = data.get("model")
    native = _native_frame_size(str(model.get("name"))) if isinstance(model, dict) else None
    if native and "ingest.frame_size" not in env and "ingest.frame_size" not in given:
        _merge(data, sources, {"ingest": {"frame_size": native}}, f"the native frame size of {model['name']}")
    known = {f.name for f in dataclasses.fields(schema)}  # type: ignore[arg-type]
    data = {k: v for k, v in data.items() if k in known or k not in APP_SECTIONS}
    return Resolved(validate(schema, data, sources=sources), sources)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                schema: type[T] = RunConfig, *, environ: Mapping[str, str] | None = None) -> T:
    """Load the layers (`resolve_config`) and validate them into `schema`; dotted `overrides` win.

    Raises ConfigError naming the bad key or value; a missing file or broken YAML is a ConfigError too.
    """
    return resolve_config(path, overrides, schema, environ=environ).config
