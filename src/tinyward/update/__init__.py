"""Signed updates: TUF-verified targets, A/B slots with trial and revert, anti-rollback.

Device side (a device package: imports no fleet, lab, bench or CLI code). The fleet's
repository is :mod:`tinyward.fleet.update_repo`. Shared definitions: :mod:`tinyward.update.meta`
(what a target says about itself), :mod:`tinyward.update.errors`.
"""
