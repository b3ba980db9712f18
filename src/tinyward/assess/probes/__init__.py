"""The probes (live), checks (static) and declarations that produce evidence.

Each module keeps its verdict rules pure (a function from what was observed to
:class:`~tinyward.assess.evidence.Evidence`) apart from the I/O that observes; every I/O
step is bounded in count and time (:class:`~tinyward.assess.probes.base.Budget`).
"""
