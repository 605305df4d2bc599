"""Dates as (year, month, day): "1889-03-31", "31 March 1889", "March 31st, 1889" and "31/03/1889" are one date.

A numeric date whose day and month could swap ("03/04/1889") keeps both readings. A part a date
does not give (a day in "March 1889") is ``None`` and matches anything.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MONTH_NAMES = "january february march april may june july august september october november december".split()
#: Month names and their abbreviations, to month numbers ("sept" and "sep" both).
MONTHS: dict[str, int] = {
    **{m: i + 1 for i, m in enumerate(_MONTH_NAMES)},
    **{m[:3]: i + 1 for i, m in enumerate(_MONTH_NAMES) if m != "may"},
    "sept": 9,
}
_M = r"(?P<m>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_D = r"(?P<d>[0-3]?\d)(?:st|nd|rd|th)?"
_Y = r"(?P<y>\d{4})"
_PATTERNS = (
    re.compile(r"\b(?P<y>\d{4})[-/.](?P<mn>[01]?\d)[-/.](?P<d>[0-3]?\d)\b"),
    re.compile(r"\b(?P<a>[0-3]?\d)[/.-](?P<b>[0-3]?\d)[/.-](?P<y>\d{4})\b"),
    re.compile(rf"\b(?:the\s+)?{_D}\s+(?:of\s+)?{_M}(?:,?\s+{_Y})?\b", re.IGNORECASE),
    re.compile(rf"\b{_M}\s+(?:the\s+)?{_D}\b(?:,?\s+{_Y})?", re.IGNORECASE),
    re.compile(rf"\b{_M},?\s+(?:of\s+)?{_Y}\b", re.IGNORECASE),
)

Ymd = tuple[int | None, int | None, int | None]


@dataclass(frozen=True, slots=True)
class DateMention:
    """A date as written, span ``start:end``, and its readings as (year, month, day)."""

    raw: str
    readings: tuple[Ymd, ...]
    start: int
    end: int


def find_dates(text: str) -> list[DateMention]:
    """Dates in ``text``, the longest form first where two patterns overlap."""
    found: list[DateMention] = []
    taken: list[tuple[int, int]] = []
    for pattern in _PATTERNS:
        for match in pattern.finditer(text):
            if any(s < match.end() and match.start() < e for s, e in taken):
                continue
            readings = _readings(match.groupdict())
            if readings:
                found.append(DateMention(match.group(), readings, match.start(), match.end()))
                taken.append((match.start(), match.end()))
    return found


def _readings(groups: dict[str, str | None]) -> tuple[Ymd, ...]:
    year = int(y) if (y := groups.get("y")) else None
    if a_text := groups.get("a"):
        a, b = int(a_text), int(groups["b"] or 0)
        options = {(year, m, d) for m, d in ((a, b), (b, a)) if 1 <= m <= 12 and 1 <= d <= 31}
        return tuple(sorted(options, key=str))
    month = int(mn) if (mn := groups.get("mn")) else MONTHS.get((groups.get("m") or "").lower().rstrip("."))
    day = int(d) if (d := groups.get("d")) else None
    if month is None or not 1 <= month <= 12 or (day is not None and not 1 <= day <= 31):
        return ()
    return ((year, month, day),)


def agrees(a: Ymd, b: Ymd) -> bool:
    """No part both dates give differs."""
    return all(x is None or y is None or x == y for x, y in zip(a, b, strict=True))


def conflict(a: Ymd, b: Ymd) -> bool:
    """The two dates give at least two parts, share all but one, and differ in that one: the same event
    told with another day, month or year."""
    both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    return len(both) >= 2 and sum(x != y for x, y in both) == 1


def show(date: Ymd) -> str:
    year, month, day = date
    parts = [str(day) if day else "", _MONTH_NAMES[month - 1].capitalize() if month else "", str(year or "")]
    return " ".join(p for p in parts if p)
