"""The tiered assessment: requirements turned into live evidence and a tier a buyer reads.

Entry points: :func:`tinyward.assess.model.load_model` (the requirements model: assets,
confidentiality / integrity / availability requirements, tiers, and their mappings to
ETSI EN 303 645, NISTIR 8425, UK PSTI, EN 18031-1, OWASP ISVS and CWE), and
:data:`tinyward.assess.registry.PROBES` (the probes and checks that exist).
"""
