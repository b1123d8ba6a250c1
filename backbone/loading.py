"""Load Qwen3-VL (hub id, local folder or offline preset) with its tokenizer and chat template."""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from longwatch.backbone.config import ModelConfig
from longwatch.backbone.presets import PRESETS, TRAINED_PRESETS, preset_config

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded; the message says which and why."""

    user_facing = True


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    name: str
    device: torch.device
    dtype: torch.dtype
    attn: str
    is_preset: bool


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def resolve_attn(attn: str, device: torch.device) -> str:
    """SDPA unless flash-attention-2 is asked for by name (it then needs the package and a CUDA device).

    Not FA2 by default: hiding cached slots (an upload encoded ahead of its player, `until`) needs a 4D
    mask that FA2 takes no mask for, and transformers' FA2 path may read the non-consecutive position ids
    of a streamed cache (retrieved blocks, re-based windows) as packed sequences. The GPU run
    (`pytest -m gpu`, tests/test_gpu.py) compares FA2's greedy answers with SDPA's where flash-attn is installed.
    """
    if attn == "auto":
        return "sdpa"
    if attn == "flash_attention_2":
        if importlib.util.find_spec("flash_attn") is None or device.type != "cuda":
            raise ModelLoadError("attn flash_attention_2 needs the flash-attn package and a CUDA device")
        log.warning("attn flash_attention_2: questions that hide cached slots (until=, an upload ahead of its "
                    "player) are refused; use attn sdpa for those")
    return attn


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def _load_chat_template(tokenizer, source: str) -> None:
    """Real checkpoints carry their template in chat_template.jinja/.json or the processor config."""
    if getattr(tokenizer, "chat_template", None):
        return
    try:
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(source)
        if getattr(proc, "chat_template", None):
            tokenizer.chat_template = proc.chat_template
            return
    except Exception as e:  # the video processor needs torchvision, absent on CPU machines
        log.info("AutoProcessor unavailable for %s (%s); reading the template file", source, e)
    folder = Path(source)
    for fname in ("chat_template.jinja", "chat_template.json"):
        path = folder / fname
        if not path.is_file() and not folder.is_dir():
            try:
                from huggingface_hub import hf_hub_download

                path = Path(hf_hub_download(source, fname))
            except Exception:
                continue
        if path.is_file():
            text = path.read_text()
            if fname.endswith(".json"):
                import json

                text = json.loads(text)["chat_template"]
            tokenizer.chat_template = text
            return
    raise ModelLoadError(f"{source}: no chat template found (chat_template.jinja, chat_template.json or processor)")


def load_model(cfg: ModelConfig) -> LoadedModel:
    """Load the model named by `cfg.name`: a preset, a local folder, a Hugging Face hub id, or a compact file that
    `longwatch train` exported (built into a checkpoint folder in the cache, like the shipped one).

    Presets build seeded random weights directly in the target dtype and device (random-8b would not
    fit in host RAM as float32). Checkpoints load with their own tokenizer and chat template.
    """
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    attn = resolve_attn(cfg.attn, device)
    name = cfg.name
    t0 = time.perf_counter()
    from transformers import AutoModelForImageTextToText

    if name in PRESETS:
        from longwatch.backbone.tokenizer import load_offline_tokenizer

        config = preset_config(name)
        torch.manual_seed(cfg.seed)
        with torch.device(device):
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype, attn_implementation=attn)
        tokenizer = load_offline_tokenizer()
        is_preset = True
    else:
        path = Path(name).expanduser()
        if name in TRAINED_PRESETS:  # shipped weights: built into a checkpoint folder once, then loaded as one
            from longwatch.backbone.shipped import build_folder

            path = build_folder(name)
        elif path.is_file() and path.suffix == ".safetensors":  # a `longwatch train` export: built the same way
            from longwatch.backbone.shipped import build_folder, compact_preset

            path = build_folder(compact_preset(path), compact=path)
        if path.exists():
            if not path.is_dir() or not (path / "config.json").is_file():
                raise ModelLoadError(f"{name}: not a checkpoint folder (no config.json); use a preset "
                                     f"({', '.join(PRESETS + TRAINED_PRESETS)}), a hub id or a folder with a "
                                     "Qwen3-VL checkpoint")
            source = str(path)
        elif _looks_like_hub_id(name):
            source = name
        else:
            raise ModelLoadError(f"unknown model {name!r}: not a preset ({', '.join(PRESETS + TRAINED_PRESETS)}), "
                                 "not an existing folder, not a hub id like Qwen/Qwen3-VL-2B-Instruct")
        try:
            from transformers import AutoTokenizer

            # Several GPUs and device auto: let accelerate shard the large variants (32B, 235B-A22B).
            multi = cfg.device == "auto" and torch.cuda.device_count() > 1
            model = AutoModelForImageTextToText.from_pretrained(
                source, dtype=dtype, attn_implementation=attn, device_map="auto" if multi else {"": device}
            )
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"could not load {name!r}: {first}") from None
        if getattr(model.config, "model_type", "") not in ("qwen3_vl", "qwen3_vl_moe"):
            raise ModelLoadError(f"{name!r} is a {model.config.model_type!r} model, not Qwen3-VL")
        _load_chat_template(tokenizer, source)
        is_preset = False
    model.eval().requires_grad_(False)
    log.info("loaded %s on %s (%s, %s) in %.1fs", name, device, dtype, attn, time.perf_counter() - t0)
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, device=device, dtype=dtype, attn=attn,
                       is_preset=is_preset)
