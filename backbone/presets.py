"""Built-in Qwen3-VL configurations that need no download: `tiny` for tests, `random-*` for speed work."""

from __future__ import annotations

from typing import Any

# The real architectures (from the published config.json files, see DESIGN.md).
_REAL: dict[str, dict[str, Any]] = {
    "random-2b": dict(
        text=dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                  num_key_value_heads=8, head_dim=128),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2048,
                    deepstack_visual_indexes=[5, 11, 17]),
        tie=True,
    ),
    "random-4b": dict(
        text=dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560,
                    deepstack_visual_indexes=[5, 11, 17]),
        tie=True,
    ),
    "random-8b": dict(
        text=dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36, num_attention_heads=32,
                  num_key_value_heads=8, head_dim=128),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24]),
        tie=False,
    ),
}

# tiny: ~10M parameters (mostly the 151,936-token embedding), 4 LLM layers so all three DeepStack
# injections (after layers 0, 1, 2) land inside the model, interleaved M-RoPE like the real models.
_TINY = dict(
    text=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, head_dim=32),
    vision=dict(depth=3, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=64,
                deepstack_visual_indexes=[0, 1, 2]),
    tie=True,
    mrope_section=[6, 5, 5],
)

# needle-tiny: the architecture of the trained checkpoint (eval/train.py; weights shipped in
# backbone/weights/needle-tiny.safetensors). Same family and layout as the real models, 4 text layers so
# DeepStack lands after layers 0-2, 128x128 frames (16 vision tokens per patch).
_NEEDLE_TINY = dict(
    text=dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=6,
              num_key_value_heads=2, head_dim=32),
    vision=dict(depth=4, hidden_size=192, intermediate_size=512, num_heads=6, out_hidden_size=192,
                deepstack_visual_indexes=[1, 2, 3], num_position_embeddings=1024),
    tie=True,
    mrope_section=[6, 5, 5],
)
_SPECS = {"tiny": _TINY, **_REAL, "needle-tiny": _NEEDLE_TINY}
TRAINED_PRESETS = ("needle-tiny",)
"""Presets with trained weights shipped in the package (loaded as a checkpoint folder built on first use)."""
NATIVE_FRAME_SIZE = {"needle-tiny": "128"}
"""The per-frame size a trained preset was trained at, used unless --frame-size says otherwise
(`longwatch.backbone.shipped.native_frame_size` finds it for a trained file or its built folder too)."""
PRESETS = ("tiny", *_REAL)
"""Presets with seeded random weights, built in memory."""


def is_random_preset(name: str) -> bool:
    """True for the presets with random weights (tiny, random-*): their answers carry no meaning."""
    return name == "tiny" or name in _REAL


def preset_config(name: str, vocab_size: int = 151936, token_ids: dict[str, int] | None = None):
    """A `Qwen3VLConfig` for preset `name` (tiny, random-2b/4b/8b, needle-tiny).

    `vocab_size` and `token_ids` (image_token_id, video_token_id, vision_start_token_id, ...) override the
    Qwen3 tokenizer's for training with a reduced vocabulary (eval/train.py).
    """
    from transformers import Qwen3VLConfig

    spec = _SPECS.get(name)
    if spec is None:
        raise KeyError(name)
    head_dim = spec["text"]["head_dim"]
    mrope = spec.get("mrope_section", [24, 20, 20])
    assert sum(mrope) == head_dim // 2, "mrope sections must cover head_dim / 2 rotary pairs"
    text = dict(
        vocab_size=vocab_size,
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        tie_word_embeddings=spec["tie"],
        rope_parameters=dict(rope_type="default", rope_theta=5_000_000.0, mrope_section=mrope,
                             mrope_interleaved=True),
        **spec["text"],
    )
    vision = dict(patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  in_channels=3, hidden_act="gelu_pytorch_tanh")
    vision.update(spec["vision"])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=spec["tie"], **(token_ids or {}))
