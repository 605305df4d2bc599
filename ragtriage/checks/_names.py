"""Whether a name of the answer is a name of the contexts written another way.

An acronym ("NYC" for "New York City", "United Nations" for "UN"), an abbreviation ("Gen." for
"General", "St" for "Saint", and back), another hyphenation ("Cocacola" for "Coca-Cola"), another
grammatical form (a plural, a demonym), or a transliteration-like spelling (a signal only).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ragtriage.checks._dates import MONTHS
from ragtriage.checks._normalize import COMMON_WORDS, DEMONYMS, skeleton, variant_kind

if TYPE_CHECKING:
    from ragtriage.checks.grounding import EvidenceIndex

NAME_RUN = re.compile(r"[A-Z][^\W_]*(?:[\s-]+(?:(?:of|the|and|for|de|du|la|von|van)[\s-]+)?[A-Z][^\W_]*)*")
#: Acronyms of ordinary words and phrases that no run of initials spells ("TV" for "television").
COMMON_ACRONYMS = {
    "tv": ("television", "tv"), "us": ("united states", "america", "american"),
    "usa": ("united states", "america", "american"), "uk": ("united kingdom", "britain", "british"),
    "eu": ("european union",), "un": ("united nations",), "fc": ("football club", "club"),
    "ceo": ("chief executive",), "pm": ("prime minister",), "mp": ("member of parliament", "parliament"),
    "gp": ("grand prix", "general practitioner", "doctor"), "dj": ("disc jockey",), "hq": ("headquarters",),
}  # fmt: skip
_DEMONYMS_OF: dict[str, list[str]] = {}
for _demonym, _country in DEMONYMS.items():
    _DEMONYMS_OF.setdefault(_country, []).append(_demonym)
RUN_LINKS = frozenset("of the and for de du la le von van der den y et da di".split())


def name_support(
    word: str, lowered: str, answer: str, match: re.Match[str], contexts: EvidenceIndex, question: EvidenceIndex
) -> str | None:
    """``""`` when the name is stated (in some form or spelling), a note when only a transliteration-like
    spelling is, ``None`` when nothing is."""
    spaced = lowered.replace("'", " ")  # "O'Hara" is indexed as "o hara"
    for evidence in (contexts, question):
        if evidence.has(spaced) or (lowered.endswith("s") and evidence.has(spaced[:-1])):
            return ""
    if len(word) == 1:
        return ""  # an initial: "J. Smith" for "John Smith" proves nothing
    if lowered in MONTHS and any(d[1] == MONTHS[lowered] for d in contexts.dates + question.dates):
        return ""
    for evidence in (contexts, question):
        if _split_differently(lowered, evidence) or _acronym(word, lowered, answer, match, evidence):
            return ""
        if _abbreviation(lowered, answer, match, evidence):
            return ""
        related = evidence.words_with_prefix(lowered[:4]) if len(lowered) >= 4 else ()
        demonym = DEMONYMS.get(lowered)
        if any(variant_kind(lowered, name) for name in related) or (demonym and evidence.has(demonym)):
            return ""
        if any(evidence.has(name) for name in _DEMONYMS_OF.get(lowered, ())):
            return ""
    for evidence in (contexts, question):
        spelled = evidence.skeletons.get(skeleton(lowered))
        if spelled and abs(len(spelled) - len(lowered)) <= 3:
            return f"answer writes {word!r} where a context has {spelled.capitalize()!r}: another spelling, or a name"
    return None


def _split_differently(lowered: str, evidence: EvidenceIndex) -> bool:
    """ "Cocacola" where a context writes "Coca-Cola" or "Coca Cola"."""
    return any(evidence.has(f"{lowered[:i]} {lowered[i:]}") for i in range(2, len(lowered) - 1))


def _acronym(word: str, lowered: str, answer: str, match: re.Match[str], evidence: EvidenceIndex) -> bool:
    """ "NYC" where a context writes "New York City", and "United Nations" where it writes "UN"."""
    if word.isupper() or (word[:-1].isupper() and word[-1] == "s"):  # "MPs": an acronym's plural
        letters = lowered if word.isupper() else lowered[:-1]
        if not 2 <= len(letters) <= 8:
            return False
        if letters in evidence.acronyms or letters in evidence.word_initials:
            return True
        return any(evidence.has(phrase) for phrase in COMMON_ACRONYMS.get(letters, ()))
    for run in NAME_RUN.finditer(answer):
        if run.start() <= match.start() < run.end():
            words = [w for w in re.split(r"[\s-]+", run.group()) if w.lower() not in RUN_LINKS | COMMON_WORDS]
            initials = "".join(w[0] for w in words).upper()
            if len(words) < 2 or initials not in evidence.text:
                return False
            return re.search(rf"\b{initials}\b", evidence.text) is not None
    return False


def _abbreviation(lowered: str, answer: str, match: re.Match[str], evidence: EvidenceIndex) -> bool:
    """ "Gen." for "General", "St" for "Saint" or "Street", and "Saint" where a context writes "St."."""
    if len(lowered) <= 4 or answer[match.end() : match.end() + 1] == ".":
        if evidence.has_prefix(lowered) and re.search(rf" {lowered}[a-z]+ ", evidence.padded):
            return True
        letters = "".join(f"[a-z]*{re.escape(c)}" for c in lowered[1:])
        if re.search(rf" {re.escape(lowered[0])}{letters} ", evidence.padded):
            return True
    for short in evidence.short_words.get(lowered[0], ()):
        if short != lowered and (lowered.startswith(short) or _is_contraction(short, lowered)):
            return True
    return False


def _is_contraction(short: str, long: str) -> bool:
    """``short`` keeps the first and last letter of ``long`` and some letters between, in order ("st", "saint")."""
    if short[0] != long[0] or short[-1] != long[-1]:
        return False
    rest = iter(long[1:-1])
    return all(c in rest for c in short[1:-1])


def initials(text: str) -> set[str]:
    """Initials of each run of capitalised words and of its sub-runs, with and without linking words."""
    found: set[str] = set()
    for run in NAME_RUN.finditer(text):
        words = re.split(r"[\s-]+", run.group())
        for i, first in enumerate(words):
            if first.lower() in RUN_LINKS:
                continue
            strict = loose = ""
            for word in words[i : i + 8]:
                loose += word[0].lower()
                if word.lower() not in RUN_LINKS:
                    strict += word[0].lower()
                if len(strict) >= 2:
                    found.update((strict, loose))
    return found
