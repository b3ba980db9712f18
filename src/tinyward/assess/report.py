"""The report of an assessment, four ways (pure: text in, text out; the CLI writes files).

- :func:`to_json`: for machines, valid against ``data/report.schema.json`` (shipped in the
  package; :func:`schema` returns it);
- :func:`to_html`: for people: a tier badge and, per requirement, the verdict, the
  evidence, the provisions it serves and how to fix it; inline CSS, no script, no
  external resource, every value escaped;
- :func:`to_sarif`: SARIF 2.1.0 for CI: one rule per requirement, one result per
  requirement (``fail`` → level error; ``pass``; not-tested → kind ``open``);
- :func:`to_datasheet`: the security and privacy section of an ML-sensor datasheet
  (markdown).
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from typing import Any
from urllib.parse import quote

from tinyward.assess.run import Assessment

REPORT_FORMAT = "tinyward-assessment/1"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_VERDICT_TEXT = {"pass": "pass", "fail": "FAIL", "not-tested": "not tested"}


def schema() -> dict[str, Any]:
    """The JSON Schema of :func:`to_json`'s document (draft 2020-12)."""
    text = (resources.files("tinyward.assess") / "data" / "report.schema.json"
            ).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def to_document(assessment: Assessment) -> dict[str, Any]:
    model, target, tier = assessment.model, assessment.target, assessment.tier
    description = target.description
    return {
        "format": REPORT_FORMAT,
        "requirements_version": model.version,
        "standard": model.standard,
        "started": assessment.started.isoformat(timespec="seconds"),
        "finished": assessment.finished.isoformat(timespec="seconds"),
        "target": {
            "name": target.name,
            "address": target.address,
            "ports": list(target.ports) if target.ports is not None else None,
            "netns": target.netns,
            "device_dir": str(target.device_dir) if target.device_dir else None,
            "description": None if description is None else {
                "name": description.name, "vendor": description.vendor,
                "security_contact": description.security_contact,
                "support_end": description.support_end.isoformat()
                if description.support_end else None,
                "product_class": description.product_class},
        },
        "probes_run": list(assessment.probes_run),
        "tier": {"level": tier.level, "name": tier.name,
                 "blocking": [e.requirement for e in tier.blocking]},
        "counts": {verdict: sum(1 for e in assessment.verdicts.values()
                                if e.verdict == verdict)
                   for verdict in ("pass", "fail", "not-tested")},
        "requirements": [{
            "id": r.id, "tier": r.tier, "title": r.title, "asset": r.asset,
            "property": r.property, "verdict": e.verdict, "kind": e.kind, "probe": e.probe,
            "evidence": e.text, "where": e.where or None, "fix": r.fix,
            "en303645": list(r.en303645), "nistir8425": list(r.nistir8425),
            "psti": list(r.psti), "en18031": list(r.en18031), "cwe": list(r.cwe)}
            for r in model.requirements for e in (assessment.verdicts[r.id],)],
    }


def to_json(assessment: Assessment) -> str:
    return json.dumps(to_document(assessment), indent=2) + "\n"


def to_sarif(assessment: Assessment) -> str:
    model = assessment.model
    rules = [{
        "id": r.id, "name": r.title.replace(" ", ""),
        "shortDescription": {"text": r.title},
        "fullDescription": {"text": r.statement},
        "help": {"text": r.fix},
        "properties": {"tier": r.tier, "probe": r.probe,
                       "tags": [f"EN303645:{p}" for p in r.en303645] +
                               [f"CWE-{c}" for c in r.cwe]}}
        for r in model.requirements]
    index = {r.id: i for i, r in enumerate(model.requirements)}
    target_uri = f"tcp://{assessment.target.address}" if assessment.target.address else \
        (str(assessment.target.device_dir) if assessment.target.device_dir else "target")
    results = []
    for requirement in model.requirements:
        evidence = assessment.verdicts[requirement.id]
        kind = {"pass": "pass", "fail": "fail", "not-tested": "open"}[evidence.verdict]
        results.append({
            "ruleId": requirement.id, "ruleIndex": index[requirement.id],
            "kind": kind, "level": "error" if kind == "fail" else "none",
            "message": {"text": f"{_VERDICT_TEXT[evidence.verdict]} ({evidence.kind}): "
                                f"{evidence.text}"},
            "locations": [{"physicalLocation": {"artifactLocation": {
                # A URI reference: a device's file name may hold spaces or "%".
                "uri": quote(evidence.where or target_uri, safe=_URI_SAFE)}}}],
            "properties": {"evidenceKind": evidence.kind, "probe": evidence.probe}})
    log = {
        "$schema": SARIF_SCHEMA, "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "tinyward-assess",
                                "semanticVersion": model.version, "rules": rules}},
            "invocations": [{"executionSuccessful": True,
                             "startTimeUtc": assessment.started.strftime("%Y-%m-%dT%H:%M:%SZ"),
                             "endTimeUtc": assessment.finished.strftime("%Y-%m-%dT%H:%M:%SZ")}],
            "results": results,
            "properties": {"tier": assessment.tier.level, "tierName": assessment.tier.name}}],
    }
    return json.dumps(log, indent=2) + "\n"


_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:70em;color:#1d1d1f;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}.meta{color:#555}
.badge{display:inline-block;padding:.6em 1.1em;border-radius:.5em;font-weight:700;
font-size:1.3em;color:#fff;background:#b3261e;margin:.6em 0}
.badge.t1{background:#8a6d00}.badge.t2{background:#1f6f3f}.badge.t3{background:#0b4f8a}
table{border-collapse:collapse;width:100%;margin-top:1em}
th,td{border-bottom:1px solid #ddd;padding:.45em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}.v{font-weight:700;white-space:nowrap}
.pass{color:#1f6f3f}.fail{color:#b3261e}.not-tested{color:#666}
.kind{font-size:.85em;color:#555}.fix{font-size:.9em;color:#333}
.tier{background:#fafafa;font-weight:600}
"""


_URI_SAFE = ":/[]@!$&'()*+,;=~"
# Markdown's own characters, and "<" (a renderer passes HTML through): evidence quotes the
# device (a header, a file name, a claim), which must stay text in the datasheet.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|#!])")


def _md(text: str) -> str:
    return _MARKDOWN.sub(r"\\\1", text)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def to_html(assessment: Assessment) -> str:
    doc = to_document(assessment)
    tier = doc["tier"]
    target = doc["target"]
    blocking = ", ".join(tier["blocking"]) or "none"
    rows = []
    for level in sorted({r["tier"] for r in doc["requirements"]}):
        name = next(t.name for t in assessment.model.tiers if t.level == level)
        rows.append(f'<tr class="tier"><td colspan="5">Tier {level}: {_e(name)}</td></tr>')
        for r in (r for r in doc["requirements"] if r["tier"] == level):
            provisions = ", ".join(r["en303645"]) or "-"
            cwe = ", ".join(f"CWE-{c}" for c in r["cwe"])
            rows.append(
                f'<tr><td>{_e(r["id"])}<br>{_e(r["title"])}</td>'
                f'<td class="v {_e(r["verdict"])}">{_e(_VERDICT_TEXT[r["verdict"]])}'
                f'<br><span class="kind">{_e(r["kind"])}: {_e(r["probe"])}</span></td>'
                f'<td>{_e(r["evidence"])}</td>'
                f'<td>EN 303 645 {_e(provisions)}<br><span class="kind">{_e(cwe)}</span></td>'
                f'<td class="fix">{_e(r["fix"])}</td></tr>')
    counts = doc["counts"]
    where = ", ".join(str(v) for v in (target["address"], target["device_dir"]) if v) or "-"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<title>tinyward assessment: {_e(target["name"])}</title><style>{_CSS}</style></head>
<body>
<h1>Security assessment: {_e(target["name"])}</h1>
<p class="meta">Target {_e(where)} · requirements {_e(doc["requirements_version"])} ·
{_e(doc["standard"])} · {_e(doc["started"])} to {_e(doc["finished"])}</p>
<div class="badge t{tier["level"]}" id="tier">Tier {tier["level"]}: {_e(tier["name"])}</div>
<p>Next tier blocked by: <strong>{_e(blocking)}</strong>.
{counts["pass"]} passed, {counts["fail"]} failed, {counts["not-tested"]} not tested.
A requirement that was not tested is never counted as passed.</p>
<table><thead><tr><th>Requirement</th><th>Verdict</th><th>Evidence</th>
<th>Serves</th><th>How to fix</th></tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody></table>
</body></html>
"""


def to_datasheet(assessment: Assessment) -> str:
    doc = to_document(assessment)
    tier = doc["tier"]
    lines = [
        "## Security and privacy", "",
        f"- **Assessed tier:** {tier['level']} ({tier['name']}), "
        f"tinyward requirements {doc['requirements_version']}, {doc['finished']}.",
        f"- **Next tier blocked by:** {', '.join(tier['blocking']) or 'nothing'}.",
    ]
    for requirement_id, label in (("C-LEAK-1", "Leakage bound"),
                                  ("C-TRAFFIC-1", "Traffic-analysis resistance")):
        entry = next(r for r in doc["requirements"] if r["id"] == requirement_id)
        value = _md(entry["evidence"]) if entry["verdict"] != "not-tested" else \
            f"not measured ({_md(entry['evidence'])})"
        lines.append(f"- **{label}:** {value}")
    lines += ["", "| requirement | verdict | evidence kind | evidence |",
              "| --- | --- | --- | --- |"]
    for r in doc["requirements"]:
        text = _md(r["evidence"])
        lines.append(f"| {r['id']} {r['title']} | {_VERDICT_TEXT[r['verdict']]} | "
                     f"{r['kind']} | {text} |")
    return "\n".join(lines) + "\n"


__all__ = ["REPORT_FORMAT", "schema", "to_datasheet", "to_document", "to_html", "to_json",
           "to_sarif"]
