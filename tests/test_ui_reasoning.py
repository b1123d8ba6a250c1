"""A Thinking checkpoint's `<think>` reasoning is folded into a "Reasoning" message in the chat, the answer after it."""

from __future__ import annotations

import pytest

from longwatch.app.ui.answer import AnswerUpdate
from longwatch.app.ui.panels import answer_messages
from longwatch.app.ui.reasoning import is_thinking_model, split_reasoning
from tests.ui_fakes import ScriptedSession, req, scripted_handlers


def metadata(chat):
    return [m.get("metadata") for m in chat if m["role"] == "assistant" and m.get("metadata")]


@pytest.mark.parametrize("text,final,reasoning,answer,thinking", [
    ("<think>a b</think>The door", True, "a b", "The door", False),
    ("<think>\nthe sign is red\n</think>\n\nThe door", True, "the sign is red\n", "The door", False),
    ("The door", True, None, "The door", False),
    ("<think>abc", False, "abc", "", True),  # mid-stream: reasoning in progress
    ("<think>abc", True, "abc", "", False),  # cut off before </think>: all reasoning
    ("<think>a b</thi", False, "a b", "", True),  # a marker being written is held back
    ("<th", False, None, "", False),  # may still become <think>: nothing shown yet
    ("<think>\n\n</think>\n\nThe door", True, None, "The door", False),  # empty block: no reasoning element
    ("a b</think>The door", True, "a b", "The door", False),  # the template opened <think> in the prompt
])
def test_split_reasoning(text, final, reasoning, answer, thinking):
    split = split_reasoning(text, final=final)
    assert (split.reasoning, split.answer, split.thinking) == (reasoning, answer, thinking)


def test_a_thinking_checkpoint_reasons_before_any_tag():
    assert is_thinking_model("Qwen/Qwen3-VL-8B-Thinking") and not is_thinking_model("Qwen/Qwen3-VL-8B-Instruct")
    split = split_reasoning("the sign is", final=False, thinking_model=True)
    assert split.reasoning == "the sign is" and split.thinking and split.answer == ""


def no_thumb(t):
    return None


def test_partial_reasoning_mid_stream_is_a_pending_reasoning_message_and_no_answer_yet():
    msgs = answer_messages(AnswerUpdate("<think>abc"), no_thumb)
    assert msgs == [{"role": "assistant", "content": "abc ▍", "metadata": {"title": "Reasoning", "status": "pending"}}]
    msgs = answer_messages(AnswerUpdate("<think>a b</think>The do"), no_thumb)
    assert msgs[0]["metadata"]["status"] == "done" and msgs[1] == {"role": "assistant", "content": "The do ▍"}
    assert [m.get("metadata") for m in answer_messages(AnswerUpdate("The do"), no_thumb)] == [None]


def test_the_chat_folds_the_reasoning_and_shows_the_answer_after_it():
    h = scripted_handlers(ScriptedSession(["<think>", "a", " b", "</think>", "The", " door"]))
    final = list(h.ask("Which way out?", None, [], req("t")))[-1][0]
    assert final[0]["role"] == "user" and len(final) == 3
    assert final[1]["metadata"] == {"title": "Reasoning", "status": "done"}  # folded: Gradio shows it closed
    assert final[1]["content"] == "a b"
    assert final[2]["content"].startswith("The door\n") and "think>" not in final[2]["content"]
    assert 'class="lw-foot"' in final[2]["content"]


def test_an_answer_cut_off_while_reasoning_says_so():
    h = scripted_handlers(ScriptedSession(["<think>", "still", " going"]))
    final = list(h.ask("Which way out?", None, [], req("t")))[-1][0]
    assert final[1]["metadata"]["status"] == "done" and final[1]["content"] == "still going"
    assert final[2]["content"].startswith("No answer after the reasoning.")


def test_an_answer_without_think_tags_has_no_reasoning_element():
    h = scripted_handlers(ScriptedSession(["The", " door", " is", " open"], gap_s=0.02))
    steps = [chat for chat, _ in h.ask("Which way out?", None, [], req("t"))]
    assert not any(metadata(c) for c in steps)
    assert len(steps[-1]) == 2 and steps[-1][-1]["content"].startswith("The door is open")
