"""The whole configuration: the run config of eval/config.py plus the app's sections (`ui`, `serve`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from longwatch.app.serve.config import ServeConfig
from longwatch.eval.config import Resolved, RunConfig
from longwatch.eval.config import resolve_config as resolve_run_config


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
    webcam_time_limit_s: float = 0.0
    """0: the browser webcam streams while its tab is open and recording. Else Gradio ends the webcam's stream
    event after this many seconds; the page starts a new one with its next frame, and if no frame follows
    the live panel says when and why the webcam stopped."""

    def __post_init__(self) -> None:
        if not 0 < self.server_port < 65536:
            raise ValueError(f"server_port: must be in 1..65535, got {self.server_port}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions: must be >= 1, got {self.max_sessions}")
        if self.idle_timeout_s <= 0:
            raise ValueError(f"idle_timeout_s: must be > 0, got {self.idle_timeout_s}")
        if self.webcam_time_limit_s < 0:
            raise ValueError(f"webcam_time_limit_s: must be >= 0 (0 = no limit), got {self.webcam_time_limit_s}")
        if self.max_upload_mb < 1:
            raise ValueError(f"max_upload_mb: must be >= 1, got {self.max_upload_mb}")
        bad = [s for s in self.allowed_schemes if s in ("file", "") or not s.isalnum()]
        if bad:
            raise ValueError(f"allowed_schemes: {bad[0]!r} may not be allowed")


@dataclass(frozen=True)
class Config(RunConfig):
    """The whole file: the run config (model, ingest, memory) and the app's `ui` and `serve` sections."""

    ui: UIConfig = field(default_factory=UIConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
                environ: Mapping[str, str] | None = None) -> Config:
    """Load the layers: configs/default.yaml, `path`, LONGWATCH_<SECTION>__<KEY> variables, dotted `overrides`.

    Raises ConfigError naming the bad key or value; a missing file or broken YAML is a ConfigError too.
    """
    return resolve_run_config(path, overrides, Config, environ=environ).config


def resolve_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
                   environ: Mapping[str, str] | None = None,
                   labels: Mapping[str, str] | None = None) -> Resolved[Config]:
    """The whole config with where each value came from (`longwatch config show`); see eval/config.py."""
    return resolve_run_config(path, overrides, Config, environ=environ, labels=labels)
