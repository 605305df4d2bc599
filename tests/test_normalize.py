"""The normalisers the free tiers compare through: spellings, numbers and dates, from our own examples."""

from __future__ import annotations

import pytest

from ragtriage.checks._dates import agrees, conflict, find_dates
from ragtriage.checks._normalize import fold, skeleton, variant_kind
from ragtriage.checks._numbers import Known, derivation, digit_values, quantities, token_values, words_value


@pytest.mark.parametrize(
    ("text", "folded"),
    [
        ("Émile Zoë", "Emile Zoe"),
        ("Dvořák in Łódź", "Dvorak in Lodz"),
        ("Straße, Søren, Æsir", "Strasse, Soren, AEsir"),
        ("“quoted” – dash’s", '"quoted" - dash\'s'),
        ("12\u00a0500", "12 500"),
        ("plain ascii", "plain ascii"),
    ],
)
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_fold_survives_a_lone_surrogate_and_keeps_other_scripts() -> None:
    assert fold("caf\udce9") == "caf\ufffd"
    assert fold("Москва") == "Москва"  # no accents to drop: Cyrillic stays Cyrillic


@pytest.mark.parametrize(
    ("a", "b"),
    [("tchaikovsky", "chaikovsky"), ("tschaikowsky", "tchaikovsky"), ("muhammad", "mohammed"),
     ("dostoevsky", "dostoyevsky"), ("yevgeny", "evgeny")],
)  # fmt: skip
def test_transliterations_share_a_skeleton(a: str, b: str) -> None:
    assert skeleton(a) == skeleton(b)


@pytest.mark.parametrize(("a", "b"), [("alexandra", "alexander"), ("karen", "kiri"), ("jim", "john")])
def test_different_names_do_not_share_a_skeleton(a: str, b: str) -> None:
    assert skeleton(a) != skeleton(b)


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [("canadian", "canada", "form"), ("italian", "italy", "form"), ("kennedys", "kennedy", "form"),
     ("swiss", "switzerland", "form"), ("french", "france", "form"), ("alexandra", "alexander", None),
     ("kimball", "kimberly", None)],
)  # fmt: skip
def test_variant_kind(a: str, b: str, kind: str | None) -> None:
    assert variant_kind(a, b) == kind


@pytest.mark.parametrize(
    ("text", "value", "percent"),
    [
        ("twelve and a half percent", 12.5, True),
        ("12,5 per cent", 12.5, True),
        ("12.5%", 12.5, True),
        ("one hundred and twenty", 120.0, False),
        ("nineteen eighty-four", 1984.0, False),
        ("two thousand and five", 2005.0, False),
        ("three quarters", 0.75, False),
        ("two dozen", 24.0, False),
        ("4.7 million", 4_700_000.0, False),
        ("81 044", 81_044.0, False),
        ("thirty-first", 31.0, False),
    ],
)
def test_quantities_read_digits_and_words_as_one_value(text: str, value: float, percent: bool) -> None:
    (quantity,) = quantities(text)
    assert value in quantity.values and quantity.percent is percent


def test_number_words_that_are_two_numbers_stay_two() -> None:
    assert [q.values for q in quantities("one and two")] == [(1.0,), (2.0,)]
    assert words_value(["first", "two"]) is None
    assert quantities("a man and a dog") == []
    assert quantities("the A320 and v1.2") == []  # digits inside a code are not quantities


def test_token_values_read_runs_of_number_words_in_a_text() -> None:
    tokens = "three quarters of the members and one third of the rest a dozen 4 7 million".split()
    assert {round(v, 6) for v in token_values(tokens)} == {0.75, 0.333333, 12.0}  # a bare "million" is no value


def test_ambiguous_separators_keep_both_readings() -> None:
    assert set(digit_values("1,500")) == {1500.0, 1.5}
    assert digit_values("1,234.5") == (1234.5,)
    assert digit_values("1.234,5") == (1234.5,)


@pytest.mark.parametrize(
    ("value", "known", "how"),
    [
        (1.5, [90.0], "unit conversion of 90"),  # minutes -> hours
        (120.0, [10.0], "unit conversion of 10"),  # per month -> per year
        (2.0, [2048.0], "unit conversion of 2048"),  # MB -> GB
        (212.0, [100.0], "temperature conversion of 100"),  # C -> F
        (16.0, [10.0], "unit conversion of 10"),  # miles -> km, rounded
        (5.0, [3.0, 2.0], "2 + 3"),  # three sons and two daughters: five children
        (37.0, [1815.0, 1852.0], "1852 - 1815"),
    ],
)
def test_derivation_names_how_a_value_follows(value: float, known: list[float], how: str) -> None:
    assert how in (derivation(value, Known(known)) or "")


@pytest.mark.parametrize(("value", "known"), [(1867.0, [1865.0, 23.0, 1500.0]), (47.0, [4.7]), (91044.0, [81044.0])])
def test_values_that_follow_from_nothing_are_not_derived(value: float, known: list[float]) -> None:
    assert derivation(value, Known(known)) is None


@pytest.mark.parametrize(
    "text",
    ["1889-03-31", "31 March 1889", "March 31, 1889", "the 31st of March 1889", "Mar. 31, 1889", "31/03/1889",
     "31.03.1889"],
)  # fmt: skip
def test_date_formats_read_as_one_date(text: str) -> None:
    (mention,) = find_dates(text)
    assert (1889, 3, 31) in mention.readings


def test_numeric_dates_that_could_swap_keep_both_readings() -> None:
    (mention,) = find_dates("03/04/1921")
    assert set(mention.readings) == {(1921, 3, 4), (1921, 4, 3)}


def test_partial_dates_agree_and_one_changed_part_conflicts() -> None:
    assert agrees((1889, 3, None), (1889, 3, 31))
    assert conflict((2013, 12, 2), (2013, 12, 1))
    assert not conflict((2013, 12, 2), (1999, 5, 1))  # a different date altogether: no "same thing"
    assert not conflict((None, None, 2), (2013, 12, 1))
