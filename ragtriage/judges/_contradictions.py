"""Answers that contradict a context outright: a negated context statement, and the wrong pick of a
choice question whose answer the contexts' own dates settle ("Who was born first, A or B?").

Each returns a note that quotes the context, so a reader can check it, or ``None``.
"""

from __future__ import annotations

import re

_CONTRACTIONS = (("can't", "can not"), ("cannot", "can not"), ("won't", "will not"), ("n't", " not"))
_AUX = frozenset("is was are were did does do has have had can could will would should may might must".split())
_NEGATIONS = frozenset(("not", "never"))
_PHRASE_TOKEN = re.compile(r"[^\W_]+")
#: Comparative words over a date, and whether the earlier date wins ("older": yes, "younger": no).
_EARLIER_WINS = {
    **dict.fromkeys("older oldest elder eldest first earlier earliest sooner before".split(), True),
    **dict.fromkeys("younger youngest later latest recent recently newer newest last after".split(), False),
}
_COMPARATIVE = re.compile(r"\b(?:" + "|".join(_EARLIER_WINS) + r")\b")
#: Words that can turn an answer's pick around ("A is not older", "A is older than B"): no decision.
_TURNS = re.compile(r"\b(?:not|never|no|neither|nor|than|both|same|unknown)\b")
_YEAR = re.compile(r"(?<![\d.,])(1\d{3}|20\d{2})(?![\d.,]\d)")
_OPTION_CUT = re.compile(r"^.*(?:,|:|\b(?:" + "|".join(_EARLIER_WINS) + r"))\s+", re.DOTALL)


def phrase_text(lowered: str) -> str:
    """Lower-case text as single-spaced tokens with negations spelled out, padded with spaces."""
    for old, new in _CONTRACTIONS:
        lowered = lowered.replace(old, new)
    return " " + " ".join(_PHRASE_TOKEN.findall(lowered)) + " "


def negation_flip(answer_lowered: str, context_phrases: str) -> str | None:
    """The answer states a context sentence with its negation added or dropped.

    Around each negation of the answer, the words without it (two before, two after) must be a context
    phrase while the negated words are not; around each auxiliary verb without a negation, the words with
    "not" inserted must be a context phrase while the words as written are not.
    """
    tokens = phrase_text(answer_lowered).split()
    for i, token in enumerate(tokens):
        if token in _NEGATIONS and i >= 2 and i + 2 < len(tokens) and tokens[i + 1] != "only":
            plain = " ".join(tokens[i - 2 : i] + tokens[i + 1 : i + 3])
            negated = " ".join(tokens[i - 2 : i + 3])
            if f" {plain} " in context_phrases and f" {negated} " not in context_phrases:
                return f"answer negates what a context states: the context says '{plain}'"
        elif token in _AUX and i >= 1 and i + 2 < len(tokens) and tokens[i + 1] not in _NEGATIONS:
            plain = " ".join(tokens[i - 1 : i + 3])
            negated = " ".join([*tokens[i - 1 : i + 1], "not", *tokens[i + 1 : i + 3]])
            if f" {negated} " in context_phrases and f" {plain} " not in context_phrases:
                return f"answer drops the negation of a context statement: the context says '{negated}'"
    return None


def wrong_choice(question: str, answer: str, context: str) -> str | None:
    """A question "which/who ... <comparative> ..., A or B?" whose options the contexts date, answered with
    the option the dates rule out. The date of an option is the first year after its first mention, in
    the same sentence; both options need one, the years must differ, and the answer must name exactly one
    option, with no negation or comparison words that could turn its meaning around."""
    lowered_q = question.lower()
    if " or " not in lowered_q:
        return None
    asked = _COMPARATIVE.search(lowered_q)
    if asked is None:
        return None
    rule = _EARLIER_WINS[asked.group()]
    head, _, tail = question.rstrip(" ?.\t\n").rpartition(" or ")
    options = [_OPTION_CUT.sub("", head).strip(" \"'"), tail.strip(" \"'?")]
    if not all(options) or any(len(o) > 80 for o in options):
        return None
    answer_lowered = answer.lower()
    picked = [o for o in options if _mentions(answer_lowered, o)]
    rest = answer_lowered.replace(picked[0].lower(), " ")
    if len(picked) != 1 or _TURNS.search(rest) or any(_EARLIER_WINS[w] != rule for w in _COMPARATIVE.findall(rest)):
        return None
    years = [_year_of(o, context) for o in options]
    if None in years or years[0] == years[1]:
        return None
    right = options[years.index(min(years) if rule else max(years))]  # type: ignore[type-var]
    if picked[0] == right:
        return None
    return (
        f"answer picks {picked[0]!r}, but the contexts date {options[0]!r} to {years[0]} and {options[1]!r} to "
        f"{years[1]}, so the question's answer is {right!r}"
    )


def _mentions(answer_lowered: str, option: str) -> bool:
    """The answer names the option: its last word, or the whole option (names are cited by surname)."""
    words = re.findall(r"[^\W_]+", option.lower())
    return bool(words) and (
        option.lower() in answer_lowered or re.search(rf"\b{re.escape(words[-1])}\b", answer_lowered) is not None
    )


def _year_of(option: str, context: str) -> int | None:
    words = re.findall(r"[^\W_]+", option)
    if not words:
        return None
    at = context.find(option)
    if at < 0:
        found = re.search(rf"\b{re.escape(words[-1])}\b", context)
        if found is None:
            return None
        at = found.start()
    sentence_end = re.search(r"[.!?](?:\s|$)(?![^(]*\))", context[at:])
    window = context[at : at + (sentence_end.start() if sentence_end else 300)]
    year = _YEAR.search(window)
    return int(year.group(1)) if year else None
