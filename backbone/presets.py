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

PRESETS = ("tiny", *_REAL)


def is_random_preset(name: str) -> bool:
    """True for the presets with random weights (tiny, random-*): their answers carry no meaning."""
    return name == "tiny" or name in _REAL


def preset_config(name: str):
    """A `Qwen3VLConfig` for preset `name` (tiny, random-2b, random-4b, random-8b)."""
    from transformers import Qwen3VLConfig

    spec = _TINY if name == "tiny" else _REAL.get(name)
    if spec is None:
        raise KeyError(name)
    head_dim = spec["text"]["head_dim"]
    mrope = spec.get("mrope_section", [24, 20, 20])
    assert sum(mrope) == head_dim // 2, "mrope sections must cover head_dim / 2 rotary pairs"
    text = dict(
        vocab_size=151936,
        max_position_embeddings=262144,
        rms_norm_eps=1e-6,
        tie_word_embeddings=spec["tie"],
        rope_parameters=dict(rope_type="default", rope_theta=5_000_000.0, mrope_section=mrope,
                             mrope_interleaved=True),
        **spec["text"],
    )
    vision = dict(patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=2304,
                  in_channels=3, hidden_act="gelu_pytorch_tanh", **spec["vision"])
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=spec["tie"])
