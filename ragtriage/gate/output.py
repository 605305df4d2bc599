"""JUnit XML and a markdown summary of a gate run (for CI test views and ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragtriage.gate.runner import GateCheck, RunReport, breakdown, counts, faithfulness_delta, rate


def write_junit(path: str | Path, report: RunReport, checks: Sequence[GateCheck]) -> None:
    """Suite ``gates``: one case per gate, failed when the gate fails. Suite ``items``: one case per item,
    skipped when not evaluated or not decided; a verdict that disagrees with the label is noted, not failed,
    so only the gates decide the build."""
    root = ET.Element("testsuites", name="ragtriage-ci")
    gates = ET.SubElement(
        root, "testsuite", name="gates", tests=str(len(checks)), failures=str(sum(not c.passed for c in checks))
    )
    for check in checks:
        case = ET.SubElement(gates, "testcase", classname="ragtriage.gates", name=check.name)
        if not check.passed:
            ET.SubElement(case, "failure", message=check.detail).text = check.detail
        else:
            ET.SubElement(case, "system-out").text = check.detail
    skipped = sum(not o.decided for o in report.outcomes)
    items = ET.SubElement(
        root, "testsuite", name="items", tests=str(len(report.outcomes)), failures="0", skipped=str(skipped)
    )
    for o in report.outcomes:
        case = ET.SubElement(items, "testcase", classname=f"ragtriage.items.{o.item.category}", name=o.item.id)
        if not o.evaluated:
            ET.SubElement(case, "skipped", message=f"not evaluated: {o.skipped_because}")
        elif not o.decided:
            ET.SubElement(case, "skipped", message=f"not decided ({o.status}){': ' + o.error if o.error else ''}")
        else:
            agree = "agrees" if o.correct else "DISAGREES"
            ET.SubElement(
                case, "system-out"
            ).text = f"verdict {o.verdict} ({o.tier} tier), label {o.item.label}: {agree}"
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def markdown(report: RunReport, checks: Sequence[GateCheck], baseline: dict[str, Any] | None = None) -> str:
    c = counts(report.outcomes)
    ok = all(x.passed for x in checks)
    lines = [f"## ragtriage ci: {'✅ passed' if ok else '❌ failed'}", ""]
    lines.append(
        f"{c['evaluated']}/{c['planned']} items evaluated, {c['decided']} decided, **{c['not_decided']} not decided**"
        f" (never counted as pass); cost ${report.cost_usd:.4f}, {report.elapsed_s:.1f} s"
        + (f"; **stopped early: {report.stopped}**" if report.stopped else "")
    )
    lines += ["", "| gate | result | detail |", "| --- | --- | --- |"]
    lines += [f"| {x.name} | {'pass' if x.passed else '**FAIL**'} | {x.detail} |" for x in checks]
    lines += ["", "| metric | value | 95% CI | n |", "| --- | --- | --- | --- |"]
    for name in ("pass_rate", "detection", "agreement"):
        value, ci, n = rate(c, name)
        lines.append(f"| {name} | {_pct(value)} | {ci[0]:.1%} – {ci[1]:.1%} | {n} |")
    if baseline is not None:
        fd = faithfulness_delta(report, baseline)
        if fd is not None:
            lines.append(
                f"\nMean faithfulness vs baseline: {fd[0]:+.3f} (bootstrap 95% CI {fd[1][0]:+.3f} to {fd[1][1]:+.3f})"
            )
    for title, key in (("category", "category"), ("perturbation", "perturbation")):
        groups = breakdown(report.outcomes, lambda o, k=key: getattr(o.item, k))  # type: ignore[misc]
        if not groups:
            continue
        lines += ["", f"| {title} | evaluated | decided | pass | caught / hallucinated | agreement |"]
        lines.append("| --- | --- | --- | --- | --- | --- |")
        for g, gc in groups.items():
            agreement = _pct(gc["correct"] / gc["decided"] if gc["decided"] else None)
            lines.append(
                f"| {g} | {gc['evaluated']}/{gc['planned']} | {gc['decided']} | {gc['passed']} |"
                f" {gc['caught']}/{gc['hallucinated']} | {agreement} |"
            )
    missing = report.not_evaluated
    if missing:
        lines += ["", f"<details><summary>{len(missing)} not evaluated</summary>", ""]
        lines += [f"- `{o.item.id}`: {o.skipped_because}" for o in missing]
        lines += ["", "</details>"]
    wrong = [o for o in report.outcomes if o.decided and not o.correct]
    if wrong:
        lines += ["", f"<details><summary>{len(wrong)} verdicts disagree with the label</summary>", ""]
        lines += [f"- `{o.item.id}`: {o.verdict} ({o.tier}), label {o.item.label}" for o in wrong]
        lines += ["", "</details>"]
    for note in report.notes:
        lines.append(f"\n_Note: {note}_")
    return "\n".join(lines) + "\n"
