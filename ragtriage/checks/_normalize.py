"""Spelling-level folding: two spellings of one word compare equal before anything is called unsupported.

``fold`` removes accents and maps special Latin letters, typographic quotes, dashes and odd spaces to
ASCII (ASCII text, the common case, costs one ``isascii`` call). ``variant_kind`` says whether an
answer word and a context word are one name in another form (a plural, a demonym: Canada/Canadian);
``skeleton`` is a key under which transliterations (Tchaikovsky/Chaikovsky, Muhammad/Mohammed) coincide.
"""

from __future__ import annotations

import functools
import re
import unicodedata

#: Function words and the everyday vocabulary of answers: never a name, never a rare word.
COMMON_WORDS = frozenset(
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
    sure overall today thanks okay sorry yeah yep nope note please actually basically briefly answer
    """.split()
)
_SPECIAL = str.maketrans(
    {
        "ß": "ss", "ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ł": "l", "Ł": "L",
        "đ": "d", "Đ": "D", "ð": "d", "þ": "th", "Þ": "Th", "ı": "i", "’": "'", "‘": "'", "ʼ": "'", "`": "'",
        "“": '"', "”": '"', "„": '"', "«": '"', "»": '"', "–": "-", "—": "-", "‐": "-", "‑": "-", "−": "-",
        "⁄": "/", "\u00a0": " ", "\u202f": " ", "\u2009": " ", "\u200b": "", "\ufeff": "",
    }
)  # fmt: skip
_COMBINING = re.compile(r"[\u0300-\u036f\u1ab0-\u1aff\u20d0-\u20ff]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

#: Endings that make another form of the same name or noun: plural, demonym, adjective (Belgium/Belgian,
#: Latvia/Latvian, west/western).
_SUFFIXES = frozenset("s es a ia y o e n an ian ans ians ese ish i ic ean er ers um ern".split()) | {""}
#: Demonyms whose country shares no stem with them.
DEMONYMS = {
    "swiss": "switzerland", "dutch": "netherlands", "french": "france", "welsh": "wales", "irish": "ireland",
    "british": "britain", "english": "england", "scottish": "scotland", "scots": "scotland", "danish": "denmark",
    "greek": "greece", "spanish": "spain", "polish": "poland", "finnish": "finland", "norwegian": "norway",
    "filipino": "philippines", "thai": "thailand", "czech": "czechia", "american": "america", "turkish": "turkey",
    "peruvian": "peru", "portuguese": "portugal", "basque": "basque", "flemish": "flanders", "cypriot": "cyprus",
}  # fmt: skip
_SKELETON_RULES = (("tsch", "ch"), ("tch", "ch"), ("sch", "sh"), ("ph", "f"), ("ck", "k"), ("kh", "h"), ("dh", "d"),
                   ("th", "t"), ("gh", "g"), ("c", "k"), ("q", "k"), ("x", "ks"), ("z", "s"), ("w", "v"), ("y", "i"),
                   ("j", "i"))  # fmt: skip
_NOT_KEY = re.compile(r"[aeiouh'\- ]")
_DOUBLE = re.compile(r"(.)\1+")


def fold(text: str) -> str:
    """Accent-free, ASCII-punctuated text; a lone surrogate (a bad decode upstream) becomes U+FFFD."""
    if text.isascii():
        return text
    text = _SURROGATE.sub("\ufffd", text)
    return _COMBINING.sub("", unicodedata.normalize("NFKD", text.translate(_SPECIAL)))


@functools.lru_cache(maxsize=1 << 16)  # names recur across samples; the key is a pure function of the word
def skeleton(word: str) -> str:
    """A consonant key (vowels but the last dropped) under which transliterations of one name coincide."""
    for old, new in _SKELETON_RULES:
        word = word.replace(old, new)
    if not word:
        return word
    return _DOUBLE.sub(r"\1", _NOT_KEY.sub("", word[:-1]) + word[-1].replace("h", ""))


def variant_kind(answer_word: str, context_word: str) -> str | None:
    """``"form"`` when two lower-case words are one name in another grammatical form (a plural, a demonym:
    Canada/Canadian, Kennedys/Kennedy), ``None`` otherwise; never for two different stems."""
    if DEMONYMS.get(answer_word) == context_word or DEMONYMS.get(context_word) == answer_word:
        return "form"
    if min(len(answer_word), len(context_word)) < 4 or answer_word[:4] != context_word[:4]:
        return None
    stem = 4
    for a, c in zip(answer_word[4:], context_word[4:], strict=False):
        if a != c:
            break
        stem += 1
    return "form" if answer_word[stem:] in _SUFFIXES and context_word[stem:] in _SUFFIXES else None


def phrase_text(padded: str) -> str:
    """Tokens padded and separated by single spaces, with "n't" ("didn t" once tokenised) spelled "not"."""
    return " " + " ".join(padded.replace("n t ", " not ").replace(" cannot ", " can not ").split()) + " "
