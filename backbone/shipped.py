"""The shipped needle-tiny checkpoint: one compact file in the package, rebuilt into a standard checkpoint
folder (config.json, safetensors, Qwen3 tokenizer, generation_config.json) in the user's cache on first use.

Compact format (safetensors, fp16): every weight of the model except the token embedding, plus
`longwatch.embed_rows` [U, hidden] and `longwatch.token_ids` [U], the embedding rows of the U Qwen3 tokens
the model was trained on. The rebuilt embedding holds those rows and zeros elsewhere, exactly as in
training (eval/train.py), so the rebuilt model's logits are the trained model's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import torch

FORMAT = "longwatch-compact-1"
EMBED_KEY = "model.language_model.embed_tokens.weight"
ROWS, IDS = "longwatch.embed_rows", "longwatch.token_ids"
MAX_BYTES = 16 * 2**20
"""The repository's limit for the one shipped weights file."""


class CheckpointError(RuntimeError):
    """A shipped or built checkpoint is unusable; the message names the file or folder and the fix."""

    user_facing = True


def shipped_file(name: str) -> Path:
    """The compact file of trained preset `name`: the one shipped inside the package, else the one
    `longwatch train` installed in the user's cache (cache_root()/weights/)."""
    packaged = Path(str(resources.files("longwatch.backbone") / "weights" / f"{name}.safetensors"))
    return packaged if packaged.is_file() else trained_file(name)


def trained_file(name: str) -> Path:
    """Where `longwatch train` installs the compact file it exported."""
    return cache_root() / "weights" / f"{name}.safetensors"


def is_available(name: str) -> bool:
    return shipped_file(name).is_file()


def cache_root() -> Path:
    """$LONGWATCH_CACHE, else $XDG_CACHE_HOME/longwatch, else ~/.cache/longwatch."""
    if os.environ.get("LONGWATCH_CACHE"):
        return Path(os.environ["LONGWATCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "longwatch"


def write_compact(state: dict[str, torch.Tensor], token_ids: torch.Tensor, preset: str, path: Path,
                  meta: dict | None = None) -> Path:
    """Write the compact file from a reduced-vocabulary state dict whose embedding rows follow `token_ids`
    (extra rows past len(token_ids), such as a frozen zero row, are dropped)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()
               if k != EMBED_KEY and not k.startswith("lm_head.")}
    tensors[ROWS] = state[EMBED_KEY][: len(token_ids)].detach().to(torch.float16).contiguous()
    tensors[IDS] = token_ids.to(torch.int64).contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": FORMAT, "preset": preset, "meta": json.dumps(meta or {})})
    os.replace(tmp, path)
    if path.stat().st_size > MAX_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size / 2**20:.1f} MiB is over the 16 MiB limit")
    return path


def read_compact(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
    except FileNotFoundError:
        raise CheckpointError(f"{path}: the shipped checkpoint file is missing; reinstall longwatch") from None
    except Exception as e:  # safetensors raises its own error types for a truncated or corrupt file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]}); "
                              "reinstall longwatch or retrain with `longwatch train`") from None
    if meta.get("format") != FORMAT or ROWS not in tensors or IDS not in tensors:
        raise CheckpointError(f"{path}: not a {FORMAT} file (format {meta.get('format')!r})")
    return tensors, meta


def average_compact(paths: list[Path], out: Path) -> Path:
    """Write to `out` the element-wise mean of the weights of compact files `paths` (a model soup of runs
    fine-tuned from one another); their presets, vocabularies and tensor shapes must match. The header's meta
    names each file averaged (name, sha256 prefix, its own steps and seed)."""
    from safetensors.torch import save_file

    if len(paths) < 2:
        raise CheckpointError(f"{', '.join(map(str, paths)) or 'no file'}: averaging needs at least two files")
    read = [(p, *read_compact(p)) for p in paths]
    first, tensors0, meta0 = read[0]
    for path, tensors, meta in read[1:]:
        if meta.get("preset") != meta0.get("preset"):
            raise CheckpointError(f"{path}: weights for preset {meta.get('preset')!r}, {first} for "
                                  f"{meta0.get('preset')!r}; only files of one preset average")
        if tensors.keys() != tensors0.keys() or any(tensors[k].shape != tensors0[k].shape for k in tensors0):
            raise CheckpointError(f"{path}: its tensors differ from {first}'s in name or shape")
        if not torch.equal(tensors[IDS], tensors0[IDS]):
            raise CheckpointError(f"{path}: trained on other tokens than {first} (different vocabulary rows); "
                                  "only runs fine-tuned from one another average")
    mean = {k: (tensors0[k] if k == IDS else
                torch.stack([t[k].float() for _, t, _ in read]).mean(0).to(torch.float16).contiguous())
            for k in tensors0}
    parts = []
    for path, _, meta in read:
        own = json.loads(meta.get("meta", "{}") or "{}")
        parts.append({"file": str(path), "sha256": _digest(path), "steps": own.get("steps"), "seed": own.get("seed")})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    save_file(mean, str(tmp), metadata={"format": FORMAT, "preset": meta0["preset"],
                                         "meta": json.dumps({"average_of": parts})})
    os.replace(tmp, out)
    return out


def compact_preset(path: Path) -> str:
    """The trained preset a compact file holds weights for (its header only), or CheckpointError naming the file:
    unreadable, not a compact file, or of a preset this version does not know."""
    from safetensors import safe_open

    from longwatch.backbone.presets import TRAINED_PRESETS

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except Exception as e:  # safetensors' own error types for a truncated or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {str(e)[:120]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file (a longwatch train export); a Hugging Face checkpoint "
                              "loads from its folder")
    preset = meta.get("preset", "")
    if preset not in TRAINED_PRESETS:
        raise CheckpointError(f"{path}: weights for preset {preset!r}, which this version cannot build "
                              f"(it knows {', '.join(TRAINED_PRESETS)})")
    return preset


def native_frame_size(model: str) -> str | None:
    """The frame size the weights `model` names were trained at: a trained preset's name, a compact file
    `longwatch train` exported, or a folder built from one (its longwatch.json). None for anything else (a hub
    checkpoint, a random preset) and for an unreadable file, whose problem the loader then names."""
    from longwatch.backbone.presets import NATIVE_FRAME_SIZE

    if model in NATIVE_FRAME_SIZE:
        return NATIVE_FRAME_SIZE[model]
    path = Path(model).expanduser()
    try:
        if path.is_file():
            return NATIVE_FRAME_SIZE.get(compact_preset(path))
        marker = path / "longwatch.json"
        if marker.is_file():
            return NATIVE_FRAME_SIZE.get(str(json.loads(marker.read_text()).get("preset", "")))
    except (CheckpointError, OSError, ValueError, AttributeError):
        return None
    return None


def full_state(tensors: dict[str, torch.Tensor], vocab_size: int) -> dict[str, torch.Tensor]:
    """The full-vocabulary state dict: the compact weights plus the embedding with zeros off the trained rows."""
    rows, ids = tensors[ROWS], tensors[IDS]
    if ids.numel() and (int(ids.max()) >= vocab_size or int(ids.min()) < 0):
        raise CheckpointError(f"token ids outside the vocabulary of {vocab_size}")
    embed = torch.zeros(vocab_size, rows.shape[1], dtype=rows.dtype)
    embed[ids] = rows
    state = {k: v for k, v in tensors.items() if k not in (ROWS, IDS)}
    state[EMBED_KEY] = embed
    return state


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def build_folder(name: str, compact: Path | None = None, root: Path | None = None) -> Path:
    """The checkpoint folder of trained preset `name`, built from its compact file if not yet in the cache.

    Built in a temporary folder beside the target and renamed into place, so an interrupted or failed
    build never leaves a half-written checkpoint behind.
    """
    compact = compact or shipped_file(name)
    if not compact.is_file():
        raise CheckpointError(f"{compact}: no weights for preset {name!r} are shipped or installed; train them with "
                              f"`longwatch train --preset {name} --seed 0` (it installs them), or use another --model")
    root = root or cache_root()
    folder = root / f"{name}-{_digest(compact)}"
    if (folder / "config.json").is_file():
        return folder
    tensors, meta = read_compact(compact)
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    except OSError as e:
        raise CheckpointError(f"{root}: cannot write the checkpoint cache ({e.strerror}); set LONGWATCH_CACHE "
                              "to a writable folder") from None
    try:
        _write_folder(name, tensors, meta, tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").is_file():  # another process may have won the race
                raise
    except OSError as e:
        raise CheckpointError(f"{root}: cannot write the checkpoint cache ({e.strerror}); set LONGWATCH_CACHE "
                              "to a writable folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_folder(name: str, tensors: dict[str, torch.Tensor], meta: dict[str, str], out: Path) -> None:
    from transformers import AutoModelForImageTextToText, GenerationConfig

    from longwatch.backbone.presets import preset_config
    from longwatch.backbone.tokenizer import load_offline_tokenizer

    config = preset_config(name)
    state = full_state(tensors, config.text_config.vocab_size)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float16)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("lm_head.")]
    if missing or unexpected:
        raise CheckpointError(f"{name}: compact file does not match the architecture "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.tie_weights()
    model.save_pretrained(str(out))
    tok = load_offline_tokenizer()
    tok.save_pretrained(str(out))
    (out / "chat_template.jinja").write_text(tok.chat_template)
    stops = tok.convert_tokens_to_ids(["<|im_end|>", "<|endoftext|>"])
    GenerationConfig(do_sample=False, max_new_tokens=64, eos_token_id=stops, pad_token_id=stops[1]).save_pretrained(
        str(out))
    (out / "longwatch.json").write_text(json.dumps({"preset": name, "built_from": meta.get("meta", "{}")}))
