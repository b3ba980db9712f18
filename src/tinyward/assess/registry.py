"""Which probes (live) and checks (static) exist, by the names the requirements use.

:meth:`tinyward.assess.model.Model.coverage` reads this to say which provisions tinyward
can gather evidence for today. A requirement whose probe is not listed here counts as
``planned``: the coverage table never claims evidence that no code produces. Each probe
module adds its name here when it lands (issue 16).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

#: probe or check name -> "live" or "static"
PROBES: Mapping[str, str] = MappingProxyType({})

__all__ = ["PROBES"]
