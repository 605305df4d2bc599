"""The general rules of #22, each from examples of our own: what real LLM answers write that their
passage supports in another form must not be read as unsupported, and what stays certain still fails."""

from __future__ import annotations

import pytest

from ragtriage.checks import DeterministicChecker
from ragtriage.checks._contradictions import wrong_choice
from ragtriage.checks.deterministic import CERTAIN_RULES

CHECKER = DeterministicChecker()
SUMMARY = "Summarise the passage."


def rules(context: str, answer: str, question: str = SUMMARY) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for finding in CHECKER.check(question, answer, [context]).findings:
        found.setdefault(finding.rule, []).append(finding.note)
    return found


def test_only_rules_measured_on_real_answers_decide_fail() -> None:
    assert "unsupported_name" not in CERTAIN_RULES and "rare_word" not in CERTAIN_RULES
    report = CHECKER.check(SUMMARY, "The Dutch brewery opened in 1907.", ["The brewery opened in Belgium in 1907."])
    assert not report.decided_fail
    assert [(f.rule, f.certain) for f in report.findings] == [("unsupported_name", False)]


def test_names_decide_fail_only_where_the_app_opts_in() -> None:
    context, answer = ["The brewery opened in Belgium in 1907."], "The Dutch brewery opened in 1907."
    opted_in = DeterministicChecker(unsupported_entities_to_fail=1).check(SUMMARY, answer, context)
    assert opted_in.failures == ("answer names 'Dutch', found in no context",)
    assert opted_in.findings[0].rule == "unsupported_name" and opted_in.findings[0].certain


# -- names without regard to case, demonyms and adjective forms --------------------------------------------


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("the festival drew crowds from across northern italy", "The festival drew Northern Italian crowds."),
        ("The brewery was founded in Belgium.", "It is a Belgian brewery."),
        ("the choir toured latvia last spring", "The Latvian tour of the choir took place in spring."),
        ("she was raised near a west australian lake", "She was raised in Western Australia."),
        ("two clubs in norway signed him", "Two Norwegian clubs signed him."),
    ],
)
def test_a_name_in_another_case_or_form_is_supported(context: str, answer: str) -> None:
    assert "unsupported_name" not in rules(context, answer)


def test_another_country_is_still_reported() -> None:
    assert rules("The brewery was founded in Belgium.", "It is a Swedish brewery.")["unsupported_name"] == [
        "answer names 'Swedish', found in no context"
    ]


# -- sentence starts after bullets, numbering and abbreviations --------------------------------------------

CAREER = "He grew up in Lyon, studied law in Paris and moved to Oslo in 1990, where he wrote the novel Flight."


@pytest.mark.parametrize(
    "answer",
    [
        "Key facts:\n- Grew up in Lyon\n- Studied law in Paris",
        "Key facts:\n1. Relocated to Oslo in 1990\n2) Penned the novel Flight",
        "He wrote Flight. Additionally, he studied law in Paris.",
        "He moved to Oslo in the 1990s. Notably, he wrote Flight there.",
    ],
)
def test_first_words_of_items_and_sentences_are_not_names(answer: str) -> None:
    assert "unsupported_name" not in rules(CAREER, answer)


def test_an_abbreviation_does_not_end_a_sentence() -> None:
    # "Gen." is an abbreviation: "Marlow" after it is a name in mid-sentence, and unsupported.
    context = "He served under a general in Paris."
    assert rules(context, "He served under Gen. Marlow in Paris.")["unsupported_name"] == [
        "answer names 'Marlow', found in no context"
    ]


# -- acronyms of common phrases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("the prime minister spoke on television on monday", "The PM spoke on TV on Monday."),
        ("the company's chief executive officer resigned", "The company's CEO resigned."),
        ("three members of parliament voted against it", "Three MPs voted against it."),
        ("The band toured the United States twice.", "The band toured the USA twice."),
    ],
)
def test_an_acronym_of_the_contexts_words_is_supported(context: str, answer: str) -> None:
    assert "unsupported_name" not in rules(context, answer)


def test_an_acronym_the_contexts_do_not_spell_is_reported() -> None:
    assert "unsupported_name" in rules("the prime minister spoke on television", "The NRA spoke on TV.")


# -- number ranges and rounded amounts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("She chaired the board in 2016-20.", "She chaired the board from 2016-2020."),
        ("She chaired the board from 2016 to 2020.", "She chaired the board in 2016-20."),
        ("The film earned $4,312,655 at the box office.", "The film earned more than $4 million."),
        ("The film earned $4,312,655 at the box office.", "The film earned $4.3 million."),
        ("The survey counted 38 species.", "The survey counted nearly 40 species."),
    ],
)
def test_ranges_and_rounded_amounts_are_not_proof(context: str, answer: str) -> None:
    report = CHECKER.check(SUMMARY, answer, [context])
    assert not report.decided_fail, report.failures
    assert any(f.rule == "derived" for f in report.findings)  # still listed for the judge


@pytest.mark.parametrize(
    ("context", "answer"),
    [
        ("The film earned $4,312,655 at the box office.", "The film earned $47 million."),
        ("She chaired the board in 2016-20.", "She chaired the board from 2016-2023."),
    ],
)
def test_a_number_no_rounding_explains_still_fails(context: str, answer: str) -> None:
    assert CHECKER.check(SUMMARY, answer, [context]).decided_fail


def test_a_year_is_not_proof_where_the_context_dates_relative_to_itself() -> None:
    context = "She will miss next year's championships because of her exams."
    assert not CHECKER.check(SUMMARY, "She will miss the 2031 championships.", [context]).decided_fail
    fixed = "She will miss the championships because of her exams."
    assert CHECKER.check(SUMMARY, "She will miss the 2031 championships.", [fixed]).decided_fail


# -- dated choice questions use the date of the event asked about ------------------------------------------

LIVES = (
    "Ada Marsh (1850 - 1931) was a botanist who catalogued mosses. "
    "Tomas Brand (1862 - 1904) was a surveyor who mapped the northern coast."
)


@pytest.mark.parametrize(
    ("question", "answer", "wrong"),
    [
        ("Who died first, Ada Marsh or Tomas Brand?", "Ada Marsh", True),  # born first, died last
        ("Who died first, Ada Marsh or Tomas Brand?", "Tomas Brand", False),
        ("Who was born first, Ada Marsh or Tomas Brand?", "Tomas Brand", True),
        ("Who was born first, Ada Marsh or Tomas Brand?", "Ada Marsh", False),
    ],
)
def test_a_choice_question_is_settled_by_the_asked_event(question: str, answer: str, wrong: bool) -> None:
    assert (wrong_choice(question, answer, LIVES) is not None) is wrong


def test_a_choice_question_about_an_event_the_contexts_do_not_date_is_not_decided() -> None:
    context = "The Harbour Press was established in 1921. The Lantern Review was founded in 1930."
    # The contexts date foundings: a question about foundings is decided, one about closings is not ...
    assert wrong_choice("Which was founded first, the Harbour Press or the Lantern Review?", "Lantern Review", context)
    assert (
        wrong_choice("Which closed first, the Harbour Press or the Lantern Review?", "Lantern Review", context) is None
    )
    # ... nor a "died" question about people whose contexts give only a birth year.
    born_only = "Ada Marsh was born in 1850. Tomas Brand was born in 1862."
    assert wrong_choice("Who died first, Ada Marsh or Tomas Brand?", "Ada Marsh", born_only) is None
