"""The capture rules as text: Istio's chains and order for Istio's default flags, and what
each flag changes."""

from __future__ import annotations

import pytest

from pymesh.capture.rules import (
    CaptureConfig,
    cleanup_commands,
    nat_rules,
    parse_cidrs,
    parse_ports,
    restore_input,
)
from pymesh.cli.iptables import config_from_args
from pymesh.cli.main import _build_parser
from pymesh.errors import ConfigError

# What istio-iptables writes for `-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*'
# -d 15090,15021,15020` (its golden output for the default sidecar).
ISTIO_DEFAULT = """\
* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -m tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -p tcp -m tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
"""  # noqa: E501


def _cfg(*argv: str) -> CaptureConfig:
    args = _build_parser("iptables")[0].parse_args(["iptables", *argv])
    cfg = config_from_args(args)
    assert isinstance(cfg, CaptureConfig)
    return cfg


def test_istio_default_flags_give_istios_rules() -> None:
    cfg = _cfg(
        *["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x"],
        "",
        "-b",
        "*",
    )
    assert restore_input(cfg) == ISTIO_DEFAULT
    assert restore_input(CaptureConfig()) == ISTIO_DEFAULT


def test_include_and_exclude_cidrs() -> None:
    rules = nat_rules(_cfg("-i", "10.96.0.0/12,fd00::/8", "-x", "10.96.0.1"))
    tail = rules[rules.index("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN") + 1 :]
    # Excluded first, then only the included ranges (IPv6 ones belong to ip6tables).
    assert tail == [
        "-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -d 10.96.0.0/12 -j ISTIO_REDIRECT",
        "-A ISTIO_OUTPUT -j RETURN",
    ]


def test_inbound_ports_listed_or_none() -> None:
    listed = nat_rules(_cfg("-b", "9080,9443"))
    assert "-A ISTIO_INBOUND -p tcp -m tcp --dport 9080 -j ISTIO_IN_REDIRECT" in listed
    assert "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT" not in listed
    assert not any("15090" in r for r in listed)  # -d applies to '*' only
    none = nat_rules(_cfg("-b", ""))
    assert "-A PREROUTING -p tcp -j ISTIO_INBOUND" not in none


def test_outbound_ports_and_interfaces() -> None:
    rules = nat_rules(_cfg("-o", "3306", "-q", "8080", "-c", "eth1", "-u", "1500", "-g", "1501"))
    first_output = rules.index("-A ISTIO_OUTPUT -p tcp -m tcp --dport 3306 -j RETURN")
    assert rules[first_output + 1] == "-A ISTIO_OUTPUT -p tcp -m tcp --dport 8080 -j ISTIO_REDIRECT"
    assert "-A PREROUTING -i eth1 -j RETURN" in rules and "-A OUTPUT -o eth1 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -m owner --uid-owner 1500 -j RETURN" in rules
    assert "-A ISTIO_OUTPUT -m owner --gid-owner 1501 -j RETURN" in rules
    cleanup = cleanup_commands(_cfg("-c", "eth1"))
    assert ["-t", "nat", "-D", "PREROUTING", "-i", "eth1", "-j", "RETURN"] in cleanup


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("-m", "TPROXY"), "only REDIRECT"),
        (("-p", "0"), "outside 1..65535"),
        (("-d", "15090,http"), "'http' is not a port number"),
        (("-b", "70000"), "outside 1..65535"),
        (("-i", "10.0.0.0/33"), "-i"),
        (("-x", "not-an-address"), "-x"),
    ],
)
def test_bad_flags_are_clear_errors(argv: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _cfg(*argv)


def test_parsers() -> None:
    assert parse_ports(" 1, 2 ,", "-d") == (1, 2)
    assert [str(n) for n in parse_cidrs("10.1.2.3,10.0.0.0/8", "-i")] == [
        "10.1.2.3/32",
        "10.0.0.0/8",
    ]
