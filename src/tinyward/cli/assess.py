"""`tinyward assess …`: requirements, tiers and (as probes land) live evidence."""

from __future__ import annotations

import json
from collections import Counter

import click

from tinyward.assess.model import COVERAGE_KINDS, Model, Requirement, load_model
from tinyward.assess.registry import PROBES

_KIND_TEXT = {"live": "live probe", "static": "static check", "declaration": "declaration only",
              "planned": "probe planned", "none": "nothing yet"}


@click.group("assess")
def assess() -> None:
    """Turn confidentiality, integrity and availability requirements into evidence.

    `tinyward assess requirements` shows the requirements model: each requirement, its
    tier, the probe that gathers its evidence, and the share of ETSI EN 303 645 provisions
    with a live probe, a static check or only a declaration.
    """


@assess.command("requirements")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option("--tier", type=click.IntRange(1, 9), default=None,
              help="Only the requirements needed for this tier (tiers are cumulative).")
@click.option("--provisions/--no-provisions", default=True, show_default=True,
              help="Also print the EN 303 645 coverage table, one row per provision.")
def requirements(as_json: bool, tier: int | None, provisions: bool) -> None:
    """The requirements model and its coverage of ETSI EN 303 645.

    A provision counts as covered by a live probe or a static check only when that probe
    exists in this build; a requirement whose probe is still to be built shows as
    "probe planned".
    """
    model = load_model()
    chosen = model.for_tier(tier) if tier is not None else model.requirements
    coverage = model.coverage(PROBES)
    counts = Counter(row.kind for row in coverage)
    if as_json:
        click.echo(json.dumps({
            "version": model.version, "standard": model.standard,
            "requirements": [{
                "id": r.id, "tier": r.tier, "asset": r.asset, "property": r.property,
                "title": r.title, "evidence": r.evidence, "probe": r.probe,
                "probe_available": r.probe in PROBES, "en303645": list(r.en303645),
                "nistir8425": list(r.nistir8425), "psti": list(r.psti),
                "en18031": list(r.en18031), "isvs": list(r.isvs), "cwe": list(r.cwe)}
                for r in chosen],
            "coverage": [{"provision": row.provision.id, "kind": row.kind,
                          "requirements": list(row.requirements)} for row in coverage],
            "counts": {kind: counts.get(kind, 0) for kind in COVERAGE_KINDS},
            "provisions": len(coverage)}, indent=2))
        return
    _print_requirements(model, chosen)
    if provisions:
        click.echo("")
        click.echo(f"{model.standard}: {len(coverage)} provisions")
        for row in coverage:
            names = ", ".join(row.requirements) or "-"
            click.echo(f"  {row.provision.id:<7} {_KIND_TEXT[row.kind]:<17} {names:<28} "
                       f"{row.provision.summary}")
    click.echo("")
    total = len(coverage)
    for kind in COVERAGE_KINDS:
        n = counts.get(kind, 0)
        share = 100 * n / total
        click.echo(f"{_KIND_TEXT[kind]:>17}: {n:>2} of {total} provisions ({share:.0f} %)")


def _print_requirements(model: Model, chosen: tuple[Requirement, ...]) -> None:
    click.echo(f"requirements model {model.version}: {len(chosen)} requirements")
    for level in sorted({r.tier for r in chosen}):
        name = next(t.name for t in model.tiers if t.level == level)
        click.echo(f"tier {level}: {name}")
        for r in (r for r in chosen if r.tier == level):
            state = "" if r.evidence == "declaration" or r.probe in PROBES else " (planned)"
            click.echo(f"  {r.id:<12} {r.property[0].upper()} {r.title:<62} "
                       f"{r.evidence}: {r.probe}{state}")


COMMANDS = (assess,)
