"""The fleet dashboard: server-rendered pages on the admin listener (``docs/dashboard.md``).

- :mod:`~tinyward.fleet.dashboard.auth`: the admin password (scrypt), its lockout (the
  readout's, :mod:`tinyward.trust.lockout`), sessions and CSRF tokens; no HTTP;
- :mod:`~tinyward.fleet.dashboard.render`: jinja2 templates, autoescaped;
- :mod:`~tinyward.fleet.dashboard.views`: the aiohttp handlers and security headers.

:func:`add_dashboard_routes` mounts it on the admin application.
"""

from __future__ import annotations

from aiohttp import web

from tinyward.fleet.dashboard.views import Dashboard, FleetServer


def add_dashboard_routes(app: web.Application, server: FleetServer,
                         outcome_key: web.RequestKey[str]) -> Dashboard:
    """Mount the dashboard on the admin ``app``; ``outcome_key`` is where the audit
    middleware finds a request's outcome code."""
    dashboard = Dashboard(server, outcome_key)
    dashboard.add_routes(app)
    return dashboard


__all__ = ["Dashboard", "add_dashboard_routes"]
