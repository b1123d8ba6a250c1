"""Fold a Thinking checkpoint's `<think>` reasoning out of the chat's answer (the HTTP server's TextFlow rules)."""

from __future__ import annotations

from dataclasses import dataclass

from longwatch.app.serve.textflow import THINK_END, THINK_START, TextFlow


@dataclass(frozen=True)
class Split:
    reasoning: str | None
    """The reasoning so far; None when the text has none (then the chat shows no reasoning element)."""
    answer: str
    """The text after `</think>` (all of it when there is no reasoning)."""
    thinking: bool
    """The reasoning is still open: no `</think>` yet and more text may come."""


def is_thinking_model(name: str) -> bool:
    """A Thinking checkpoint, named as Qwen publishes them (the serve section's `auto` parser uses the same rule)."""
    return "thinking" in name.lower()


def _opens_reasoning(text: str) -> bool:
    return text.lstrip().startswith(THINK_START) or THINK_END in text


def split_reasoning(text: str, final: bool, thinking_model: bool = False) -> Split:
    """Split the answer text so far into reasoning and answer, as `longwatch serve` splits reasoning_content.

    A text that opens with `<think>` or holds a `</think>` has reasoning; so has every text of a Thinking
    checkpoint (its template may open the block in the prompt: all of it is reasoning until `</think>`).
    Mid-stream (`final` False), text that could still become a marker is held back, as the server does.
    An empty reasoning block (`<think></think>`, a hybrid model answering without thinking) is none.
    """
    head = text.lstrip()
    if not final and len(head) < len(THINK_START) and THINK_START.startswith(head):
        return Split(None, "", False)  # nothing yet, or "<th" that may still become <think>
    flow = TextFlow(reasoning=thinking_model or _opens_reasoning(text), stops=[])
    pieces = flow.feed(text) + (flow.finish() if final else [])
    reasoning = "".join(p.text for p in pieces if p.kind == "reasoning")
    answer = "".join(p.text for p in pieces if p.kind == "content")
    thinking = flow.in_reasoning and not final
    return Split(reasoning if reasoning.strip() or thinking else None, answer, thinking)
