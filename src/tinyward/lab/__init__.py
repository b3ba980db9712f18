"""Lab tooling: the demo, live attacks, proxies and simulated devices.

Nothing in a device or fleet package imports this package.
"""
