"""Model inputs: patch preprocessing without torchvision, M-RoPE positions, the prompt layout, RoPE shifts of keys,
and segments packed into one forward's inputs with the mask that hides cached slots.

Preprocessing matches `Qwen3VLVideoProcessor` on CPU: bicubic antialiased resize of uint8 frames (torchvision's
tensor resize calls the same `torch.nn.functional.interpolate` kernel), /255, mean 0.5, std 0.5,
then the processor's patch order. Unlike the processor, the size is fixed per stream up front
instead of spreading a pixel budget over the whole clip.

Positions follow `Qwen3VLModel.get_rope_index` (checked against it in tests), computed without the model's
stateful helpers: a text run advances a counter by its length on all three axes; a vision group of one
temporal patch with a merged grid of h x w tokens gets T = counter, H = counter + row, W = counter + col
and advances the counter by max(h, w). Positions here start at `start`, so chunks chain by passing the
previous `next_start`.

Prompt layout: prompt prefix, one segment per temporal patch with timestamp text, question suffix
(one temporal patch = one segment = one memory block):

    <|im_start|>user\n                                   prefix (from the chat template)
    <0.5 seconds><|vision_start|><|video_pad|>*n<|vision_end|>   patch 0
    <1.5 seconds><|vision_start|><|video_pad|>*n<|vision_end|>   patch 1
    ...
    QUESTION<|im_end|>\n<|im_start|>assistant\n         question suffix (from the chat template)

This is the layout of transformers 4.57's Qwen3-VL processor, the release Qwen3-VL shipped with:
the template's <|vision_start|><|video_pad|><|vision_end|> is replaced whole by the per-patch
groups. transformers 5.23 instead keeps an extra outer <|vision_start|> ... <|vision_end|> around
all patches. We use the 4.57 layout because every patch is then self-contained (a stream has no
"last patch" at which to close an outer bracket, and a block carries everything it needs to be
read on its own, timestamp included) and it matches the format the model was released with.

RoPE shifts, with the model's own rotary module: for text tokens T = H = W, and moving a block by D on all
three M-RoPE axes rotates every rotary pair by D * inv_freq regardless of how the pairs interleave T/H/W.
So a block can be re-based (or moved next to others) by rotating its cached keys; values carry no position.
Rotations at other (T, H, W) positions (a vision token's place in its grid) come from the module itself
(`mrope_cos_sin`), which alone knows how it interleaves the axes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from longwatch.ingest.patches import resize_frames

PATCH = 16
MERGE = 2
TEMPORAL = 2
FACTOR = PATCH * MERGE  # 32: height and width are multiples of this (ingest.patches.MULTIPLE, checked by a test)
PATCH_DIM = 3 * TEMPORAL * PATCH * PATCH  # 1536


def patchify(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [T, 3, H, W] (T even, H and W multiples of 32) -> float32 [T/2 * H/16 * W/16, 1536].

    Row order is Qwen3-VL's: temporal patch, then 2x2 merge groups in raster order, then the four
    16x16 patches of a group; each row is channel-major, then frame, then pixel row and column.
    """
    t, c, h, w = frames.shape
    if t % TEMPORAL or h % FACTOR or w % FACTOR or c != 3:
        raise ValueError(f"cannot patchify frames of shape {tuple(frames.shape)}")
    # /255, mean 0.5, std 0.5 computed as (x - 127.5) / 127.5, as the processor fuses them: bit-equal to its
    # float32 values, where (x/255 - 0.5)/0.5 is 1 ulp off in ~60% of them (tests/golden/preprocess_qwen3vl)
    x = frames.to(torch.float32).sub_(127.5).div_(127.5)
    gt, gh, gw = t // TEMPORAL, h // PATCH, w // PATCH
    # [gt, T2, C, gh/2, m, P, gw/2, m, P] -> [gt, gh/2, gw/2, m, m, C, T2, P, P]
    x = x.view(gt, TEMPORAL, c, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return x.reshape(gt * gh * gw, c * TEMPORAL * PATCH * PATCH)


def preprocess_patch(frames: np.ndarray | torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Two frames uint8 [2, H, W, 3] -> (pixel_values [gh*gw, 1536], grid_thw (1, gh, gw))."""
    x = resize_frames(frames, size)
    if x.shape[0] != TEMPORAL:
        raise ValueError(f"a temporal patch has {TEMPORAL} frames, got {x.shape[0]}")
    return patchify(x), (1, size[0] // PATCH, size[1] // PATCH)


def vision_tokens(size: tuple[int, int]) -> int:
    """LLM tokens of one temporal patch at `size` after the 2x2 merger (448x448 -> 196)."""
    return (size[0] // FACTOR) * (size[1] // FACTOR)


TEXT, IMAGE, VIDEO = 0, 1, 2


def mrope_positions(token_types: torch.Tensor, grids: list[tuple[int, int]], start: int = 0) -> tuple[torch.Tensor, int]:
    """token_types [L] (0 text, 1 image, 2 video); grids: merged (h, w) per vision group, in order.

    Returns (positions [3, L] long, next_start).
    """
    types = token_types.tolist()
    out = torch.empty(3, len(types), dtype=torch.long)
    counter, i, g = start, 0, 0
    while i < len(types):
        j = i
        while j < len(types) and types[j] == types[i]:
            j += 1
        if types[i] == TEXT:
            out[:, i:j] = torch.arange(counter, counter + (j - i))
            counter += j - i
        else:
            if g >= len(grids):
                raise ValueError(f"more vision groups than the {len(grids)} grids given")
            h, w = grids[g]
            g += 1
            if j - i != h * w:
                raise ValueError(f"vision group of {j - i} tokens does not match grid {h}x{w}")
            rows = torch.arange(h).repeat_interleave(w)
            cols = torch.arange(w).repeat(h)
            out[0, i:j] = counter
            out[1, i:j] = counter + rows
            out[2, i:j] = counter + cols
            counter += max(h, w)
        i = j
    if g != len(grids):
        raise ValueError(f"{len(grids)} grids given for {g} vision groups")
    return out, counter


VIDEO_PLACEHOLDER = "<|vision_start|><|video_pad|><|vision_end|>"
_QUESTION_MARK = "\x00LONGWATCH_QUESTION\x00"


@dataclass
class Segment:
    """A run of tokens fed to the model in one piece, positions relative to its own start.

    input_ids, token_types: [L]; positions: [3, L] starting at 0; span: position advance (max + 1).
    Patch segments also carry pixel_values [gh*gw, 1536], grid_thw (1, gh, gw) and their time span.
    """

    input_ids: torch.Tensor
    token_types: torch.Tensor
    positions: torch.Tensor
    span: int
    kind: str = "text"
    pixel_values: torch.Tensor | None = None
    grid_thw: tuple[int, int, int] | None = None
    t_start: float | None = None
    t_end: float | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.numel())


def timestamp_text(t: float) -> str:
    """Per-patch timestamp text: <t seconds> with one decimal, t = mean time of the patch's frames."""
    return f"<{t:.1f} seconds>"


class PromptLayout:
    """Turns a tokenizer and its chat template into prefix, patch and question segments."""

    def __init__(self, tokenizer, system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        ids = tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|im_end|>"])
        self.vision_start, self.vision_end, self.video_pad, self.im_end = ids
        messages = []
        if system_prompt:
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": [{"type": "video"}, {"type": "text", "text": _QUESTION_MARK}]})
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if VIDEO_PLACEHOLDER not in rendered or _QUESTION_MARK not in rendered:
            raise ValueError("chat template does not render a video item as "
                             f"{VIDEO_PLACEHOLDER!r}; cannot build the streaming layout")
        self.prefix_text, rest = rendered.split(VIDEO_PLACEHOLDER, 1)
        self.before_question, self.after_question = rest.split(_QUESTION_MARK, 1)
        self.stop_ids = sorted({self.im_end, *(
            [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])})

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def text_segment(self, text: str, kind: str = "text") -> Segment:
        ids = torch.tensor(self.encode_text(text), dtype=torch.long)
        types = torch.zeros_like(ids, dtype=torch.int32)
        pos, span = mrope_positions(types, [], 0)
        return Segment(ids, types, pos, span, kind=kind)

    def prefix(self) -> Segment:
        """The chat template's text before the video (e.g. '<|im_start|>user\\n')."""
        return self.text_segment(self.prefix_text, kind="prefix")

    def question(self, question: str) -> Segment:
        """The question and the assistant turn opener; transient, never stored in memory."""
        return self.text_segment(self.before_question + question + self.after_question, kind="question")

    def patch(self, pixel_values: torch.Tensor, grid_thw: tuple[int, int, int], t_start: float, t_end: float,
              t_mid: float | None = None) -> Segment:
        """One temporal patch: timestamp text, <|vision_start|>, n x <|video_pad|>, <|vision_end|>."""
        _, gh, gw = grid_thw
        h, w = gh // 2, gw // 2
        n = h * w
        stamp = self.encode_text(timestamp_text(t_mid if t_mid is not None else (t_start + t_end) / 2))
        ids = torch.tensor(stamp + [self.vision_start] + [self.video_pad] * n + [self.vision_end], dtype=torch.long)
        types = torch.full_like(ids, TEXT, dtype=torch.int32)
        types[len(stamp) + 1: len(stamp) + 1 + n] = VIDEO
        pos, span = mrope_positions(types, [(h, w)], 0)
        return Segment(ids, types, pos, span, kind="patch", pixel_values=pixel_values, grid_thw=grid_thw,
                       t_start=t_start, t_end=t_end)


def caption_prompt(notes: list[tuple[float, str]], question: str) -> str:
    """A question answered from text memory: timed notes (what was seen when), then the question.

    The layout the needle-tiny checkpoint was trained on and the text-memory policies ask with.
    """
    lines = "\n".join(f"{timestamp_text(t)} {text}" for t, text in notes)
    return f"Notes of what was seen, with times:\n{lines}\n\n{question}"


def shift_cos_sin(rotary_emb: torch.nn.Module, delta: int, dtype: torch.dtype, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [head_dim] of a shift by `delta` positions on all three axes, from the model's rotary module.

    Computed in float64 from the module's inverse frequencies; delta may be negative and large.
    """
    inv_freq = rotary_emb.inv_freq.to(torch.float64)
    scale = float(getattr(rotary_emb, "attention_scaling", 1.0))
    if abs(scale - 1.0) > 1e-12:
        raise ValueError("rotary attention scaling != 1 cannot be undone by a pure rotation")
    freqs = delta * inv_freq.cpu()
    emb = torch.cat([freqs, freqs])
    return emb.cos().to(device=device, dtype=torch.float32), emb.sin().to(device=device, dtype=torch.float32)


def mrope_cos_sin(rotary_emb: torch.nn.Module, positions: torch.Tensor, device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 cos/sin [B, L, head_dim] of M-RoPE `positions` [3 (T, H, W), B, L], from the model's rotary module
    (which interleaves the three axes over the rotary pairs its own way); `apply_shift` applies them.

    Computed in float32, as the model does: meant for small positions such as a vision token's offset within
    its block (large shifts shared by all three axes go through `shift_cos_sin`, in float64).
    """
    scale = float(getattr(rotary_emb, "attention_scaling", 1.0))
    if abs(scale - 1.0) > 1e-12:
        raise ValueError("rotary attention scaling != 1 cannot be undone by a pure rotation")
    cos, sin = rotary_emb(torch.empty(0, device=device, dtype=torch.float32), positions.to(device))
    return cos.float(), sin.float()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_shift(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """keys [..., head_dim] rotated by the shift whose cos/sin come from `shift_cos_sin` (computed in fp32)."""
    k = keys.to(torch.float32)
    return (k * cos + rotate_half(k) * sin).to(keys.dtype)


def rope_text(rotary_emb: torch.nn.Module, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Apply RoPE to pre-RoPE text-token vectors x [tokens, heads, head_dim] at `positions` [tokens]
    (T = H = W for text), with the model's own rotary module; returns float32 [heads, tokens, head_dim]."""
    pos = positions.to(x.device).view(1, 1, -1).expand(3, 1, -1)
    cos, sin = rotary_emb(x, pos)
    cos, sin = cos[0].float()[:, None], sin[0].float()[:, None]  # [tokens, 1, head_dim]
    xf = x.float()
    return (xf * cos + rotate_half(xf) * sin).transpose(0, 1)


def pack(segments: list[Segment], offset: int) -> tuple[dict, torch.Tensor, int]:
    """Concatenate segments into model inputs with absolute positions starting at `offset`."""
    ids, types, pos, pixels, grids = [], [], [], [], []
    cur = offset
    for seg in segments:
        ids.append(seg.input_ids)
        types.append(seg.token_types)
        pos.append(seg.positions + cur)
        cur += seg.span
        if seg.pixel_values is not None:
            pixels.append(seg.pixel_values)
            grids.append(seg.grid_thw)
    positions = torch.cat(pos, dim=1)
    inputs = {
        "input_ids": torch.cat(ids)[None],
        "mm_token_type_ids": torch.cat(types)[None],
        "position_ids": positions[:, None, :],
    }
    if pixels:
        inputs["pixel_values_videos"] = torch.cat(pixels)
        inputs["video_grid_thw"] = torch.tensor(grids, dtype=torch.long)
    return inputs, positions, cur


def key_mask_4d(model: torch.nn.Module, visible: torch.Tensor, new: int) -> torch.Tensor:
    """A [1, 1, new, past + new] attention mask: cached slots where `visible` [past] is True, then causal.

    Boolean for SDPA (True = attend), additive float for eager; flash-attention-2 takes no such mask.
    transformers passes a 4D mask through unchanged, so this hides cached slots without touching the model.
    """
    impl = model.config._attn_implementation  # noqa: SLF001 - transformers exposes the backend only so
    if impl not in ("sdpa", "eager"):
        raise ValueError(f"this question hides cached slots (until=: an upload encoded ahead of its player), which "
                         f"needs model.attn sdpa or eager; the model runs {impl}")
    past = visible.numel()
    mask = torch.ones(new, past + new, dtype=torch.bool, device=visible.device)
    mask[:, :past] = visible.bool()
    mask[:, past:] = torch.tril(mask[:, past:])
    mask = mask[None, None]
    if impl == "eager":
        dtype = next(model.parameters()).dtype
        mask = torch.where(mask, 0.0, torch.finfo(dtype).min).to(dtype)
    return mask
