"""`tinyward fleet dashboard-password`: set the dashboard's admin password.

(Own module so that ``cli/fleet.py`` changes by one line; it adds :data:`dashboard_password`
to its ``fleet`` group.)
"""

from __future__ import annotations

import os
from pathlib import Path

import click

PASSWORD_ENV = "TINYWARD_DASHBOARD_PASSWORD"  # noqa: S105 (a variable's name)


@click.command("dashboard-password")
@click.argument("fleet_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
def dashboard_password(fleet_dir: Path) -> None:
    """Set (or replace) the dashboard's admin password for FLEET_DIR.

    Read from TINYWARD_DASHBOARD_PASSWORD or asked twice (hidden); at least 12
    characters. Only an scrypt hash is kept (FLEET_DIR/dashboard/password, 0600). A new
    password resets the login lockout and ends every session, also in a running server.
    """
    from tinyward.fleet.dashboard.auth import LoginGate
    from tinyward.fleet.pki import Fleet

    Fleet.open(fleet_dir)  # refuses a folder that is not a fleet
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        password = click.prompt("Dashboard password", hide_input=True,
                                confirmation_prompt="Repeat the password")
    LoginGate(fleet_dir).set_password(password)
    click.echo(f"dashboard password set for {fleet_dir} (only its scrypt hash is kept)")
