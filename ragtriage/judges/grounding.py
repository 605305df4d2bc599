"""Lexical grounding: which salient terms of an answer appear in no retrieved context.

Numbers, dates, named entities and rare content words are what hallucinations
are made of, and whether a term occurs in a text is checkable in microseconds.
The check is one-sided: a term that is found proves nothing, a term that is
found nowhere (not in the contexts, not in the question) is evidence.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_NUMBER_OR_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")
_TOKEN = re.compile(r"[^\W_]+")
#: ASCII punctuation except the separators inside numbers ("1,500", "3.5"), mapped to spaces.
_ASCII_SEPARATORS = str.maketrans({c: " " for c in string.punctuation if c not in ".,"})
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|\n)\s*[\"'(\[]*([^\W\d_]+)")

_NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
    "eleven": "11",
    "twelve": "12",
    "thirteen": "13",
    "fourteen": "14",
    "fifteen": "15",
    "sixteen": "16",
    "seventeen": "17",
    "eighteen": "18",
    "nineteen": "19",
    "twenty": "20",
    "thirty": "30",
    "forty": "40",
    "fifty": "50",
    "hundred": "100",
    "thousand": "1000",
    "first": "1",
    "second": "2",
    "third": "3",
    "fourth": "4",
    "fifth": "5",
    "once": "1",
    "twice": "2",
    "single": "1",
    "double": "2",
    "half": "2",
}

# Function words and the everyday vocabulary of answers; a word here is never "rare".
_COMMON = frozenset(
    """
    a about above after again against all also although always am among an and another any are around as
    at be because been before being below between both but by can cannot could did do does doing done
    down during each either else enough even ever every few for from further had has have having he her
    here hers herself him himself his how however i if in into is it its itself just least less like
    made make many may me might more most much must my myself neither no nor not now of off often on
    once only or other others otherwise our ours ourselves out over own per perhaps rather same several
    shall she should since so some such than that the their theirs them themselves then there therefore
    these they this those though through thus to too toward towards under until up upon us very was we
    were what whatever when where whether which while who whom whose why will with within without would
    yes yet you your yours yourself answer answers based called context contexts document documents
    information known mentioned named provided question questions several stated text therefore although
    because number people person place thing things time times year years called known including include
    includes well first second third later earlier many most also still both either
    """.split()
)


def normalize_number(text: str) -> str:
    if text.isdigit():  # the common case, and the regex below costs a microsecond
        return text
    text = _THOUSANDS.sub("", text)
    if "," in text:  # decimal comma (European style)
        text = text.replace(",", ".")
    if "." in text:
        text = text.rstrip("0").rstrip(".") or "0"
    return text


class EvidenceIndex:
    """The numbers, words and (on demand) word stems of some texts, built once per sample."""

    __slots__ = ("_stems", "numbers", "words")

    def __init__(self, numbers: set[str], words: set[str]) -> None:
        self.numbers = numbers
        self.words = words
        self._stems: set[str] | None = None

    @property
    def stems(self) -> set[str]:
        """First five letters of the longer words; only rare-word and refusal checks need them."""
        if self._stems is None:
            self._stems = {w[:5] for w in self.words if len(w) >= 5}
        return self._stems

    @classmethod
    def build(cls, texts: Sequence[str]) -> EvidenceIndex:
        words, raw_numbers = _tokens("\n".join(texts).lower())
        numbers = {normalize_number(n) for n in raw_numbers}
        numbers.update(_NUMBER_WORDS[w] for w in words.intersection(_NUMBER_WORDS))
        return cls(numbers, words)


def _tokens(lowered: str) -> tuple[set[str], set[str]]:
    """Words and numbers of a text, as ``_NUMBER_OR_WORD`` finds them.

    This runs on every sample's contexts, so ASCII text takes a faster road: ``str.split`` after
    turning separators into spaces, with the regex only for the few tokens that are not plain words
    (``1,500``, ``covid19``, ``word,``). Non-ASCII text goes through the regex as a whole.
    """
    if not lowered.isascii():
        tokens = set(_NUMBER_OR_WORD.findall(lowered))
        numbers = {t for t in tokens if t[0].isdigit()}
        return tokens - numbers, numbers
    tokens = {t.strip(".,") for t in lowered.translate(_ASCII_SEPARATORS).split()}
    words = {t for t in tokens if t.isalpha()}
    numbers: set[str] = set()
    for token in tokens - words:
        for part in _NUMBER_OR_WORD.findall(token):
            (numbers if part[0].isdigit() else words).add(part)
    return words, numbers


@dataclass(frozen=True, slots=True)
class GroundingReport:
    """Salient terms of the answer, split by whether the evidence contains them."""

    checked: int
    unsupported_numbers: tuple[str, ...]
    unsupported_entities: tuple[str, ...]
    unsupported_words: tuple[str, ...]

    @property
    def score(self) -> float | None:
        """Share of salient terms found in the evidence; ``None`` when the answer has none."""
        if not self.checked:
            return None
        missing = len(self.unsupported_numbers) + len(self.unsupported_entities) + len(self.unsupported_words)
        return round(1.0 - missing / self.checked, 4)


def check_grounding(answer: str, contexts: EvidenceIndex, question: EvidenceIndex) -> GroundingReport:
    """Terms the question already names are not the answer's invention, so both count as evidence."""
    numbers_known = contexts.numbers | question.numbers  # small; the word sets are not copied
    context_words, question_words = contexts.words, question.words
    checked = 0
    numbers: list[str] = []
    for raw in _NUMBER.findall(answer):
        checked += 1
        number = normalize_number(raw)
        if number not in numbers_known:
            numbers.append(raw)

    sentence_starts = {m.group(1) for m in _SENTENCE_START.finditer(answer)}
    entities: list[str] = []
    words: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(answer):
        lowered = word.lower()
        if lowered in seen or lowered in _COMMON:
            continue
        seen.add(lowered)
        parts = _TOKEN.findall(lowered)
        if lowered in _NUMBER_WORDS:
            checked += 1
            if (
                lowered not in context_words
                and lowered not in question_words
                and (_NUMBER_WORDS[lowered] not in numbers_known)
            ):
                numbers.append(word)
            continue
        is_entity = word[0].isupper() and word not in sentence_starts
        if is_entity:
            checked += 1
            if not all(p in context_words or p in question_words for p in parts):
                entities.append(word)
        elif len(lowered) >= 6:
            checked += 1
            if not any(
                p in context_words or p in question_words or p[:5] in contexts.stems or p[:5] in question.stems
                for p in parts
            ):
                words.append(word)
    return GroundingReport(checked, tuple(numbers), tuple(entities), tuple(words))
