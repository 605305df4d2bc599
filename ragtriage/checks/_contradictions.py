"""Answers that contradict a context outright: a negated context statement, the wrong pick of a choice
question whose answer the contexts' own dates settle ("Who was born first, A or B?"), and a count the
contexts give with another number ("six" novels where a context says "five young adult novels").

Each returns a note that quotes the context, so a reader can check it, or ``None``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ragtriage.checks._normalize import phrase_text
from ragtriage.checks._numbers import CARDINALS

if TYPE_CHECKING:
    from ragtriage.checks.grounding import EvidenceIndex

_AUX = frozenset("is was are were did does do has have had can could will would should may might must".split())
_NEGATIONS = frozenset(("not", "never"))
_PHRASE_TOKEN = re.compile(r"[^\W_]+")
_CLAUSE = re.compile(r"[,;.!?\n]+|\s(?:but|and|while|whereas|although)\s")
#: Comparative words over a date, and whether the earlier date wins ("older": yes, "younger": no).
_EARLIER_WINS = {
    **dict.fromkeys("older oldest elder eldest first earlier earliest sooner before".split(), True),
    **dict.fromkeys("younger youngest later latest recent recently newer newest last after".split(), False),
}
_COMPARATIVE = re.compile(r"\b(?:" + "|".join(_EARLIER_WINS) + r")\b")
#: Words that can turn an answer's pick around ("A is not older", "A is older than B"): no decision.
_TURNS = re.compile(r"\b(?:not|never|no|neither|nor|than|both|same|unknown)\b")
#: A full stop, then space and a capital, not after an initial or a short abbreviation ("v.", "U.S.", "Dr.").
_SENTENCE_END = re.compile(r"(?<!\b[A-Za-z])(?<!\b[A-Z][a-z])[.!?]\s+(?=[A-Z\"'(])")
_BETWEEN = re.compile(r"\b(?:out of|between|of)\s+(.+?)\s+and\s+([^?]+?)\s*\??\s*$", re.IGNORECASE)
_ARTICLE = re.compile(r"^(?:the|a|an)\s+", re.IGNORECASE)
_YEAR = re.compile(r"(?<![\d.,])(1\d{3}|20\d{2})(?![\d.,]\d)")
#: Events a choice question may ask about, what asks for them, and how a context states them.
_EVENT_ASKED = {
    "died": re.compile(r"\b(?:died|dies|die|death|passed\s+away|dead)\b"),
    "born": re.compile(r"\b(?:born|birth)\b"),
    "founded": re.compile(r"\b(?:founded|established|formed|created|started|opened|launched|built)\b"),
    "released": re.compile(r"\b(?:released|published|premiered|debuted|came\s+out|issued|aired)\b"),
}
_EVENT_SAID = {
    "died": re.compile(r"\b(?:died|death|passed\s+away|killed|d\.)"),
    "born": re.compile(r"\b(?:born|birth|b\.)"),
    "founded": re.compile(r"\b(?:founded|establish\w*|formed|created|started|opened|launched|built|founding)\b"),
    "released": re.compile(r"\b(?:released|published|premiered|debuted|issued|aired|release)\b"),
}
#: Comparatives of age: without an event word they compare births or foundings, the first year given.
_AGE_WORDS = frozenset("older oldest elder eldest younger youngest newer newest".split())
_LIFE_SPAN = re.compile(
    r"\([^()]{0,40}?\b(1\d{3}|20\d{2})\b[^()]{0,20}?[-–]\s*[^()]{0,40}?\b(1\d{3}|20\d{2})\b[^()]*\)"
)
_LONE_DATE = re.compile(r"^[^()]{0,60}?\((?:born\s+)?[^()]{0,20}?\b(1\d{3}|20\d{2})\)")
_OPTION_CUT = re.compile(r"^.*(?:,|:|\b(?:" + "|".join(_EARLIER_WINS) + r"))\s+", re.DOTALL)


def negation_flip(answer_lowered: str, context: EvidenceIndex) -> str | None:
    """The answer states a context sentence with its negation added or dropped.

    Each clause of the answer is compared on its own. Around a negation, the clause's words without it
    (from up to four words before, at least two, to up to two after) must be a context phrase while the negated
    words are not; around an auxiliary verb without a negation, the words with "not" inserted must be a
    context phrase while the words as written are not. The words before reach back to the clause's start
    where they can, so "up to 250 MB can be uploaded" is not read as "larger than 250 MB cannot be".
    """
    words = set(_PHRASE_TOKEN.findall(answer_lowered))
    if words.isdisjoint(_AUX) and words.isdisjoint(_NEGATIONS) and "n't" not in answer_lowered:
        return None  # nothing to flip: most answers
    for clause in _CLAUSE.split(answer_lowered):
        tokens = phrase_text(" " + " ".join(_PHRASE_TOKEN.findall(clause)) + " ").split()
        for i, token in enumerate(tokens):
            if token in _NEGATIONS and i >= 2 and i + 1 < len(tokens) and tokens[i + 1] != "only":
                left = tokens[max(0, i - 4) : i]
                plain = " ".join(left + tokens[i + 1 : i + 3])
                negated = " ".join(left + tokens[i : i + 3])
                if f" {plain} " in context.phrases and f" {negated} " not in context.phrases:
                    return f"answer negates what a context states: the context says '{plain}'"
            elif token in _AUX and i >= 1 and i + 2 < len(tokens) and tokens[i + 1] not in _NEGATIONS:
                left = tokens[max(0, i - 4) : i + 1]
                plain = " ".join(left + tokens[i + 1 : i + 3])
                negated = " ".join([*left, "not", *tokens[i + 1 : i + 3]])
                if f" {negated} " in context.phrases and f" {plain} " not in context.phrases:
                    return f"answer drops the negation of a context statement: the context says '{negated}'"
    return None


def wrong_choice(question: str, answer: str, context: str) -> str | None:
    """A question "which/who ... <comparative> ..., A or B?" whose options the contexts date, answered with
    the option the dates rule out. The date of an option is the first year after its first mention, in
    the same sentence; both options need one, the years must differ, and the answer must name exactly one
    option, with no negation or comparison words that could turn its meaning around."""
    if len(question) > 500:
        return None  # not a choice question, and the option patterns would scan it quadratically
    lowered_q = question.lower()
    between = None
    if " or " not in lowered_q:
        if " and " not in lowered_q or not any(w in lowered_q for w in ("out of ", "between ", " of ")):
            return None
        between = _BETWEEN.search(question)  # "Who was born first out of A and B?"
        if between is None:
            return None
    asked = _COMPARATIVE.search(lowered_q)
    if asked is None:
        return None
    rule = _EARLIER_WINS[asked.group()]
    if " or " in lowered_q:
        head, _, tail = question.rstrip(" ?.\t\n").rpartition(" or ")
    else:
        assert between is not None
        head, tail = between.group(1), between.group(2)
    options = [_ARTICLE.sub("", o) for o in (_OPTION_CUT.sub("", head).strip(" \"'"), tail.strip(" \"'?"))]
    if not all(options) or any(len(o) > 80 for o in options):
        return None
    answer_lowered = answer.lower()
    keys = _distinctive(options)
    if keys is None:
        return None
    picked = [o for o, k in zip(options, keys, strict=True) if _mentions(answer_lowered, o, k)]
    before, than, _ = answer_lowered.partition(" than ")
    if than and len(picked) == 2:  # "A is younger than B" picks A
        picked = [o for o, k in zip(options, keys, strict=True) if _mentions(before, o, k)]
        answer_lowered = before
    if len(picked) != 1:
        return None
    rest = answer_lowered.replace(picked[0].lower(), " ")
    if _TURNS.search(rest) or any(_EARLIER_WINS[w] != rule for w in _COMPARATIVE.findall(rest)):
        return None
    event = next((e for e, asks in _EVENT_ASKED.items() if asks.search(lowered_q)), None)
    if event is None and asked.group() not in _AGE_WORDS:
        return None  # "which closed first": an event no rule dates; the contexts' first years may be others
    years = [_year_of(o, k, context, event) for o, k in zip(options, keys, strict=True)]
    if None in years or years[0] == years[1]:
        return None
    right = options[years.index(min(years) if rule else max(years))]  # type: ignore[type-var]
    if picked[0] == right:
        return None
    return (
        f"answer picks {picked[0]!r}, but the contexts date {options[0]!r} to {years[0]} and {options[1]!r} to "
        f"{years[1]}, so the question's answer is {right!r}"
    )


def _distinctive(options: list[str]) -> list[str] | None:
    """Per option, its last word that the other option lacks ("Lisbon" in "Lisbon Aquarium" vs "Genoa Aquarium")."""
    words = [re.findall(r"[^\W_]+", o.lower()) for o in options]
    keys = [next((w for w in reversed(mine) if w not in other), None) for mine, other in (words, words[::-1])]
    return None if None in keys else keys  # type: ignore[return-value]


def _mentions(answer_lowered: str, option: str, key: str) -> bool:
    """The answer names the option: the whole option, or its distinctive word (names are cited by surname)."""
    return option.lower() in answer_lowered or re.search(rf"\b{re.escape(key)}\b", answer_lowered) is not None


def _year_of(option: str, key: str, context: str, event: str | None = None) -> int | None:
    """The year of the option: for a question about an event (died, born, founded), the year after that
    event's word or in a life span's place ("(1890-1968)"), else the first year after the option's mention."""
    at = context.find(option)
    if at < 0:
        found = re.search(rf"\b{re.escape(key)}\b", context, re.IGNORECASE)
        if found is None:
            return None
        at = found.start()
    sentence_end = _SENTENCE_END.search(context, at)
    window = context[at : min(sentence_end.start() if sentence_end else len(context), at + 300)]
    if event is not None:
        return _event_year(window, event)
    year = _YEAR.search(window)
    return int(year.group(1)) if year else None


def _event_year(window: str, event: str) -> int | None:
    lowered = window.lower()
    said = _EVENT_SAID[event].search(lowered)
    if said is not None:
        year = _YEAR.search(lowered, said.end(), said.end() + 60)
        if year is not None:
            return int(year.group(1))
    span = _LIFE_SPAN.search(lowered)
    if span is not None and event in ("born", "died"):
        return int(span.group(1 if event == "born" else 2))
    if event == "born":  # "Octavio Paz (31 March 1914) was a poet": a lone date after a name is its birth
        lone = _LONE_DATE.search(lowered)
        if lone is not None:
            return int(lone.group(1))
    return None


def count_conflict(
    counted: str, values: tuple[float, ...], context: EvidenceIndex, common: frozenset[str]
) -> str | None:
    """A context counts the same thing with another number ("five young adult novels" against "six"): the
    number before each mention of the counted word, over at most two describing words, is compared."""
    phrases = context.phrases
    target = f" {counted} "
    at = phrases.find(target)
    while at >= 0:
        before = phrases[max(0, at - 80) : at].split()[-3:]
        for back, token in enumerate(reversed(before)):
            count = float(token) if token.isdigit() else CARDINALS.get(token)
            if count is not None:
                if count not in values and (back == 0 or count < 1000):  # "in 1990 ..." is a year, not a count
                    return f"a context counts them as '{' '.join(before[len(before) - back - 1 :])} {counted}'"
                break
            if token in common:
                break  # "the band's members": no count of members here
        at = phrases.find(target, at + 1)
    return None
