"""Throwaway network namespaces for tests: created per test, removed even when the test fails."""
import itertools
import json
import os
import subprocess
import unittest

_counter = itertools.count()


def sh(*args, check=True, input=None):
    """Runs a command (tests may shell out; etherctl itself never does) and returns stdout."""
    result = subprocess.run(args, capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result.stdout


class Netns:
    def __init__(self, prefix="eccli"):
        self.name = f"{prefix}-{os.getpid()}-{next(_counter)}"
        sh("ip", "netns", "add", self.name)

    def ip(self, *args, check=True):
        return sh("ip", "-n", self.name, *args, check=check)

    def ip_json(self, *args):
        out = self.ip("-j", *args)
        return json.loads(out) if out.strip() else []

    def links(self):
        return {l["ifname"]: l for l in self.ip_json("-d", "link", "show")}

    def addresses(self):
        return {(a["ifname"], f'{i["local"]}/{i["prefixlen"]}')
                for a in self.ip_json("addr", "show") for i in a.get("addr_info", [])
                if i.get("scope") != "link" and i.get("scope") != "host"}

    def routes(self):
        routes = self.ip_json("-4", "route", "show") + self.ip_json("-6", "route", "show")
        return {r["dst"]: r for r in routes}

    def state(self):
        """Everything a test compares before and after a run, as normalised JSON text.

        Left out: what the kernel changes on its own, asynchronously, after a write — carrier
        (NO-CARRIER, LOWER_UP, operstate, linkdown, a bridge port's STP state), IPv6 duplicate
        address detection (tentative), running bridge timers, and the default qdisc that the
        kernel attaches the first time a device goes up and keeps after it goes down."""
        dumps = [self.ip_json("-d", "link", "show"), self.ip_json("addr", "show"),
                 self.ip_json("route", "show"), self.ip_json("-6", "route", "show"),
                 json.loads(sh("bridge", "-n", self.name, "-j", "link", "show") or "[]")]
        return tuple(json.dumps(_normalise(d), sort_keys=True) for d in dumps)

    def delete(self):
        sh("ip", "netns", "del", self.name, check=False)


def have_vlan_support(ns):
    """Probes 802.1Q in the namespace: this build host's kernel lacks it; the VM's has it."""
    ns.ip("link", "add", "vprobe0", "type", "veth", "peer", "name", "vprobe1")
    ok = subprocess.run(["ip", "-n", ns.name, "link", "add", "link", "vprobe0", "name",
                         "vprobe0.9", "type", "vlan", "id", "9"], capture_output=True).returncode == 0
    ns.ip("link", "del", "vprobe0")
    return ok


def require_feature(test, available, what):
    """Skips with the reason on a kernel without the feature, unless the VM harness demands it."""
    if available:
        return
    if os.environ.get("ETHERCTL_REQUIRE_ALL_FEATURES") == "1":
        test.fail(f"{what} is required here (ETHERCTL_REQUIRE_ALL_FEATURES=1) but missing")
    raise unittest.SkipTest(f"this kernel has no {what}; this test runs in the stock-kernel VM")


_ASYNC_FLAGS = {"NO-CARRIER", "LOWER_UP", "linkdown"}
_ASYNC_KEYS = {"operstate", "qdisc", "tentative", "state"}


def _normalise(value):
    if isinstance(value, list):
        return [_normalise(v) for v in value if not (isinstance(v, str) and v in _ASYNC_FLAGS)]
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()
                if k not in _ASYNC_KEYS and not k.endswith("_timer")}
    return value
