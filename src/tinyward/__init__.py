"""tinyward: build ML sensors that defend themselves, and prove that they do.

The package is laid out by trust boundary (see ``docs/architecture.md``):

- :mod:`tinyward.trust`  the trusted core: keystore, protected storage, attestation
- :mod:`tinyward.fleet`  the fleet: certificate authority, enrolment, server
- :mod:`tinyward.link`   the device's outbound, pinned, mutually authenticated link
- :mod:`tinyward.app`    the sandboxed, untrusted application and its output contract
- :mod:`tinyward.detect` tiny anomaly detectors and their C99 export
- :mod:`tinyward.assess` the tiered security assessment
- :mod:`tinyward.cli`    the ``tinyward`` command, a thin layer over the above
"""

__version__ = "0.1.0"
