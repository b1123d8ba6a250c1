"""Prompt layout: prompt prefix, one segment per temporal patch with timestamp text, question suffix.

Layout (one temporal patch = one segment = one memory block):

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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from longwatch.backbone.positions import TEXT, VIDEO, mrope_positions

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
