"""Numbers as values: "12.5%", "twelve and a half percent" and "12,5 per cent" are one quantity.

``quantities`` reads digits (thousands separators, decimal commas, "4.7 million") and number words
("one hundred and twenty", "nineteen eighty-four", "a dozen", "three quarters") into values.
``derivation`` says how a value the contexts do not state could still follow from values they do
state (a unit conversion, a sum, a difference, a product, a per-period rate): such a value is not
proof of a hallucination.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass

_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()  # noqa: E501
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINALS = "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth".split()
#: Every number word and its value; scales multiply, fractions divide (one place for all of them).
WORD_VALUES: dict[str, float] = {
    **{w: float(i) for i, w in enumerate(_UNITS)},
    **{w: float(20 + 10 * i) for i, w in enumerate(_TENS)},
    **{w: float(i + 1) for i, w in enumerate(_ORDINALS)},
    **{w[:-1] + "ieth": float(20 + 10 * i) for i, w in enumerate(_TENS)},
    "dozen": 12.0, "once": 1.0, "twice": 2.0, "single": 1.0, "double": 2.0, "triple": 3.0,
    "hundred": 100.0, "hundredth": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12,
}  # fmt: skip
#: Words and abbreviations that multiply the digits before them.
SCALES = {"hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12, "k": 1e3, "bn": 1e9,
          "mn": 1e6}  # fmt: skip
_FRACTIONS = {"half": 2.0, "halves": 2.0, "third": 3.0, "thirds": 3.0, "quarter": 4.0, "quarters": 4.0}
_DIGIT_RUN = re.compile(r"[0-9]+(?:[.,][0-9]+)*")  # ASCII digits: the text is folded (NFKD) first
#: What may follow digits: an ordinal ending, a scale word or abbreviation, a percent sign or word.
_AFTER_DIGITS = re.compile(
    r"(?:\s*(?:st|nd|rd|th)\b)?(?:\s*-?\s*(?P<scale>hundred|thousand|million|billion|trillion)\b|(?P<abbr>bn|mn|k)\b)?"
    r"(?P<pct>\s*(?:%|per\s*-?\s*cent\b|percent\b|pct\b))?",
    re.IGNORECASE,
)
_PERCENT_AFTER = re.compile(r"\s*(?:%|per\s*-?\s*cent\b|percent\b|pct\b)", re.IGNORECASE)
_LETTERS = re.compile(r"[^\W\d_]+")
#: Words that count (not ordinals, not scales): "five novels" counts novels, "the fifth novel" does not.
CARDINALS = {w: float(i) for i, w in enumerate(_UNITS)} | {w: float(20 + 10 * i) for i, w in enumerate(_TENS)}
#: Every word that can be (part of) a number, and the scale words that multiply digits ("4.7 million").
NUMBER_WORDS = frozenset((*WORD_VALUES, *_FRACTIONS))
SCALE_WORDS = ("hundred", "thousand", "million", "billion", "trillion")
_ORDINAL_WORDS = frozenset((*_ORDINALS, *(w[:-1] + "ieth" for w in _TENS), "hundredth"))
#: Factors a rewording applies without the contexts stating them: calendars, clocks, metric and binary
#: prefixes, percent, and the common imperial/metric conversions.
EXACT_FACTORS = (12.0, 7.0, 24.0, 60.0, 100.0, 365.0, 52.0, 30.0, 1e3, 1024.0, 3600.0, 1e6, 1e9)
#: Conversions whose results are usually rounded: a 0.3% tolerance on top of the value's own precision.
ROUNDED_FACTORS = (1.609344, 2.54, 0.3048, 0.9144, 0.4536, 28.35)


@dataclass(slots=True)
class Quantity:
    """A number as written (``raw``, span ``start:end``) and the values it may mean (a "1.500" is two)."""

    raw: str
    values: tuple[float, ...]
    start: int
    end: int
    percent: bool = False
    is_word: bool = False


def digit_values(raw: str) -> tuple[float, ...]:
    """Readings of a digit string: "1,500" and "1.500" may each be a thousands group or a decimal."""
    raw = raw.strip(".,").replace(" ", "")
    if len(raw) > 30:
        return ()  # no quantity has 30 digits; a run this long is an identifier or junk (and would overflow)
    if raw.isdigit():
        return (float(raw),)
    if not raw:
        return ()
    readings = []
    groups = re.split(r"[.,]", raw)
    if all(len(g) == 3 for g in groups[1:]):
        readings.append(float("".join(groups)))
    if raw.count(".") + raw.count(",") == 1:
        readings.append(float(raw.replace(",", ".")))
    elif raw.count(".") == 1 and "," in raw and raw.index(",") < raw.index("."):
        readings.append(float(raw.replace(",", "")))  # 1,234.5
    elif raw.count(",") == 1 and "." in raw and raw.index(".") < raw.index(","):
        readings.append(float(raw.replace(".", "").replace(",", ".")))  # 1.234,5
    return tuple(dict.fromkeys(readings))


def words_value(words: list[str]) -> float | None:
    """The value of number words in order ("one hundred and twenty" 120, "nineteen eighty-four" 1984,
    "twelve and a half" 12.5, "three quarters" 0.75); ``None`` when they do not form one number."""
    total = current = 0.0
    seen = after_and = ended = False
    last: float | None = None  # value of the previous unit/ten/teen word; None after a scale or at the start
    for word in words:
        if ended:
            return None
        if word == "and":
            after_and = True
            continue
        if word in ("a", "an"):
            last, seen = None, seen
            continue
        if word in _FRACTIONS and not (word in WORD_VALUES and not seen):
            if last is not None and last < 10 and not after_and:
                current += last / _FRACTIONS[word] - last
            else:
                current += 1 / _FRACTIONS[word]
            seen = ended = True
            continue
        value = WORD_VALUES.get(word)
        if value is None:
            return None
        if after_and and last is not None:
            return None  # "one and two" is two numbers
        if value >= 1000:
            total += (current or 1.0) * value
            current, last = 0.0, None
        elif word in ("hundred", "dozen"):
            current, last = (current or 1.0) * value, None
        elif last is None:
            current += value
            last = value
        elif 10 <= last < 100 and value >= 10:
            current, last = current * 100 + value, value  # "nineteen eighty", "twenty twenty"
        elif last >= 20 and last % 10 == 0 and value < 10:
            current, last = current + value, value
        else:
            return None
        seen, after_and = True, False
        ended = word in _ORDINAL_WORDS
    return total + current if seen else None


def quantities(text: str, *, words: bool = True) -> list[Quantity]:
    """Every number in ``text``, digits or (unless ``words`` is false) words, with its scale ("4.7 million")
    and percent sign applied."""
    found: list[Quantity] = []
    resume = 0
    for match in _DIGIT_RUN.finditer(text):
        start, stop = match.span()
        if start < resume or (start and (text[start - 1].isalnum() or text[start - 1] in ".,")):
            continue  # inside the last number, or part of a code or a longer token ("A320", "v1.2")
        body = match.group()
        if len(body) <= 3 and body.isdigit():  # "81 044": thousands grouped by spaces
            while (
                text[stop : stop + 4].startswith(" ")
                and text[stop + 1 : stop + 4].isdigit()
                and len(text[stop + 1 : stop + 4]) == 3
                and not text[stop + 4 : stop + 5].isdigit()
            ):
                stop += 4
            body = text[start:stop]
        after = _AFTER_DIGITS.match(text, stop) if _may_follow(text, stop) else None
        scale = SCALES.get((after.group("scale") or after.group("abbr") or "").lower(), 1.0) if after else 1.0
        values = tuple(v * scale for v in digit_values(body))
        if values:
            end = after.end() if after else stop
            found.append(Quantity(text[start:end].strip(), values, start, end, bool(after and after.group("pct"))))
        resume = stop
    if not words:
        return found
    lowered = text.lower()
    tokens = [(m.start(), m.end()) for m in _LETTERS.finditer(lowered)]
    names = [lowered[s:e] for s, e in tokens]
    hits = [i for i, w in enumerate(names) if w in NUMBER_WORDS or w in _JOINERS]
    digit_spans = [(q.start, q.end) for q in found]
    run: list[int] = []
    for i in [*hits, -1]:
        if i >= 0 and any(s <= tokens[i][0] < e for s, e in digit_spans):
            continue  # the "million" of "4.7 million"
        if i >= 0 and (not run or i == run[-1] + 1) and (run or names[i] not in _JOINERS):
            run.append(i)
            continue
        while run and names[run[-1]] in _JOINERS:
            run.pop()
        if run:
            found.extend(_word_quantities(text, [tokens[k] for k in run], [names[k] for k in run]))
        run = [i] if i >= 0 and names[i] not in _JOINERS else []
    return found


_JOINERS = frozenset(("and", "a", "an"))


def _word_quantities(text: str, spans: list[tuple[int, int]], words: list[str]) -> list[Quantity]:
    """One quantity for a run of number words that make one number, else one per number word."""
    start, end = spans[0][0], spans[-1][1]
    value = words_value(words)
    if value is not None:
        percent = _PERCENT_AFTER.match(text, end)
        stop = percent.end() if percent else end
        return [Quantity(text[start:stop].strip(), (value,), start, stop, bool(percent), True)]
    singles = []
    for (s, e), word in zip(spans, words, strict=True):
        single = words_value([word])
        if single is not None:
            singles.append(Quantity(text[s:e], (single,), s, e, False, True))
    return singles


def _may_follow(text: str, end: int) -> bool:
    """A cheap look at what follows digits, before the regex for ordinals, scales and percent signs."""
    peek = text[end : end + 3].lstrip(" -").lower()
    return peek[:1] in _FOLLOW_INITIALS


_FOLLOW_INITIALS = frozenset("%stnrdhmbkp")


def token_values(tokens: list[str]) -> set[float]:
    """The values of the number words among lower-case ``tokens`` (runs like "one hundred and twenty" as one)."""
    hits = [i for i, t in enumerate(tokens) if t in NUMBER_WORDS]
    found: set[float] = set()
    start = 0
    for k in range(1, len(hits) + 1):
        # a run goes on while only "and", "a", "an" stand between two number words ("twelve and a half")
        if k < len(hits) and hits[k] - hits[k - 1] <= 3 and _JOINERS.issuperset(tokens[hits[k - 1] + 1 : hits[k]]):
            continue
        words = tokens[hits[start] : hits[k - 1] + 1]
        while words and words[-1] in _JOINERS:
            words.pop()
        if words and not all(w in SCALES for w in words):  # a bare "million" (of "4.7 million") is no value
            value = words_value(words)
            found.update((value,) if value is not None else (v for w in words if (v := words_value([w])) is not None))
        start = k
    return found


def decimals(value: float) -> int:
    text = repr(value)
    return 0 if text.endswith(".0") else len(text.split(".")[1]) if "." in text and "e" not in text else 0


class Known:
    """Known values prepared once per sample for ``derivation``: sorted, and rounded for exact lookups."""

    __slots__ = ("_exact", "ordered", "raw", "whole")

    def __init__(self, values: Iterable[float]) -> None:
        self.ordered = sorted(v for v in values if v)
        self.raw = set(self.ordered)
        self.whole = [v for v in self.ordered if v == int(v)]
        self._exact: set[float] | None = None

    @property
    def exact(self) -> set[float]:
        """The values rounded to six decimals, for arithmetic on fractions (built on first use)."""
        if self._exact is None:
            self._exact = {round(v, 6) for v in self.ordered}
        return self._exact


def derivation(value: float, known: Known) -> str | None:
    """How ``value`` follows from ``known`` values, or ``None``: a conversion by an implicit factor (exact,
    or rounded to the value's precision), a temperature conversion, or one arithmetic step between two
    known values."""
    ordered = known.ordered
    if not ordered:
        return None
    precision = 0.5 * 10 ** -decimals(value)
    if (how := _converted(value, ordered, EXACT_FACTORS, precision)) is not None:
        return how
    for source in ((value - 32) / 1.8, value * 1.8 + 32):
        if (k := _near(ordered, source, 1.0)) is not None:
            return f"a temperature conversion of {_show(k)}"
    how = _one_step_whole(value, known) if value == int(value) else _one_step(value, known)
    if how is not None:
        return how
    # Rounded conversions: 0.6% of the value, plus the value's own precision only if it has decimals, so
    # that a small whole number is not "derived" from any number times 2.2 (13 is not 6 lb in kg).
    loose = abs(value) * 0.006 + (precision if decimals(value) else 0.0)
    return _converted(value, ordered, ROUNDED_FACTORS, loose)


def _one_step(value: float, known: Known) -> str | None:
    exact = known.exact
    for a in known.ordered:
        if round(value - a, 6) in exact:
            return f"{_show(a)} + {_show(value - a)}"
        if round(a - value, 6) in exact:
            return f"{_show(a)} - {_show(a - value)}"
        if round(value + a, 6) in exact:
            return f"{_show(value + a)} - {_show(a)}"
        if abs(a) != 1 and abs(value / a) != 1 and round(value / a, 6) in exact:
            return f"{_show(a)} x {_show(value / a)}"
        if value and abs(a / value) != 1 and round(a / value, 6) in exact:
            return f"{_show(a)} / {_show(a / value)}"
    return None


def _one_step_whole(value: float, known: Known) -> str | None:
    """``_one_step`` for a whole number: sums and differences of whole numbers are exact and need no rounding
    (a whole number is rarely the sum of two fractions the contexts state)."""
    raw = known.raw
    for a in known.whole:
        if value - a in raw:
            return f"{_show(a)} + {_show(value - a)}"
        if a - value in raw:
            return f"{_show(a)} - {_show(a - value)}"
        if value + a in raw:
            return f"{_show(value + a)} - {_show(a)}"
        if abs(a) != 1 and value % a == 0 and abs(value / a) != 1 and value / a in raw:
            return f"{_show(a)} x {_show(value / a)}"
        if value and a % value == 0 and abs(a / value) != 1 and a / value in raw:
            return f"{_show(a)} / {_show(a / value)}"
    return None


def _converted(value: float, ordered: list[float], factors: tuple[float, ...], tolerance: float) -> str | None:
    for factor in factors:
        for source, slack in ((value / factor, tolerance / factor), (value * factor, tolerance * factor)):
            if (k := _near(ordered, source, slack)) is not None:
                return f"a unit conversion of {_show(k)}"
    return None


def _near(ordered: list[float], target: float, tolerance: float) -> float | None:
    """The known value within ``tolerance`` of ``target`` (``ordered`` is sorted), if any."""
    i = bisect.bisect_left(ordered, target - tolerance)
    return ordered[i] if i < len(ordered) and ordered[i] <= target + tolerance else None


def _show(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
