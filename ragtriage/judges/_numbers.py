"""Numbers as values: "12.5%", "twelve and a half percent" and "12,5 per cent" are one quantity.

``quantities`` reads digits (thousands separators, decimal commas, "4.7 million") and number words
("one hundred and twenty", "nineteen eighty-four", "a dozen", "three quarters") into values.
``derivation`` says how a value the contexts do not state could still follow from values they do
state (a unit conversion, a sum, a difference, a product, a per-period rate): such a value is not
proof of a hallucination.
"""

from __future__ import annotations

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
_SCALES = {"hundred": 100.0, "thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12, "k": 1e3, "bn": 1e9,
           "mn": 1e6}  # fmt: skip
_FRACTIONS = {"half": 2.0, "halves": 2.0, "third": 3.0, "thirds": 3.0, "quarter": 4.0, "quarters": 4.0}
_WORD = r"(?:" + "|".join(sorted((*WORD_VALUES, *_FRACTIONS), key=len, reverse=True)) + r")"
_DIGITS = r"\d+(?:[.,]\d+)*(?:\.\d+)?"
_PHRASE = re.compile(
    rf"(?<![\w.,])(?P<body>{_DIGITS}|(?:an?\s+)?{_WORD}(?:(?:\s+and\s+|\s*-\s*|\s+)(?:an?\s+)?{_WORD})*)"
    rf"(?:\s*(?:st|nd|rd|th)\b)?(?:\s*-?\s*(?P<scale>hundred|thousand|million|billion|trillion)\b|(?P<abbr>bn|mn|k)\b)?"
    rf"(?P<pct>\s*(?:%|per\s*-?\s*cent\b|percent\b|pct\b))?",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"[\s-]+")
_ORDINAL_WORDS = frozenset((*_ORDINALS, *(w[:-1] + "ieth" for w in _TENS), "hundredth"))
#: Factors a rewording applies without the contexts stating them: calendars, clocks, metric and binary
#: prefixes, percent, and the common imperial/metric conversions.
EXACT_FACTORS = (12.0, 7.0, 24.0, 60.0, 100.0, 365.0, 52.0, 30.0, 10.0, 1e3, 1024.0, 3600.0, 1e6, 1e9)
#: Conversions whose results are usually rounded: a 0.3% tolerance on top of the value's own precision.
ROUNDED_FACTORS = (1.609344, 2.54, 0.3048, 0.9144, 0.4536, 28.35, 3.785, 0.568)


@dataclass(frozen=True, slots=True)
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
    raw = raw.strip(".,")
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
        elif value == 100:
            current, last = (current or 1.0) * 100, None
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


def quantities(text: str) -> list[Quantity]:
    """Every number in ``text``, digits or words, with its scale ("4.7 million") and percent sign applied."""
    found = []
    for match in _PHRASE.finditer(text):
        body = match.group("body")
        scale = _SCALES.get((match.group("scale") or match.group("abbr") or "").lower(), 1.0)
        percent = bool(match.group("pct"))
        if body[:1].isdigit():
            values = tuple(v * scale for v in digit_values(body))
            if values:
                found.append(Quantity(match.group().strip(), values, match.start(), match.end(), percent))
            continue
        words = [w for w in _SPLIT.split(body.lower()) if w]
        value = words_value(words)
        if value is not None:
            found.append(Quantity(match.group().strip(), (value * scale,), match.start(), match.end(), percent, True))
            continue
        for word in re.finditer(r"[^\W\d_]+", body):  # not one number: each number word on its own
            single = words_value([word.group().lower()])
            if single is not None:
                at = match.start() + word.start()
                found.append(Quantity(word.group(), (single,), at, at + len(word.group()), False, True))
    return found


def decimals(value: float) -> int:
    text = repr(value)
    return 0 if text.endswith(".0") else len(text.split(".")[1]) if "." in text and "e" not in text else 0


def derivation(value: float, known: Iterable[float]) -> str | None:
    """How ``value`` follows from ``known`` values, or ``None``: conversions by an implicit factor, then
    one arithmetic step between two known values."""
    known = [k for k in known if k]
    precision = 0.5 * 10 ** -decimals(value)
    loose = max(abs(value) * 0.003, precision)
    for k in known:
        for factors, tolerance in ((EXACT_FACTORS, precision), (ROUNDED_FACTORS, loose)):
            for factor in factors:
                if abs(k * factor - value) <= tolerance or abs(k / factor - value) <= tolerance:
                    return f"a unit conversion of {_show(k)}"
        if abs(k * 1.8 + 32 - value) <= 1 or abs((k - 32) / 1.8 - value) <= 1:
            return f"a temperature conversion of {_show(k)}"
    exact = {round(k, 6) for k in known}
    for a in known:
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


def _show(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"
