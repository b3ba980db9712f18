"""Live attacks, reusable by the probes, the demo and the tests.

Each function *performs* one attack with real parts (real TLS, real certificates, real
sockets on loopback or in a network namespace the caller created) and returns what happened
(an :class:`~tinyward.assess.attacks.outcome.Outcome` where there is one verdict to give).
Nothing here decides a pass or a fail for a tier; that is the probes' job.

- :mod:`~tinyward.assess.attacks.outcome`: :class:`Outcome`, and refusals in plain words.
- :mod:`~tinyward.assess.attacks.certificates`: certificates the fleet or a device must refuse.
- :mod:`~tinyward.assess.attacks.rogue_server`: a TLS server impersonating the fleet server.
- :mod:`~tinyward.assess.attacks.clients`: posts to the fleet server that it must refuse.
- :mod:`~tinyward.assess.attacks.listeners`: does a device's process hold a listening socket?
"""
