"""Probe safety: only loopback, a lab namespace, or an address the user names explicitly;
one host; and the target description is read strictly."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from tinyward.assess.target import (
    BadDescription,
    TargetRefused,
    allowed_address,
    load_description,
    make_target,
    parse_ports,
)
from tinyward.cli.main import cli

from ..conftest import needs


@pytest.mark.parametrize("address", ["8.8.8.8", "192.168.1.10", "10.0.0.1", "2001:db8::1"])
def test_an_address_that_is_not_loopback_and_not_named_is_refused(address: str) -> None:
    with pytest.raises(TargetRefused, match="--target-address"):
        allowed_address(address)


@pytest.mark.parametrize("address", ["example.com", "192.168.1.0/24", "0.0.0.0", "::",
                                     "224.0.0.1", "255.255.255.255", ""])
def test_names_networks_and_non_hosts_are_refused_even_when_named(address: str) -> None:
    with pytest.raises(TargetRefused):
        allowed_address(address, named=True)


def test_loopback_a_lab_namespace_or_a_named_address_is_allowed() -> None:
    assert allowed_address("127.0.0.1") == "127.0.0.1"
    assert allowed_address("localhost") == "127.0.0.1"
    assert allowed_address("::1") == "::1"
    assert allowed_address("192.168.1.10", named=True) == "192.168.1.10"
    with pytest.raises(TargetRefused):
        allowed_address("10.77.0.2", netns="bad name; rm -rf /")


def test_a_lab_namespace_address_is_refused_outside_that_namespace() -> None:
    # The probes' own sockets would leave from this namespace, where 10.77.0.2 may be
    # anyone's: the whole assessment must run inside the lab namespace.
    with pytest.raises(TargetRefused, match="ip netns exec"):
        allowed_address("10.77.0.2", netns="tw-assess-no-such-ns")


def test_cli_refuses_an_unnamed_remote_target_before_any_probe_runs(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["assess", "run", "8.8.8.8", "--out", str(tmp_path / "o")])
    assert result.exit_code != 0
    assert result.output.startswith("error: 8.8.8.8 is not loopback")
    assert "port-scan" not in result.output  # no probe started
    assert not (tmp_path / "o").exists()


def test_port_lists_are_bounded() -> None:
    assert parse_ports("22,80,8000-8002") == (22, 80, 8000, 8001, 8002)
    for bad in ("0", "70000", "1-65535", "a", "", "80-70"):
        with pytest.raises(Exception, match="port"):
            parse_ports(bad)
    with pytest.raises(Exception, match="needs an address"):
        make_target()


GOOD = """format = "tinyward-target/1"
name = "Acme sound sensor"
vendor = "Acme"
security_contact = "security@acme.example"
support_end = 2031-12-31
product_class = "ml-sensor"
"""


def test_description_loads_strictly() -> None:
    description = load_description(GOOD)
    assert description.support_end == dt.date(2031, 12, 31)
    assert description.security_contact == "security@acme.example"
    for bad, reason in [
        (GOOD + 'extra = "x"\n', "unknown field"),
        (GOOD.replace("2031-12-31", '"soon"'), "support_end"),
        (GOOD.replace("security@acme.example", "call us"), "security_contact"),
        (GOOD.replace("ml-sensor", "toaster"), "product_class"),
        (GOOD.replace('name = "Acme sound sensor"\n', ""), "name"),
        (GOOD.replace("tinyward-target/1", "v2"), "format"),
        ("name = ", "TOML"),
    ]:
        with pytest.raises(BadDescription, match=reason):
            load_description(bad)


CAN_NETNS = os.geteuid() == 0 and shutil.which("ip") is not None


@needs(CAN_NETNS, "needs root and iproute2 to make a network namespace")
def test_inside_the_lab_namespace_its_address_is_allowed() -> None:
    name = f"tw-assess-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
    try:
        code = ("from tinyward.assess.target import allowed_address, inside_netns;"
                f"assert inside_netns({name!r});"
                f"print(allowed_address('10.77.0.2', netns={name!r}))")
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "10.77.0.2"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False, timeout=30)
