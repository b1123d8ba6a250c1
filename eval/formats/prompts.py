"""How a normalized question is put to the model: options lettered, answer-format instructions per kind."""

from __future__ import annotations

from longwatch.eval.formats.schema import LETTERS, Question

MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def format_prompt(q: Question, history: list[tuple[str, str]] | None = None) -> str:
    """The text asked for `q`; `history` (question, reply) pairs are prepended for sequential sets (SQA)."""
    text = q.question.strip()
    if q.kind == "mc":
        options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(q.choices))
        text = f"{text}\n{options}\n{MC_INSTRUCTION}"
    elif q.kind == "yesno" and "yes or no" not in text.lower():
        text += "\nAnswer only Yes or No."
    elif q.kind == "count" and "number" not in text.lower():
        text += "\nAnswer with a single number."
    if history:
        past = "\n".join(f"Q: {hq}\nA: {ha}" for hq, ha in history)
        text = f"Earlier questions about this video and your answers:\n{past}\n\nNow answer this question.\n{text}"
    return text


def proactive_poll(q: Question) -> str:
    """StreamingBench's per-second check for proactive output."""
    return f'{q.question.strip()}\nIs it the right time to output "{q.answer}"? Answer only yes or no.'
