"""Lexical grounding: which salient terms of an answer appear in no retrieved context.

Numbers, dates, named entities and rare content words are what hallucinations
are made of, and whether a term occurs in a text is checkable in microseconds.
The check is one-sided: a term that is found proves nothing, a term that is
found nowhere (not in the contexts, not in the question) is evidence, but only
after every other way of writing it was looked for: accents, number words,
date formats, plurals, demonyms, abbreviations, hyphenation, transliteration,
and values that follow from the contexts' own (a unit conversion, a sum).

The contexts are indexed once as one padded string of lower-case tokens, so a
lookup is a substring search in C; the slower readings (all number phrases, all
dates, capitalised words) are built only when an answer term is not found.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ragtriage.checks._contradictions import count_conflict
from ragtriage.checks._dates import MONTHS, Ymd, agrees, conflict, find_dates, show
from ragtriage.checks._names import initials, name_support
from ragtriage.checks._normalize import COMMON_WORDS as _COMMON
from ragtriage.checks._normalize import fold, phrase_text, skeleton
from ragtriage.checks._numbers import (
    NUMBER_WORDS,
    SCALE_WORDS,
    SCALES,
    Known,
    Quantity,
    derivation,
    digit_values,
    quantities,
    token_values,
)

#: Integers up to this are often paraphrased ("two films"); a missing one is a signal, not proof.
SMALL_NUMBER = 10

_KEEP_WORD = bytes(c if 48 <= c <= 57 or 97 <= c <= 122 else 32 for c in range(256))
_KEEP_LETTERS = bytes(c if 65 <= c <= 90 or 97 <= c <= 122 else 32 for c in range(256))
_KEEP_NUMBER = bytes(c if 48 <= c <= 57 or c in b".," else 32 for c in range(256))
_TOKEN = re.compile(r"[^\W_]+")
_DIGIT_RUN = re.compile(r"\d+(?:[.,]\d+)*")
_HAS_DIGIT = re.compile(r"\d")
_NUMERIC_DATE = re.compile(r"\d[-/.]\d{1,2}[-/.]\d")
_JOINERS = frozenset(("and", "a", "an"))
_DIGITS_BEFORE = re.compile(r"(\d+(?:[.,]\d+)*)\s*-?\s*$")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")
_ASCII_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
_RANGE_START = re.compile(r"(\d{3,4})\s*[-/]\s*$")
_RANGE_NEXT = re.compile(r"\s*[-/]\s*(\d{1,3})(?!\d)")
_UPPER_BOUND = re.compile(
    r"\b(?:nearly|almost|about|around|approximately|roughly|some|close\s+to|up\s+to|under|less\s+than|below)"
    r"\W*(?:[$£€¥]\s*)?$"
)
_RELATIVE_UNITS = ("year", "season", "summer", "winter", "spring", "autumn")
_RELATIVE_BEFORE = re.compile(r"\b(?:next|last|this|previous|coming|following)\s+$")
_RELATIVE_AFTER = re.compile(r"s?\s+(?:ago|later|earlier|from\s+now)\b")
_LIST_MARKER = re.compile(r"\s*(?:[-*•]|\d{1,2}[.)]|[a-z][.)])")
_VOWEL = re.compile(r"[aeiouyAEIOUY]")
#: Abbreviations with a vowel that end in a full stop mid-sentence ("Gen. Grant"); "Dr", "Mr", "St" have none.
_ABBREVIATIONS = frozenset(
    """gen col capt cap lieut maj adm sen rep gov pres prof rev hon sgt cpl supt insp det est approx
    jan feb mar apr aug sep sept oct nov dec mon tue tues wed thu thurs fri sat sun
    no nos vol vols fig figs op ed eds inc co corp ave blvd univ dept assn bros ca cf al etc vs mme mlle""".split()
)
_ACRONYM_LINKS = frozenset(("of", "the", "and", "for", "a", "an", "in", "on", "at", "to", "s"))
_UNIT_GAP = re.compile(r"[\s°]*(?:degrees?\s+)?")
_PUNCTUATION = "".join(c for c in map(chr, range(33, 127)) if not c.isalnum()) + "“”‘’«»"
_ROMAN = re.compile(r"^(?=[IVXLC]{2,}$)(C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})$")
_ROMAN_VALUES = {"I": 1, "V": 5, "X": 10, "L": 50, "C": 100}
#: Endings of common words (adjectives, adverbs, agent nouns) that start a sentence before a name.
_WORD_ENDINGS = ("ly", "ing", "ed", "er", "or", "ous", "ful", "ive", "al", "ic", "ist", "ent", "ant", "ary", "ness")


class EvidenceIndex:
    """The tokens and numbers of some texts, built once per sample; slower readings on first use."""

    __slots__ = ("_lazy", "lowered", "padded", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        lowered = text.lower()
        self.lowered = lowered
        if lowered.isascii():
            self.padded = " " + lowered.encode().translate(_KEEP_WORD).decode() + " "
        else:
            self.padded = " " + " ".join(_TOKEN.findall(lowered)) + " "
        self._lazy: dict[str, Any] = {}

    @property
    def numbers(self) -> set[float]:
        """Every value written in digits ("1,500" gives 1500 and 1.5)."""
        if "numbers" not in self._lazy:
            lowered = self.lowered
            if lowered.isascii():  # a full stop or comma that ends a number or stands alone is no part of one
                kept = lowered.encode().translate(_KEEP_NUMBER).decode()
                digit_runs = kept.replace(". ", " ").replace(", ", " ").split()
            else:
                digit_runs = _DIGIT_RUN.findall(lowered)
            numbers: set[float] = set()
            for run in digit_runs:
                run = run.strip(".,")
                if run.isdigit() and len(run) < 16:
                    numbers.add(float(run))
                elif run:
                    numbers.update(digit_values(run))
            self._lazy["numbers"] = numbers
        return self._lazy["numbers"]

    def has_number(self, value: float) -> bool:
        """The value is written in digits somewhere: its usual spellings are looked for first, as substrings
        with number boundaries, and only if none is found is every number of the texts read."""
        lowered = self.lowered
        for form in _digit_forms(value):
            at = lowered.find(form)
            while at >= 0:
                end = at + len(form)
                if not _continues_number(lowered, at - 1, -1) and not _continues_number(lowered, end, 1):
                    return True
                at = lowered.find(form, at + 1)
        return value in self.numbers

    @classmethod
    def build(cls, texts: Sequence[str]) -> EvidenceIndex:
        return cls(fold("\n".join(texts)))

    def has(self, word: str) -> bool:
        return f" {word} " in self.padded

    def has_prefix(self, prefix: str) -> bool:
        return f" {prefix}" in self.padded

    @property
    def phrases(self) -> str:
        """Single-spaced tokens with "n't" spelled "not", padded: for phrase lookups (negation flips)."""
        if "phrases" not in self._lazy:
            self._lazy["phrases"] = phrase_text(self.padded)
        return self._lazy["phrases"]

    @property
    def values(self) -> set[float]:
        """Every number the texts state, digits or words, with scales ("4.7 million") applied."""
        if "values" not in self._lazy:
            found = self.numbers | token_values(self.padded.split())
            for word in SCALE_WORDS:  # "4.7 million": the digits just before each scale word, scaled
                at = self.lowered.find(word)
                while at >= 0:
                    before = _DIGITS_BEFORE.search(self.lowered, max(0, at - 24), at)
                    if before:
                        found.update(v * SCALES[word] for v in digit_values(before.group(1)))
                    at = self.lowered.find(word, at + 1)
            self._lazy["values"] = found
        return self._lazy["values"]

    @property
    def dates(self) -> list[Ymd]:
        if "dates" not in self._lazy:
            self._lazy["dates"] = [r for d in find_dates(self.text) for r in d.readings]
        return self._lazy["dates"]

    @property
    def names(self) -> set[str]:
        """Lower-case words written capitalised somewhere: the candidates for another spelling of a name."""
        if "names" not in self._lazy:
            if self.text.isascii():  # bytes.translate keeps letters of both cases: a third of a regex's time
                tokens = self.text.encode().translate(_KEEP_LETTERS).decode().split()
                self._lazy["names"] = {t.lower() for t in tokens if t[0].isupper()}
            else:
                words = self.text.split()
                self._lazy["names"] = {
                    n for w in words if w[:1].isupper() and (n := w.strip(_PUNCTUATION).lower()).isalpha()
                }
        return self._lazy["names"]

    @property
    def relative_time(self) -> bool:
        """The texts date something relative to when they were written ("next year's games", "two years ago"),
        so a year they do not write may still be theirs."""
        if "relative" not in self._lazy:
            lowered, relative = self.lowered, False
            for unit in _RELATIVE_UNITS:
                at = lowered.find(unit)
                while at >= 0 and not relative:
                    relative = bool(
                        _RELATIVE_BEFORE.search(lowered, max(0, at - 12), at)
                        or _RELATIVE_AFTER.match(lowered, at + len(unit))
                    )
                    at = lowered.find(unit, at + 1)
            self._lazy["relative"] = relative
        return self._lazy["relative"]

    def words_with_prefix(self, prefix: str) -> list[str]:
        """Words that start with ``prefix``, in any case: lower-case, tokenised corpora write names lower-case
        too ("a west australian beach"). A few substring searches; only a name not found by itself asks."""
        padded, words = self.padded, []
        at = padded.find(" " + prefix)
        while at >= 0:
            end = padded.find(" ", at + 1)
            words.append(padded[at + 1 : end])
            at = padded.find(" " + prefix, end)
        return words

    @property
    def word_initials(self) -> set[str]:
        """Initials of every run of two to five words, in any case, linking words left out ("prime minister"
        -> "pm", "chief executive officer" -> "ceo"): acronyms of ordinary phrases."""
        if "word_initials" not in self._lazy:
            words = [w for w in self.padded.split() if w not in _ACRONYM_LINKS and not w[0].isdigit()]
            found: set[str] = set()
            for i in range(len(words)):
                letters = words[i][0]
                for word in words[i + 1 : i + 5]:
                    letters += word[0]
                    found.add(letters)
            self._lazy["word_initials"] = found
        return self._lazy["word_initials"]

    @property
    def short_words(self) -> dict[str, list[str]]:
        """Words of two to four letters by first letter: the candidates for an abbreviation ("St", "Ltd")."""
        if "short" not in self._lazy:
            short: dict[str, list[str]] = {}
            for word in self.names:  # abbreviations are written capitalised: "St.", "Ltd", "Mt"
                if 2 <= len(word) <= 4:
                    short.setdefault(word[0], []).append(word)
            self._lazy["short"] = short
        return self._lazy["short"]

    @property
    def skeletons(self) -> dict[str, str]:
        """The transliteration key of every capitalised word (see ``_normalize.skeleton``)."""
        if "skeletons" not in self._lazy:
            self._lazy["skeletons"] = {skeleton(n): n for n in self.names if len(n) >= 4}
        return self._lazy["skeletons"]

    @property
    def acronyms(self) -> set[str]:
        """Initials of every run of capitalised words ("United Nations" -> "un", "New York City" -> "nyc")."""
        if "acronyms" not in self._lazy:
            self._lazy["acronyms"] = initials(self.text)
        return self._lazy["acronyms"]


def _digit_forms(value: float) -> list[str]:
    if value == int(value) and abs(value) < 1e15:
        whole = int(value)
        forms = [str(whole)]
        if whole >= 1000:
            grouped = f"{whole:,}"
            forms += [grouped, grouped.replace(",", "."), grouped.replace(",", " ")]
        return forms
    text = f"{value:.10g}"
    return [text, text.replace(".", ",")] if "e" not in text else []


def _continues_number(text: str, i: int, step: int) -> bool:
    """The character at ``i`` (going ``step``) extends the number: a digit, or a separator then a digit."""
    if not 0 <= i < len(text):
        return False
    c = text[i]
    if c.isdigit():
        return True
    j = i + step
    return c in ".," and 0 <= j < len(text) and text[j].isdigit()


@dataclass(frozen=True, slots=True)
class GroundingReport:
    """Salient terms of the answer, split by whether the evidence contains them.

    ``unsupported_*`` are found nowhere; ``hard_numbers`` are the unsupported numbers that are not small
    integers; ``derived`` and ``variants`` explain terms that are not stated but could be (a converted
    value, another spelling): signals, never proof; ``date_conflicts`` (a context date with one part changed)
    and ``count_conflicts`` (a context count with another number) contradict a context.
    """

    checked: int
    unsupported_numbers: tuple[str, ...]
    unsupported_entities: tuple[str, ...]
    unsupported_words: tuple[str, ...]
    hard_numbers: tuple[str, ...] = ()
    derived: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    date_conflicts: tuple[str, ...] = ()
    count_conflicts: tuple[str, ...] = ()

    @property
    def conflicts(self) -> tuple[str, ...]:
        return self.date_conflicts + self.count_conflicts

    @property
    def score(self) -> float | None:
        """Share of salient terms found in the evidence; ``None`` when the answer has none."""
        if not self.checked:
            return None
        missing = len(self.unsupported_numbers) + len(self.unsupported_entities) + len(self.unsupported_words)
        missing += len(self.conflicts)
        return round(1.0 - missing / self.checked, 4)


class _Findings:
    __slots__ = (
        "checked",
        "consumed",
        "count_conflicts",
        "date_conflicts",
        "derived",
        "entities",
        "hard",
        "numbers",
        "quantities",
        "variants",
        "words",
    )

    def __init__(self) -> None:
        self.checked = 0
        self.numbers: list[str] = []
        self.hard: list[str] = []
        self.entities: list[str] = []
        self.words: list[str] = []
        self.derived: list[str] = []
        self.variants: list[str] = []
        self.date_conflicts: list[str] = []
        self.count_conflicts: list[str] = []
        self.consumed: list[tuple[int, int]] = []
        self.quantities: list[Quantity] = []

    @property
    def certain(self) -> bool:
        """Enough is found to stop reading slower spellings: a fail, or a name for the judge to check (the
        judge reads the whole answer; one named term sends it up as surely as five)."""
        return bool(self.hard or self.entities or self.date_conflicts or self.count_conflicts)

    def inside(self, start: int, end: int) -> bool:
        if not self.consumed:
            return False
        return any(s <= start and end <= e for s, e in self.consumed)


def check_grounding(answer: str, contexts: EvidenceIndex, question: EvidenceIndex) -> GroundingReport:
    """Terms the question already names are not the answer's invention, so both count as evidence."""
    answer = fold(answer)
    found = _Findings()
    word_pattern = _ASCII_WORD if answer.isascii() else _WORD  # the ASCII class is a third faster
    matches = list(word_pattern.finditer(answer))
    originals = word_pattern.findall(answer)
    lowered = word_pattern.findall(answer.lower())
    if len(lowered) != len(originals):  # lower() changed a word's shape (rare, non-ASCII)
        lowered = [w.lower() for w in originals]
    words = set(lowered)
    digits = _HAS_DIGIT.search(answer) is not None
    if digits and (_NUMERIC_DATE.search(answer) or not words.isdisjoint(MONTHS)):
        _check_dates(answer, contexts, question, found)
    spelled = words & NUMBER_WORDS
    # A number word the contexts (or the question) write the same way needs no reading ("the first film").
    number_words = any(not (contexts.has(w) or question.has(w)) for w in spelled - _JOINERS)
    if digits or number_words:
        _check_numbers(answer, contexts, question, found, words=number_words)
    _check_words(answer, matches, originals, lowered, contexts, question, found)
    return GroundingReport(
        found.checked,
        tuple(found.numbers),
        tuple(found.entities),
        tuple(found.words),
        tuple(found.hard),
        tuple(found.derived),
        tuple(found.variants),
        tuple(found.date_conflicts),
        tuple(found.count_conflicts),
    )


def _check_dates(answer: str, contexts: EvidenceIndex, question: EvidenceIndex, found: _Findings) -> None:
    for mention in find_dates(answer):
        if any(_parts_stated(r, contexts) or _parts_stated(r, question) for r in mention.readings):
            found.consumed.append((mention.start, mention.end))
            found.checked += 1
            continue
        known = contexts.dates + question.dates
        if any(agrees(r, k) and _overlap(r, k) >= 2 for r in mention.readings for k in known):
            found.consumed.append((mention.start, mention.end))  # the same date in another format
            found.checked += 1
            continue
        clash = [(r, k) for r in mention.readings for k in known if conflict(r, k)]
        if clash and len(mention.readings) == 1:
            found.checked += 1
            reading, context_date = clash[0]
            found.date_conflicts.append(
                f"answer gives the date {mention.raw!r} ({show(reading)}); the context has {show(context_date)}"
            )
            found.consumed.append((mention.start, mention.end))


def _parts_stated(date: Ymd, evidence: EvidenceIndex) -> bool:
    """Every part of the date appears in the evidence on its own (the fast path, before parsing its dates)."""
    year, month, day = date
    if year is not None and not evidence.has_number(float(year)):
        return False
    if day is not None and not evidence.has_number(float(day)):
        return False
    if month is not None:
        names = [name for name, number in MONTHS.items() if number == month]
        if not any(evidence.has(name) for name in names):
            return False
        return bool(year or day)
    return True


def _overlap(a: Ymd, b: Ymd) -> int:
    return sum(x is not None and y is not None for x, y in zip(a, b, strict=True))


def _check_numbers(
    answer: str, contexts: EvidenceIndex, question: EvidenceIndex, found: _Findings, *, words: bool
) -> None:
    known: Known | None = None
    for quantity in quantities(answer, words=words):
        if found.inside(quantity.start, quantity.end):
            continue
        found.checked += 1
        found.consumed.append((quantity.start, quantity.end))
        found.quantities.append(quantity)
        if _written(quantity, contexts) or _written(quantity, question):
            continue
        spelled = " ".join(_TOKEN.findall(quantity.raw.lower()))
        if quantity.is_word and (contexts.has(spelled) or question.has(spelled)):
            continue  # "twelve" where a context writes "twelve"
        if found.certain:
            continue  # already proven wrong: the slow readings would only add work, not a verdict
        if _stated(quantity, contexts.values) or _stated(quantity, question.values):
            continue
        decade = _decade(answer, quantity)
        if decade is not None:
            if not any(e.has_number(y) for y in decade for e in (contexts, question)):
                found.derived.append(f"answer names the decade {quantity.raw!r}s, and no context has a year in it")
            continue  # "the early 70s" for 1972: a decade is too loose to be proof either way
        if known is None:
            known = Known(contexts.values | question.values)
        how = (
            _rounds(answer, quantity, known)
            or _range_end(answer, quantity, contexts, question)
            or next((h for v in quantity.values if (h := derivation(v, known))), None)
        )
        if how is None and _is_year(quantity) and contexts.relative_time:
            how = "a year the context gives relative to its own time ('next year', 'last season')"
        if how is not None:
            found.derived.append(f"answer states {quantity.raw!r}, which no context states; it could be {how}")
            continue
        found.numbers.append(quantity.raw)
        if not any(0 <= v <= SMALL_NUMBER and (v == int(v) or quantity.is_word) for v in quantity.values):
            found.hard.append(quantity.raw)  # "two", "half", "7" are paraphrased too often to be proof
            continue
        counted = _counted(answer, quantity, question)
        clash = count_conflict(counted, quantity.values, contexts, _COMMON) if counted else None
        if clash:
            found.count_conflicts.append(f"answer says {quantity.raw!r} ({counted}); {clash}")


def _precision(value: float) -> float:
    """The place value of the last significant digit: 500,000 -> 100,000; 181e6 -> 1e6; 1.5 -> 0.1."""
    if value != int(value):
        text = f"{value:.10g}"
        return 10.0 ** -len(text.partition(".")[2]) if "e" not in text else 0.0
    whole, place = int(abs(value)), 1
    while whole and whole % 10 == 0:
        whole //= 10
        place *= 10
    return float(place)


def _rounds(answer: str, quantity: Quantity, known: Known) -> str | None:
    """A context value the answer's number rounds to its own last significant digit: to the nearest, or
    down ("over $181 million" for 181,674,817, "more than 500,000" for 572,206), or after "nearly",
    "almost", "about" and the like, up ("nearly 40" for 38)."""
    up: bool | None = None
    ordered = known.ordered
    for value in quantity.values:
        place = _precision(value)
        if value <= 0 or place <= 0:
            continue
        for k in ordered[bisect_right(ordered, value - place) : bisect_left(ordered, value + place)]:
            if k <= 0 or k == value:
                continue
            if up is None:
                up = _UPPER_BOUND.search(answer, max(0, quantity.start - 24), quantity.start) is not None
            if abs(k - value) <= place / 2 or value <= k < value + place or (up and value - place < k < value):
                return f"{k:,.10g} rounded"
    return None


def _range_end(answer: str, quantity: Quantity, contexts: EvidenceIndex, question: EvidenceIndex) -> str | None:
    """The end of a range written short on one side and long on the other: "2016-2020" for "2016-20"."""
    value = quantity.values[0]
    if value != int(value):
        return None
    before = _RANGE_START.search(answer, max(0, quantity.start - 8), quantity.start)
    after = _RANGE_NEXT.match(answer, quantity.end)
    for evidence in (contexts, question):
        if before is not None:  # the answer's end: "2016-2020", where a context writes "2016-20"
            start, end = before.group(1), str(int(value))
            if (
                len(end) == len(start)
                and end[:2] == start[:2]
                and re.search(rf"{start}\s*[-/]\s*{end[2:]}(?!\d)", evidence.lowered)
            ):
                return f"the range {start}-{end[2:]} written in full"
        if after is not None:  # the answer's start of a short range: "2016-20", where a context writes "2016-2020"
            start, end = str(int(value)), after.group(1)
            if len(end) < len(start) and evidence.has_number(float(start[: len(start) - len(end)] + end)):
                return f"the range {start}-{end} written short"
        if before is not None:  # the answer's short end: "2016-20" where a context writes "2016-2020"
            start, end = before.group(1), str(int(value))
            if len(end) < len(start) and evidence.has_number(float(start[: len(start) - len(end)] + end)):
                return f"the range {start}-{end} written short"
    return None


def _is_year(quantity: Quantity) -> bool:
    value = quantity.values[0]
    return 1900 <= value <= 2100 and value == int(value)


def _counted(answer: str, quantity: Quantity, question: EvidenceIndex) -> str | None:
    """What a number counts: the word after it ("3 members"), or for a bare number the first content word
    after the question's "how many" ("how many young adult novels")."""
    after = _TOKEN.findall(answer[quantity.end :].lower().split(".")[0].split(",")[0])[:1]
    if after and after[0] not in _COMMON:
        return after[0]
    if not answer[quantity.end :].strip(" .!") and not answer[: quantity.start].strip(" \"'"):
        asked = question.phrases
        at = asked.find(" how many ")
        if at >= 0:
            return next((w for w in asked[at + 10 :].split()[:3] if w not in _COMMON), None)
    return None


def _decade(answer: str, quantity: Quantity) -> range | None:
    """The years of "1970s", "70s" or "1920's" (two digits are read as the 1900s)."""
    follows = answer[quantity.end : quantity.end + 2]
    value = quantity.values[0]
    if not (follows[:1] == "s" or follows == "'s") or value % 10 or not (10 <= value < 100 or 1000 <= value < 2100):
        return None
    start = int(value) + (1900 if value < 100 else 0)
    return range(start, start + 10)


def _written(quantity: Quantity, evidence: EvidenceIndex) -> bool:
    for value in quantity.values:
        if evidence.has_number(value) or (quantity.percent and evidence.has_number(round(value / 100, 6))):
            return True
    return False


def _stated(quantity: Quantity, known: set[float]) -> bool:
    for value in quantity.values:
        if value in known or (quantity.percent and (value / 100 in known or round(value / 100, 6) in known)):
            return True
    return False


def _check_words(
    answer: str,
    matches: list[re.Match[str]],
    originals: list[str],
    lowered_words: list[str],
    contexts: EvidenceIndex,
    question: EvidenceIndex,
    found: _Findings,
) -> None:
    # Only capitalised words and long words can be evidence; everything else is skipped in one pass.
    candidates = [
        (i, matches[i], w, lowered)
        for i, (w, lw) in enumerate(zip(originals, lowered_words, strict=True))
        if (w[0].isupper() or len(w) >= 6) and (lowered := lw[:-2] if lw.endswith("'s") else lw) not in _COMMON
    ]
    if not candidates:
        return
    # Words that belong to a number or a date ("4.7 million", "31 March 1889"), or are a number's unit
    # ("2 GB", "212 degrees Fahrenheit"), by start position.
    skip = {_UNIT_GAP.match(answer, q.end).end() for q in found.quantities}  # type: ignore[union-attr]  # matches ""
    for start, end in found.consumed:
        skip.update(m.start() for _, m, _, _ in candidates if start <= m.start() and m.end() <= end)
    bare: bool | None = None
    seen: set[str] = set()
    for index, match, word, lowered in candidates:
        if lowered in seen or match.start() in skip:
            continue
        seen.add(lowered)
        if not word[0].isupper():
            _check_rare(word, lowered, contexts, question, found)
            continue
        roman = _roman(word) if word.isupper() else None
        if roman is not None and not (contexts.has(lowered) or question.has(lowered)):
            found.checked += 1
            if roman not in contexts.values and roman not in question.values:
                found.numbers.append(word)
                if roman > SMALL_NUMBER:
                    found.hard.append(word)
            continue
        if _sentence_start(answer, match.start()):
            if bare is None:
                bare = all(m.group()[0].isupper() or m.group().lower() in _COMMON for m in matches)
            if not _starts_a_name(word, index, matches, bare):
                if _unknown_word(word, lowered, contexts, question):  # "Despite", or "Chicago": only a judge can say
                    found.checked += 1
                    found.words.append(word)
                else:
                    _check_rare(word, lowered, contexts, question, found)
                continue
        if found.certain and not (contexts.has(lowered) or question.has(lowered)):
            continue  # already proven wrong: other spellings would only add work, not a verdict
        found.checked += 1
        verdict = name_support(word, lowered, answer, match, contexts, question)
        if verdict is None:
            found.entities.append(word)
        elif verdict:
            found.variants.append(verdict)


def _sentence_start(text: str, at: int) -> bool:
    """Nothing but quotes and brackets before, a bullet or a number opening a line ("- Full name", "2) Born"),
    or a sentence end that is not an abbreviation's ("Gen. Grant", "J. Smith"; but "Rage. Additionally")."""
    i = at - 1
    while i >= 0 and text[i] in " \t\"'([":
        i -= 1
    if i < 0 or text[i] in "!?:;\n":
        return True
    if text[i] in "-*•)":  # a bullet, or "1)", "a)": a list item when only a marker opens its line
        marker = text.rfind("\n", 0, i) + 1
        return _LIST_MARKER.fullmatch(text, marker, i + 1) is not None
    if text[i] != ".":
        return False
    j = i
    while j > 0 and text[j - 1].isalpha():
        j -= 1
    before = text[j:i]
    if j > 0 and text[j - 1].isdigit():
        return True  # "the mid-1990s. Notably": a number's ending, not an initial
    return not (len(before) == 1 or before.lower() in _ABBREVIATIONS or (before and not _VOWEL.search(before)))


def _check_rare(word: str, lowered: str, contexts: EvidenceIndex, question: EvidenceIndex, found: _Findings) -> None:
    if len(lowered) < 6:
        return
    found.checked += 1
    stem = lowered[:5]
    if not (contexts.has(lowered) or question.has(lowered) or contexts.has_prefix(stem) or question.has_prefix(stem)):
        found.words.append(word)


def _roman(word: str) -> float | None:
    if not _ROMAN.match(word):
        return None
    total = 0
    for i, letter in enumerate(word):
        value = _ROMAN_VALUES[letter]
        total += -value if i + 1 < len(word) and _ROMAN_VALUES[word[i + 1]] > value else value
    return float(total)


def _starts_a_name(word: str, index: int, matches: list[re.Match[str]], bare: bool) -> bool:
    """A capitalised first word is a name when the answer is a bare name, or when it begins a run of
    capitalised words without the ending of an everyday adjective, adverb or agent noun ("Former", "Director")."""
    if len(word) < 3:
        return False
    if bare or word.endswith("'s"):
        return True  # a bare name, or a possessive ("Bohr's theory")
    if word.lower().endswith(_WORD_ENDINGS):
        return False
    following = matches[index + 1].group() if index + 1 < len(matches) else ""
    return following[:1].isupper() and matches[index + 1].start() - matches[index].end() <= 2


def _unknown_word(word: str, lowered: str, contexts: EvidenceIndex, question: EvidenceIndex) -> bool:
    """A first word that no text has in any form (not even its stem) and that has no everyday ending: a name
    ("Chicago hosted it") as often as an everyday word ("Despite", "Meanwhile"), so it is listed among the
    unsupported words, never the names."""
    if len(lowered) < 4 or lowered.endswith(_WORD_ENDINGS) or word.isupper():
        return False
    stem = lowered[: max(4, min(5, len(lowered) - 1))]
    return not any(e.has(lowered) or e.has_prefix(stem) for e in (contexts, question))
