"""disclosure-contact and support-period (declarations): read from the target description.

Nothing is probed: the verdict is only as good as the manufacturer's word, and the
report labels it ``declaration``. No description: not-tested. A description without the
field: fail (the manufacturer did not state it). A support period that has ended: fail.
"""

from __future__ import annotations

import datetime as _dt

from tinyward.assess.evidence import Evidence
from tinyward.assess.probes.base import Budget, Context, for_all
from tinyward.assess.target import Description, Target


def contact_verdict(description: Description | None, context: Context) -> list[Evidence]:
    name = "disclosure-contact"
    if description is None:
        return for_all(context, name, "not-tested", "declaration", "no target description")
    if not description.security_contact:
        return for_all(context, name, "fail", "declaration",
                       "the target description states no security contact")
    return for_all(context, name, "pass", "declaration",
                   f"declared security contact: {description.security_contact} "
                   "(not checked to answer)")


def support_verdict(description: Description | None, today: _dt.date,
                    context: Context) -> list[Evidence]:
    name = "support-period"
    if description is None:
        return for_all(context, name, "not-tested", "declaration", "no target description")
    if description.support_end is None:
        return for_all(context, name, "fail", "declaration",
                       "the target description states no end of security updates")
    if description.support_end < today:
        return for_all(context, name, "fail", "declaration",
                       f"security updates ended on {description.support_end.isoformat()}")
    return for_all(context, name, "pass", "declaration",
                   f"security updates declared until {description.support_end.isoformat()}")


class DisclosureContact:
    name = "disclosure-contact"
    kind = "declaration"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        return contact_verdict(target.description, context)


class SupportPeriod:
    name = "support-period"
    kind = "declaration"

    def run(self, target: Target, context: Context, budget: Budget) -> list[Evidence]:
        return support_verdict(target.description, _dt.date.today(), context)


__all__ = ["DisclosureContact", "SupportPeriod", "contact_verdict", "support_verdict"]
