"""Config loading: the shipped YAML validates, bad keys and values fail naming the key, overrides apply."""

from __future__ import annotations

import pytest

from longwatch.app.config import load_config
from longwatch.eval.config import RunConfig, default_config_text
from longwatch.eval.config import load_config as load_run_config
from longwatch.memory.schema import ConfigError, parse_bytes


def test_default_yaml_loads_and_every_key_is_commented():
    cfg = load_config()
    assert cfg.memory.device_budget == 2 * 2**30 and cfg.ingest.fps == 2.0
    for line in default_config_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":") and ":" in stripped:
            assert "#" in stripped, f"uncommented key: {line}"


@pytest.mark.parametrize("override,needle", [
    ({"memory.polcy": "rekv"}, "unknown config key 'memory.polcy'"),
    ({"memory.policy": "lru"}, "memory.policy: unknown policy 'lru'"),
    ({"memory.device_budget": "lots"}, "memory.device_budget: not a byte size"),
    ({"ingest.fps": 0}, "ingest.fps"),
    ({"ingest.frame_size": "big"}, "ingest.frame_size"),
    ({"model.dtype": "int4"}, "model.dtype"),
    ({"ui.server_port": 70000}, "ui.server_port"),
    ({"memory.window_blocks": "two"}, "memory.window_blocks: expected an integer"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(overrides=override)


def test_overrides_and_yaml_errors(tmp_path):
    cfg = load_config(overrides={"memory.policy": "sliding", "memory.host_budget": "64MB", "ingest.fps": "1"})
    assert cfg.memory.policy == "sliding" and cfg.memory.host_budget == 64_000_000 and cfg.ingest.fps == 1.0
    bad = tmp_path / "bad.yaml"
    bad.write_text("memory: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found: .*missing.yaml .*leave --config out"):
        load_config(tmp_path / "missing.yaml")
    typo = tmp_path / "typo.yaml"
    typo.write_text("modle:\n  name: tiny\n")
    with pytest.raises(ConfigError, match="unknown config key 'modle'"):
        load_config(typo)


def test_benches_load_the_same_file_without_the_app_section(tmp_path):
    # eval/ sits below app/: its RunConfig skips `ui`, which only the app's Config validates
    run = load_run_config(None, {"memory.policy": "sliding"})
    assert type(run) is RunConfig and run.memory.policy == "sliding" and not hasattr(run, "ui")
    assert load_config(None, {"memory.policy": "sliding"}).memory == run.memory
    typo = tmp_path / "typo.yaml"
    typo.write_text("memroy:\n  policy: rekv\n")
    with pytest.raises(ConfigError, match="unknown config key 'memroy'"):
        load_run_config(typo)


@pytest.mark.parametrize("text,value", [("64MB", 64_000_000), ("2GiB", 2 * 2**30), ("512M", 512 * 2**20),
                                        ("1024", 1024), (0, 0), ("1.5GB", 1_500_000_000)])
def test_parse_bytes(text, value):
    assert parse_bytes(text) == value


def test_parse_bytes_rejects_garbage():
    for bad in ("-1", "12XB", "", "GiB", True):
        with pytest.raises(ValueError):
            parse_bytes(bad)
