"""The local readout: what an air-gapped ML sensor shows, and to whom.

- :mod:`tinyward.readout.state` — the latest results the device keeps for the display,
  in protected storage.
- :mod:`tinyward.readout.offline` — signed reports carried out by QR code (the carrier
  text is :mod:`tinyward.readout.carrier`; a fleet verifies them with
  :mod:`tinyward.fleet.offline`).
- :mod:`tinyward.readout.airgapped` — the device loop in air-gapped mode (no network,
  enforced by the kernel).
- :mod:`tinyward.readout.screen` — the terminal stand-in for the e-ink display, locked
  until the reader authenticates (:mod:`tinyward.trust.readout`).
"""
