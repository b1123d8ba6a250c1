"""The whole configuration: YAML file plus CLI overrides, validated into frozen dataclasses."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longwatch.app.schema import ConfigError, build
from longwatch.backbone.config import ModelConfig
from longwatch.ingest.config import IngestConfig
from longwatch.memory.config import MemoryConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclass(frozen=True)
class UIConfig:
    server_name: str = "127.0.0.1"
    """Address to bind; loopback unless told otherwise."""
    server_port: int = 7860
    """Port to listen on."""
    share: bool = False
    """Create a public Gradio share link."""
    max_sessions: int = 4
    """Concurrent browser sessions; one more gets a clear message."""
    idle_timeout_s: float = 900.0
    """Free a session's stream and memory after this long without activity."""
    max_upload_mb: int = 2048
    """Largest accepted upload."""
    allowed_schemes: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https")
    """URL schemes accepted for server-side ingest (never file:// or local paths)."""

    def __post_init__(self) -> None:
        if not 0 < self.server_port < 65536:
            raise ValueError(f"server_port: must be in 1..65535, got {self.server_port}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions: must be >= 1, got {self.max_sessions}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s: must be > 0, got {self.idle_timeout_s}")
        if self.max_upload_mb < 1:
            raise ValueError(f"max_upload_mb: must be >= 1, got {self.max_upload_mb}")
        bad = [s for s in self.allowed_schemes if s in ("file", "") or not s.isalnum()]
        if bad:
            raise ValueError(f"allowed_schemes: {bad[0]!r} may not be allowed")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    ui: UIConfig = field(default_factory=UIConfig)


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Load `path` (default configs/default.yaml), apply dotted `overrides` ({"memory.policy": "rekv"}), validate.

    Raises ConfigError naming the bad key or value; a missing file or broken YAML is a ConfigError too.
    """
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    return build(Config, data)
