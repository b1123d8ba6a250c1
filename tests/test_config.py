"""Config loading: the shipped YAML validates, bad keys and values fail naming the key, the layers apply in order."""

from __future__ import annotations

import logging
import re

import pytest

from longwatch.app.cli import main
from longwatch.app.config import load_config, resolve_config
from longwatch.eval.config import RunConfig, default_config_text, env_overrides
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
    ({"memory.window_blocks": "two"}, "memory.window_blocks: input should be a valid integer"),
    ({"memory.window_blocks": True}, "memory.window_blocks: expected a number, got True"),
    ({"ui.allowed_schemes": ["rtsp", {}]}, "ui.allowed_schemes[1]: input should be a valid string"),
])
def test_bad_values_name_the_key(override, needle):
    with pytest.raises(ConfigError, match=re.escape(needle)):
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


def test_a_typo_names_the_nearest_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'memory.polcy'; did you mean 'memory.policy'\?"):
        load_config(overrides={"memory.polcy": "rekv"}, )
    with pytest.raises(ConfigError, match=r"'memory.server_port'; did you mean 'ui.server_port'\?"):
        load_config(overrides={"memory.server_port": 80})  # the key of another section
    typo = tmp_path / "typo.yaml"
    typo.write_text("modle:\n  name: tiny\n")
    with pytest.raises(ConfigError, match=rf"'modle'; did you mean 'model'\? \(from {typo}\)"):
        load_config(typo)
    with pytest.raises(ConfigError, match=r"unknown config key 'memory.zzzz' \(known: answer_batch_budget, answer_copy_budget, .*policy"):
        load_config(overrides={"memory.zzzz": 1})  # nothing near: the section's keys


def test_wrong_type_and_a_section_that_is_not_a_mapping(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("memory:\n  window_blocks: abc\n")
    with pytest.raises(ConfigError, match=rf"^memory.window_blocks: input should be a valid integer.*got 'abc' \(from {bad}\)$"):
        load_config(bad)
    bad.write_text("memory: 5\n")
    with pytest.raises(ConfigError, match=rf"^memory: must be a mapping of keys, got 5 \(from {bad}\)$"):
        load_config(bad)
    with pytest.raises(ConfigError, match=r"^ingest.fps: must be in \(0, 60\], got 100.0"):  # __post_init__'s message
        load_config(overrides={"ingest.fps": "100"})


def test_byte_sizes_keep_their_meaning(tmp_path):
    f = tmp_path / "b.yaml"
    f.write_text("memory:\n  device_budget: 64MB\n  host_budget: 2GiB\n  disk_budget: 512M\n")
    mem = load_config(f, environ={}).memory
    assert (mem.device_budget, mem.host_budget, mem.disk_budget) == (64_000_000, 2**31, 512 * 2**20)
    env = {"LONGWATCH_MEMORY__ANSWER_COPY_BUDGET": "1.5GB"}
    assert load_config(environ=env).memory.answer_copy_budget == 1_500_000_000


def test_environment_beats_the_file_and_loses_to_a_flag(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("memory:\n  policy: full\n  window_blocks: 4\ningest:\n  fps: 1.0\n")
    env = {"LONGWATCH_MEMORY__POLICY": "sliding", "LONGWATCH_MEMORY__WINDOW_BLOCKS": "6",
           "LONGWATCH_UI__ALLOWED_SCHEMES": "[rtsp, https]"}
    assert load_config(f, environ={}).memory.policy == "full"
    cfg = load_config(f, environ=env)
    assert (cfg.memory.policy, cfg.memory.window_blocks, cfg.ingest.fps) == ("sliding", 6, 1.0)
    assert cfg.ui.allowed_schemes == ("rtsp", "https")
    cfg = resolve_config(f, {"memory.window_blocks": 9}, environ=env).config
    assert (cfg.memory.policy, cfg.memory.window_blocks) == ("sliding", 9)
    # the benches' RunConfig passes over app sections from the environment, as from a file
    assert load_run_config(None, environ={"LONGWATCH_SERVE__PORT": "80"}).memory.policy == "rekv"


def test_only_double_underscore_variables_are_config_keys(monkeypatch, caplog):
    env = {"LONGWATCH_READER": "opencv", "LONGWATCH_API_KEYS": "k1,k2", "LONGWATCH_INDEX": "torch",
           "LONGWATCH_MEMORY_POLICY": "full", "LONGWATCH_INGEST__READER": "pyav", "PATH": "/bin"}
    with caplog.at_level(logging.WARNING, logger="longwatch.eval.config"):
        found = env_overrides(env)
        env_overrides(env)
    assert found == {"ingest.reader": ("pyav", "LONGWATCH_INGEST__READER")}
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "LONGWATCH_MEMORY_POLICY is not a config variable" in warned[0], warned
    assert load_config(environ=env).memory.policy == "rekv"
    with pytest.raises(ConfigError, match=r"'memory.polcy'; did you mean 'memory.policy'\? "
                                          r"\(from env LONGWATCH_MEMORY__POLCY\)"):
        load_config(environ={"LONGWATCH_MEMORY__POLCY": "full"})
    monkeypatch.setenv("LONGWATCH_MEMORY__RETRIEVE_BLOCKS", "3")  # os.environ is the default
    assert load_config().memory.retrieve_blocks == 3


def test_config_show_names_where_each_value_came_from(tmp_path, monkeypatch, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("ingest:\n  fps: 1.0\nmemory:\n  window_blocks: 4\n")
    monkeypatch.setenv("LONGWATCH_MEMORY__POLICY", "sliding")
    monkeypatch.setenv("LONGWATCH_MEMORY__WINDOW_BLOCKS", "6")
    assert main(["config", "show", "--config", str(f), "--window", "9", "--device-budget", "64MB",
                 "--set", "ui.server_port=8080"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split(":")[0].strip(): " ".join(ln.split()) for ln in out.splitlines() if "#" in ln and ":" in ln}
    assert lines["fps"] == f"fps: 1.0 # {f}"
    assert lines["policy"] == "policy: sliding # env LONGWATCH_MEMORY__POLICY"
    assert lines["window_blocks"] == "window_blocks: 9 # flag --window"
    assert lines["device_budget"] == "device_budget: 64000000 # flag --device-budget (61.0 MiB)"
    assert lines["server_port"] == "server_port: 8080 # flag --set ui.server_port"
    assert lines["name"] == "name: tiny # configs/default.yaml"
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    monkeypatch.delenv("LONGWATCH_MEMORY__POLICY")
    monkeypatch.delenv("LONGWATCH_MEMORY__WINDOW_BLOCKS")
    assert load_config(shown) == resolve_config(f, {"memory.window_blocks": 9, "memory.device_budget": "64MB",
                                                    "ui.server_port": 8080, "memory.policy": "sliding"}).config
    with pytest.raises(SystemExit) as e:
        main(["config", "show", "--help"])
    assert e.value.code == 0 and "where its value came from" in capsys.readouterr().out
