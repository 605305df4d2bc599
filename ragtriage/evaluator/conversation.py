"""The part of a conversation a judge reads: its last turns, bounded by turns and characters.

One bound for every tier, so the free tiers, the judges and the verdict cache key all see the same turns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Turn = dict[str, str]
#: What a cut turn starts with: its beginning was dropped, the end (nearest the question) kept.
CUT = "[...] "


def recent_turns(history: Sequence[Mapping[str, str]], *, max_turns: int, max_chars: int) -> tuple[list[Turn], int]:
    """The last ``max_turns`` turns of ``history`` (oldest first) whose contents total at most ``max_chars``,
    and how many turns were left out. The newest turn is kept even when longer than ``max_chars``: its end,
    nearest the question, is what a follow-up most often refers to."""
    kept: list[Turn] = []
    room = max_chars
    for turn in reversed(history[-max_turns:] if max_turns else []):
        content = turn["content"]
        if len(content) > room:
            if not kept and room > len(CUT):
                kept.append({"role": turn["role"], "content": CUT + content[len(content) - room + len(CUT) :]})
            break
        kept.append({"role": turn["role"], "content": content})
        room -= len(content)
    kept.reverse()
    return kept, len(history) - len(kept)


def check_history(value: object) -> list[Turn]:
    """``history`` as the evaluator takes it: a sequence of ``{"role", "content"}`` mappings of strings."""
    if value is None:
        return []
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise TypeError(f"history must be a sequence of {{'role', 'content'}} mappings, got {type(value).__name__}")
    turns = []
    for i, turn in enumerate(value):
        if (
            not isinstance(turn, Mapping)
            or not isinstance(turn.get("role"), str)
            or not isinstance(turn.get("content"), str)
        ):
            raise TypeError(f"history[{i}] must be a mapping with str 'role' and 'content', got {turn!r:.80}")
        turns.append({"role": turn["role"], "content": turn["content"]})
    return turns
