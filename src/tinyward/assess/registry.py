"""Which probes (live), checks (static) and declarations exist, by the names the
requirements use.

:meth:`tinyward.assess.model.Model.coverage` reads this to say which provisions tinyward
can gather evidence for today. A requirement whose probe is not listed here counts as
``planned``: the coverage table never claims evidence that no code produces.
``tests/assess/test_run.py`` checks that this list and the probes that
:func:`tinyward.assess.run.all_probes` runs are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: probe or check name -> "live", "static" or "declaration"
PROBES: Mapping[str, str] = MappingProxyType({
    "port-scan": "live",
    "tls-config": "live",
    "credentials": "live",
    "pin-mitm": "live",
    "preauth-exhaustion": "live",
    "replay": "live",
    "lockout-restart": "live",
    "hostile-app": "live",
    "traffic-analysis": "live",
    "attestation": "live",
    "leakage": "live",
    "air-gapped": "live",
    "on-device-detection": "live",
    "update-tamper": "live",
    "failure-reporting": "live",
    "outage-recovery": "live",
    "identity": "static",
    "update-trust": "static",
    "disclosure-contact": "declaration",
    "support-period": "declaration",
})

__all__ = ["PROBES"]
