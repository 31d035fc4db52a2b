"""Pools -> IPVS through etherctl's command line, in throwaway network namespaces.

ipvsadm is the independent reader of the kernel state. The host kernel has no IPVS: the tests
skip there (and fail under ETHERCTL_REQUIRE_ALL_FEATURES=1); the stock-kernel VM runs them.
Run with /usr/bin/python3 -m unittest; ETHERCTL is the binary under test."""
import copy
import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from netns import Netns, require_feature, sh  # noqa: E402

ETHERCTL = os.environ.get("ETHERCTL", "etherctl")
NO_IPVS = "this kernel has no IPVS support (ip_vs)"

# The virtual addresses are self IPs here (so local already: etherctl adds nothing for them);
# VirtualAddressTest below has one that is not.
SITE = {
    "etherctl": 1,
    "devices": {"dc1": {
      "vlans": {"front": {"interface": "eth0"}},
      "self_ips": {"vip4": {"address": "192.0.2.10/24", "vlan": "front"},
                   "vip6": {"address": "2001:db8::53/64", "vlan": "front"}},
      "pools": {
        "web": {
            "virtual": {"address": "192.0.2.10", "port": 80, "protocol": "tcp", "scheduler": "wlc"},
            "members": {"10.1.0.21:80": {}, "10.1.0.22:80": {"weight": 2}},
            "monitor": {"type": "virtual_location", "interval": 5, "min_active_members": 1},
        },
        "dns6": {
            "virtual": {"address": "2001:db8::53", "port": 53, "protocol": "udp", "scheduler": "rr"},
            "members": {"[2001:db8:1::5]:53": {"weight": 3}},
        },
    }}},
}


def ipvs_available(ns):
    return subprocess.run(["ip", "netns", "exec", ns.name, "ipvsadm", "-Ln"],
                          capture_output=True).returncode == 0


def ipvsadm(ns):
    """`ipvsadm -Ln` as {"TCP 192.0.2.10:80": {"scheduler", "flags", "members": {addr: (fwd, w)}}}."""
    services, current = {}, None
    for line in sh("ip", "netns", "exec", ns.name, "ipvsadm", "-Ln").splitlines():
        fields = line.split()
        if not fields or fields[0] in ("IP", "Prot") or fields[1:2] == ["RemoteAddress:Port"]:
            continue
        if fields[0] == "->":
            services[current]["members"][fields[1]] = (fields[2], int(fields[3]))
        else:
            current = f"{fields[0]} {fields[1]}"
            services[current] = {"scheduler": fields[2], "flags": fields[3:], "members": {}}
    return services


class IpvsBase(unittest.TestCase):
    def setUp(self):
        self.ns = Netns("ecipvs")
        self.addCleanup(self.ns.delete)
        # IPVS accepts an IPv4 member only when the local table says it is unicast or local;
        # in a namespace that never had an address there is no local table yet.
        self.ns.ip("link", "set", "lo", "up")
        self.ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer")
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.lock_dir = os.path.join(self.tmp.name, "run")
        self.site = copy.deepcopy(SITE)
        self.device_args = []

    def etherctl(self, *args, expect=0, env=None):
        path = os.path.join(self.tmp.name, "site.json")
        with open(path, "w") as f:
            json.dump(self.site, f)
        cmd = [ETHERCTL, "--netns", self.ns.name, *self.device_args, *args, path]
        result = subprocess.run(cmd, capture_output=True, text=True,
                                env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir, **(env or {})))
        self.assertEqual(result.returncode, expect,
                         f"{' '.join(cmd)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def apply(self, expect=0, command="apply", env=None):
        return json.loads(self.etherctl("--json", command, expect=expect, env=env).stdout)


class IpvsTest(IpvsBase):
    def setUp(self):
        super().setUp()
        require_feature(self, ipvs_available(self.ns), "IPVS support")

    def pool(self):
        return self.site["devices"]["dc1"]["pools"]["web"]

    def test_apply_creates_services_and_members_then_nothing(self):
        report = self.apply()
        self.assertTrue(report["changed"])
        self.assertEqual(report["errors"], [])
        kinds = sorted((c["op"], c["kind"]) for c in report["changes"])
        self.assertEqual(kinds, [("create", "ipvs_member")] * 3 + [("create", "ipvs_service")] * 2
                         + [("create", "self_ip")] * 2 + [("modify", "vlan")])
        self.assertEqual(ipvsadm(self.ns), {
            "TCP 192.0.2.10:80": {"scheduler": "wlc", "flags": [], "members": {
                "10.1.0.21:80": ("Masq", 1), "10.1.0.22:80": ("Masq", 2)}},
            "UDP [2001:db8::53]:53": {"scheduler": "rr", "flags": [], "members": {
                "[2001:db8:1::5]:53": ("Masq", 3)}},
        })
        again = self.apply()
        self.assertFalse(again["changed"])
        self.assertEqual(again["changes"], [])
        self.assertEqual(again["summary"]["unchanged"], 8)  # eth0, 2 self IPs, 5 IPVS objects
        self.assertEqual(again["netlink"]["writes"], 0)
        status = json.loads(self.etherctl("--json", "status").stdout)
        states = {o["key"]: (o["state"], o["owned"]) for o in status["status"]["objects"]}
        self.assertEqual(states["tcp 192.0.2.10:80"], ("in sync", True))
        self.assertEqual(states["tcp 192.0.2.10:80 -> 10.1.0.22:80"], ("in sync", True))

    def test_weight_and_scheduler_change_in_place(self):
        self.apply()
        self.pool()["members"]["10.1.0.22:80"]["weight"] = 0
        self.pool()["virtual"]["scheduler"] = "wrr"
        report = self.apply()
        changes = sorted((c["op"], c["kind"], c["key"]) for c in report["changes"])
        self.assertEqual(changes, [
            ("modify", "ipvs_member", "tcp 192.0.2.10:80 -> 10.1.0.22:80"),
            ("modify", "ipvs_service", "tcp 192.0.2.10:80"),
        ])
        member = next(c for c in report["changes"] if c["kind"] == "ipvs_member")
        self.assertEqual((member["before"], member["after"]), ({"weight": 2}, {"weight": 0}))
        web = ipvsadm(self.ns)["TCP 192.0.2.10:80"]
        self.assertEqual(web["scheduler"], "wrr")
        self.assertEqual(web["members"], {"10.1.0.21:80": ("Masq", 1), "10.1.0.22:80": ("Masq", 0)})
        self.assertFalse(self.apply()["changed"])

    def test_drift_is_repaired(self):
        self.apply()
        ns = ["ip", "netns", "exec", self.ns.name, "ipvsadm"]
        sh(*ns, "-e", "-t", "192.0.2.10:80", "-r", "10.1.0.21:80", "-m", "-w", "9")
        sh(*ns, "-d", "-t", "192.0.2.10:80", "-r", "10.1.0.22:80")
        report = self.apply()
        self.assertEqual(sorted(c["op"] for c in report["changes"]), ["create", "modify"])
        self.assertEqual(ipvsadm(self.ns)["TCP 192.0.2.10:80"]["members"],
                         {"10.1.0.21:80": ("Masq", 1), "10.1.0.22:80": ("Masq", 2)})

    def test_removed_member_and_pool_are_deleted(self):
        self.apply()
        del self.pool()["members"]["10.1.0.21:80"]
        report = self.apply()
        self.assertEqual([(c["op"], c["key"]) for c in report["changes"]],
                         [("delete", "tcp 192.0.2.10:80 -> 10.1.0.21:80")])
        self.assertEqual(ipvsadm(self.ns)["TCP 192.0.2.10:80"]["members"],
                         {"10.1.0.22:80": ("Masq", 2)})
        del self.site["devices"]["dc1"]["pools"]["web"]
        report = self.apply()
        self.assertEqual([(c["op"], c["kind"]) for c in report["changes"]],
                         [("delete", "ipvs_member"), ("delete", "ipvs_service")])
        self.assertEqual(list(ipvsadm(self.ns)), ["UDP [2001:db8::53]:53"])

    def test_foreign_service_is_never_touched(self):
        ns = ["ip", "netns", "exec", self.ns.name, "ipvsadm"]
        sh(*ns, "-A", "-t", "198.51.100.7:443", "-s", "rr")
        sh(*ns, "-a", "-t", "198.51.100.7:443", "-r", "10.9.9.9:443", "-m", "-w", "4")
        foreign = ipvsadm(self.ns)["TCP 198.51.100.7:443"]
        self.apply()
        self.assertEqual(ipvsadm(self.ns)["TCP 198.51.100.7:443"], foreign)
        self.assertFalse(self.apply()["changed"])
        report = self.apply(command="destroy")
        self.assertEqual(len([c for c in report["changes"] if c["kind"].startswith("ipvs_")]), 5)
        self.assertEqual(ipvsadm(self.ns), {"TCP 198.51.100.7:443": foreign})

    def test_status_without_a_site_file_lists_our_services_and_members(self):
        ns = ["ip", "netns", "exec", self.ns.name, "ipvsadm"]
        sh(*ns, "-A", "-t", "198.51.100.7:443", "-s", "rr")  # foreign: never listed
        self.apply()
        result = subprocess.run([ETHERCTL, "--netns", self.ns.name, "--json", "status"],
                                capture_output=True, text=True,
                                env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
        self.assertEqual(result.returncode, 0, result.stderr)
        objects = {(o["kind"], o["key"]): o for o in json.loads(result.stdout)["status"]["objects"]}
        # The oracle: every service and member ipvsadm shows, but the foreign one.
        listed = {f"{k.split()[0].lower()} {k.split()[1]}" for k in ipvsadm(self.ns)}
        listed.discard("tcp 198.51.100.7:443")
        self.assertEqual({key for kind, key in objects if kind == "ipvs_service"}, listed)
        self.assertEqual(objects[("ipvs_member", "tcp 192.0.2.10:80 -> 10.1.0.22:80")]
                         ["attrs"]["weight"], 2)
        self.assertEqual(len([kind for kind, _ in objects if kind == "ipvs_member"]), 3)

    def test_foreign_service_with_our_address_is_a_conflict(self):
        ns = ["ip", "netns", "exec", self.ns.name, "ipvsadm"]
        sh(*ns, "-A", "-t", "192.0.2.10:80", "-s", "wlc")
        sh(*ns, "-a", "-t", "192.0.2.10:80", "-r", "10.9.9.9:80", "-m")
        before = ipvsadm(self.ns)
        report = self.apply(expect=1)
        self.assertFalse(report["changed"])
        self.assertTrue(any(e["path"] == "/devices/dc1/pools/web" and
                            "not created by etherctl" in e["message"] for e in report["errors"]),
                        report["errors"])
        self.assertEqual(ipvsadm(self.ns), before)
        self.apply(command="destroy")
        self.assertEqual(ipvsadm(self.ns), before)

    def test_a_persistent_edit_by_another_tool_makes_the_service_foreign(self):
        self.apply()
        ns = ["ip", "netns", "exec", self.ns.name, "ipvsadm"]
        sh(*ns, "-E", "-t", "192.0.2.10:80", "-s", "wlc", "-p", "300")
        before = ipvsadm(self.ns)
        self.apply(command="destroy")
        after = ipvsadm(self.ns)
        self.assertEqual(after["TCP 192.0.2.10:80"], before["TCP 192.0.2.10:80"])
        self.assertNotIn("UDP [2001:db8::53]:53", after)

    def test_an_edit_by_ipvsadm_drops_the_mark(self):
        # ipvsadm -E without -p sends timeout 0: the service is no longer ours, and the file's
        # pool at its address is a conflict instead of a silent take-over.
        self.apply()
        sh("ip", "netns", "exec", self.ns.name, "ipvsadm", "-E", "-t", "192.0.2.10:80", "-s", "rr")
        report = self.apply(expect=1)
        self.assertTrue(any("not created by etherctl" in e["message"] for e in report["errors"]),
                        report["errors"])
        self.assertEqual(ipvsadm(self.ns)["TCP 192.0.2.10:80"]["scheduler"], "rr")

    def connections_per_member(self, count):
        """Opens `count` TCP connections from this namespace to the web VIP (the SYN is enough:
        IPVS schedules it) and returns how many of the connection entries (`ipvsadm -Lnc`;
        persistence templates left out) each member now has. ipvsadm's --stats counters lag
        behind by up to 2 s (the kernel folds its per-CPU counters in from a timer)."""
        script = ("import socket\n"
                  f"for _ in range({count}):\n"
                  "    s = socket.socket()\n"
                  "    s.settimeout(0.3)\n"
                  "    try:\n"
                  "        s.connect(('192.0.2.10', 80))\n"
                  "    except OSError:\n"
                  "        pass\n"
                  "    s.close()\n")
        sh("ip", "netns", "exec", self.ns.name, "/usr/bin/python3", "-c", script)
        entries = {}
        for line in sh("ip", "netns", "exec", self.ns.name, "ipvsadm", "-Lnc").splitlines():
            fields = line.split()
            if len(fields) == 6 and fields[0] == "TCP" and fields[2] != "NONE" \
                    and fields[4] == "192.0.2.10:80":
                entries[fields[5]] = entries.get(fields[5], 0) + 1
        return entries

    def test_the_ownership_mark_does_not_make_the_service_persistent(self):
        # The mark is the persistence timeout without the persistent flag: clients must still be
        # spread over the members. Same client address, round robin: every member gets some.
        self.ns.ip("link", "add", "srv0", "type", "veth", "peer", "name", "srv1")
        self.ns.ip("link", "set", "srv0", "up")
        self.ns.ip("link", "set", "srv1", "up")
        self.ns.ip("addr", "add", "10.1.0.1/24", "dev", "srv0")
        self.pool()["virtual"]["scheduler"] = "rr"
        self.pool()["members"] = {"10.1.0.21:80": {}, "10.1.0.22:80": {}}
        self.apply()
        self.assertEqual(ipvsadm(self.ns)["TCP 192.0.2.10:80"]["flags"], [])
        spread = self.connections_per_member(6)
        self.assertEqual(spread, {"10.1.0.21:80": 3, "10.1.0.22:80": 3})
        # Control: the same measurement does see persistence when it is switched on.
        sh("ip", "netns", "exec", self.ns.name, "ipvsadm", "-E", "-t", "192.0.2.10:80",
           "-s", "rr", "-p", "60")
        after = self.connections_per_member(6)
        grown = {m: after[m] - spread[m] for m in after if after[m] > spread[m]}
        self.assertEqual(list(grown.values()), [6], (spread, after))

    def fail_at_every_step(self, command="apply"):
        """Makes each change of the plan fail in turn (ETHERCTL_TEST_FAIL_AT_STEP); the kernel
        must read back as before every time."""
        before = ipvsadm(self.ns)
        if command == "apply":
            steps = len(json.loads(self.etherctl("--json", "plan").stdout)["changes"])
        else:  # destroy: every service here is ours, and so are their members
            steps = sum(1 + len(service["members"]) for service in before.values())
        self.assertGreater(steps, 0)
        for step in range(steps):
            report = self.apply(expect=1, command=command,
                                env={"ETHERCTL_TEST_FAIL_AT_STEP": str(step)})
            self.assertEqual(report["failed_step"], step)
            self.assertTrue(report["rolled_back"])
            self.assertEqual(len(report["errors"]), 1, report["errors"])
            self.assertEqual(ipvsadm(self.ns), before, f"after a failure at step {step}")

    def test_failures_roll_back(self):
        self.fail_at_every_step()  # a first apply
        self.apply()
        self.pool()["members"]["10.1.0.22:80"]["weight"] = 5
        self.pool()["virtual"]["scheduler"] = "sh"
        del self.pool()["members"]["10.1.0.21:80"]
        self.pool()["members"]["10.1.0.23:80"] = {}
        del self.site["devices"]["dc1"]["pools"]["dns6"]
        self.fail_at_every_step()  # a change of every kind: modify, delete, create
        self.fail_at_every_step(command="destroy")


LOCATION_SITE = {
    "etherctl": 1,
    "devices": {
        "dc1": {
            "vlans": {"wan": {"interface": "wan0"}, "servers": {"interface": "servers"}},
            "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
            "self_ips": {"wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                         "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"}},
            "pools": {"web": {
                "virtual": {"address": "192.0.2.10", "port": 80, "vlan": "wan"},
                "members": {"10.1.0.21:80": {}, "10.1.0.22:80": {"weight": 2},
                            "10.1.0.23:80": {"weight": 3}},
                "monitor": {"type": "virtual_location", "min_active_members": 1}}},
        },
        "dc2": {"vlans": {"wan": {"interface": "wan0"}},
                "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}},
    },
    "tunnels": {"dcx": {"profile": "etherip",
                        "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}},
}
MACS = {"10.1.0.21": "02:00:00:00:00:21", "10.1.0.22": "02:00:00:00:00:22",
        "10.1.0.23": "02:00:00:00:00:23"}


class LocationTest(IpvsBase):
    """Virtual Location through `apply` (the cron path): neighbour entries and FDB entries
    placed by hand stand for VMs seen on the server port (local) or the tunnel (remote)."""

    def setUp(self):
        super().setUp()
        require_feature(self, ipvs_available(self.ns), "IPVS support")
        self.site = copy.deepcopy(LOCATION_SITE)
        self.device_args = ["--device", "dc1"]
        for a, b in (("wan0", "wan0-peer"), ("servers", "servers-peer")):
            self.ns.ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.apply()  # the bridge, the tunnel, the pool (members unknown: configured weights)

    def place(self, address, port):
        """The member's MAC learned on `port` (of the vmotion bridge), its ARP entry known."""
        self.ns.ip("neigh", "replace", address, "lladdr", MACS[address], "dev", "vmotion",
                   "nud", "reachable")
        sh("bridge", "-n", self.ns.name, "fdb", "replace", MACS[address], "dev", port,
           "master", "static")

    def weights(self):
        return {m: w for m, (_, w) in ipvsadm(self.ns)["TCP 192.0.2.10:80"]["members"].items()}

    def locations(self):
        status = json.loads(self.etherctl("--json", "status").stdout)
        return {m["member"]: (m["location"], m["effective_weight"])
                for m in status["status"]["members"]}

    def test_remote_members_are_quiesced_while_local_ones_remain(self):
        self.assertEqual(self.weights(), {"10.1.0.21:80": 1, "10.1.0.22:80": 2, "10.1.0.23:80": 3})
        self.place("10.1.0.21", "servers")
        self.place("10.1.0.22", "dcx")
        report = self.apply()
        self.assertEqual([(c["op"], c["key"], c["after"]) for c in report["changes"]],
                         [("modify", "tcp 192.0.2.10:80 -> 10.1.0.22:80", {"weight": 0})])
        self.assertEqual(self.weights(), {"10.1.0.21:80": 1, "10.1.0.22:80": 0, "10.1.0.23:80": 3})
        self.assertEqual(self.locations(), {"10.1.0.21:80": ("local", 1),
                                            "10.1.0.22:80": ("remote", 0),
                                            "10.1.0.23:80": ("unknown", 3)})
        # Idempotent: the location weights are the desired state, not a change every run.
        self.assertFalse(self.apply()["changed"])
        # The plan shows the weights too, and the digest ignores them (same file, same digest).
        self.assertEqual(self.apply(command="plan")["changes"], [])
        # The VM moves back to this data center: its weight comes back.
        self.place("10.1.0.22", "servers")
        self.apply()
        self.assertEqual(self.weights(), {"10.1.0.21:80": 1, "10.1.0.22:80": 2, "10.1.0.23:80": 3})

    def test_remote_members_carry_traffic_when_no_local_member_is_left(self):
        for address in MACS:
            self.place(address, "dcx")
        self.apply()
        self.assertEqual(self.weights(), {"10.1.0.21:80": 1, "10.1.0.22:80": 2, "10.1.0.23:80": 3})
        self.assertEqual({m: l for m, (l, _) in self.locations().items()},
                         dict.fromkeys(["10.1.0.21:80", "10.1.0.22:80", "10.1.0.23:80"], "remote"))
        self.place("10.1.0.23", "servers")
        self.apply()
        self.assertEqual(self.weights(), {"10.1.0.21:80": 0, "10.1.0.22:80": 0, "10.1.0.23:80": 3})

    def test_the_digest_is_the_files_not_the_locations(self):
        before = self.apply(command="plan")["digest"]
        self.place("10.1.0.22", "dcx")
        self.place("10.1.0.21", "servers")
        self.assertEqual(self.apply()["digest"], before)

    def test_apply_resolves_members_without_a_neighbour_entry(self):
        # Nothing answers, but the probe leaves an entry in resolution for the member.
        self.apply()
        entries = sh("ip", "-n", self.ns.name, "neigh", "show", "dev", "vmotion")
        self.assertIn("10.1.0.21", entries)
        self.assertIn("10.1.0.23", entries)
        # plan and status only read: no probe for an address they see without an entry.
        self.ns.ip("neigh", "flush", "dev", "vmotion")
        self.etherctl("plan")
        self.etherctl("status")
        self.assertNotIn("10.1.0.21", sh("ip", "-n", self.ns.name, "neigh", "show", "dev",
                                         "vmotion"))


# A member that greets every connection with its own address (IPVS in NAT mode: the client
# sees the virtual address, the greeting names the member that took it).
GREETER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 80)); s.listen(16); print("listening", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"member " + sys.argv[1].encode() + b"\\n"); c.close()
"""
FETCH = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 80), timeout=float(sys.argv[2])) as s:
        print(s.recv(100).decode().strip())
except OSError as e:
    print("failed:", e)
"""
VIP = "198.51.100.10"


class VirtualAddressTest(IpvsBase):
    """A pool's virtual address that is no self IP (BIG-IP's virtual address): etherctl adds it
    as a host address on the VLAN that faces the clients, so that a client on that VLAN
    reaches a member through IPVS (NAT); it shows in plan and status, carries etherctl's mark,
    and goes with the last pool that uses it.

      client 198.51.100.2 ── wan0 [198.51.100.1/24, VIP 198.51.100.10] srv0 ── 10.1.0.21 member
    """

    def setUp(self):
        super().setUp()
        require_feature(self, ipvs_available(self.ns), "IPVS support")
        self.client = Netns("ecvipc")
        self.addCleanup(self.client.delete)
        self.member = Netns("ecvipm")
        self.addCleanup(self.member.delete)
        for ours, theirs in (("wan0", self.client), ("srv0", self.member)):
            sh("ip", "link", "add", ours, "netns", self.ns.name, "type", "veth", "peer", "name",
               "eth0", "netns", theirs.name)
            theirs.ip("link", "set", "lo", "up")
            theirs.ip("link", "set", "eth0", "up")
        self.client.ip("addr", "add", "198.51.100.2/24", "dev", "eth0")
        self.member.ip("addr", "add", "10.1.0.21/24", "dev", "eth0")
        self.member.ip("route", "add", "default", "via", "10.1.0.1")
        sh("ip", "netns", "exec", self.ns.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        greeter = subprocess.Popen(["ip", "netns", "exec", self.member.name, "/usr/bin/python3",
                                    "-c", GREETER, "10.1.0.21"], stdout=subprocess.PIPE, text=True)
        self.addCleanup(greeter.stdout.close)
        self.addCleanup(greeter.wait)
        self.addCleanup(greeter.kill)
        self.assertEqual(greeter.stdout.readline().strip(), "listening")
        self.site = {"etherctl": 1, "devices": {"dc1": {
            "vlans": {"wan": {"interface": "wan0"}, "servers": {"interface": "srv0"}},
            "self_ips": {"wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                         "server-self": {"address": "10.1.0.1/24", "vlan": "servers"}},
            "pools": {"web": {"virtual": {"address": VIP, "port": 80, "scheduler": "rr"},
                              "members": {"10.1.0.21:80": {}}}}}}}

    def fetch(self, timeout=10):
        return sh("ip", "netns", "exec", self.client.name, "/usr/bin/python3", "-c", FETCH, VIP,
                  str(timeout)).strip()

    def vip_addresses(self):
        return {(a["ifname"], f'{i["local"]}/{i["prefixlen"]}')
                for a in self.ns.ip_json("addr", "show") for i in a.get("addr_info", [])
                if i["local"] == VIP}

    def test_a_client_reaches_a_member_through_the_virtual_address(self):
        plan = self.apply(command="plan")
        created = {(c["kind"], c["key"]): c["path"] for c in plan["changes"]}
        self.assertEqual(created[("self_ip", f"wan0 {VIP}/32")],
                         "/devices/dc1/pools/web/virtual/address")
        self.apply()
        self.assertEqual(self.vip_addresses(), {("wan0", f"{VIP}/32")})
        self.assertEqual(self.fetch(), "member 10.1.0.21")
        # Marked as etherctl's (IFA_PROTO 231): status finds it without the site file too.
        bare = subprocess.run([ETHERCTL, "--netns", self.ns.name, "--json", "status"],
                              capture_output=True, text=True,
                              env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
        keys = {(o["kind"], o["key"]) for o in json.loads(bare.stdout)["status"]["objects"]}
        self.assertIn(("self_ip", f"wan0 {VIP}/32"), keys)
        status = json.loads(self.etherctl("--json", "status").stdout)["status"]
        states = {o["key"]: (o["state"], o["path"]) for o in status["objects"]}
        self.assertEqual(states[f"wan0 {VIP}/32"],
                         ("in sync", "/devices/dc1/pools/web/virtual/address"))
        # The failure this fixes: the service without the local address gets nothing.
        self.ns.ip("addr", "del", f"{VIP}/32", "dev", "wan0")
        self.client.ip("neigh", "flush", "dev", "eth0")
        self.assertTrue(self.fetch(timeout=3).startswith("failed"), "reached without the VIP")
        self.assertEqual([(c["op"], c["key"]) for c in self.apply()["changes"]],
                         [("create", f"wan0 {VIP}/32")])
        self.assertEqual(self.fetch(), "member 10.1.0.21")

    def test_pools_sharing_the_address_share_it_and_the_last_one_takes_it_away(self):
        pools = self.site["devices"]["dc1"]["pools"]
        pools["alt"] = {"virtual": {"address": VIP, "port": 8080},
                        "members": {"10.1.0.21:80": {}}}
        report = self.apply()
        self.assertEqual(len([c for c in report["changes"] if c["kind"] == "self_ip"
                              and c["key"] == f"wan0 {VIP}/32"]), 1)
        del pools["web"]
        self.assertEqual([c["kind"] for c in self.apply()["changes"]],
                         ["ipvs_member", "ipvs_service"])
        self.assertEqual(self.vip_addresses(), {("wan0", f"{VIP}/32")})
        del pools["alt"]
        report = self.apply()
        self.assertEqual([(c["op"], c["kind"]) for c in report["changes"]][-1],
                         ("delete", "self_ip"))
        self.assertEqual(self.vip_addresses(), set())
        # Declared as a self IP instead: nothing is added, and it keeps working.
        self.site["devices"]["dc1"]["self_ips"]["vip"] = {"address": f"{VIP}/24", "vlan": "wan"}
        pools["web"] = {"virtual": {"address": VIP, "port": 80}, "members": {"10.1.0.21:80": {}}}
        self.apply()
        self.assertEqual(self.vip_addresses(), {("wan0", f"{VIP}/24")})
        self.assertEqual(self.fetch(), "member 10.1.0.21")


class NoIpvsTest(IpvsBase):
    """Only on a kernel without IPVS: plan works, apply names the missing feature."""

    def test_kernel_without_ipvs(self):
        if ipvs_available(self.ns):
            self.skipTest("this kernel has IPVS")
        self.etherctl("plan")
        report = self.apply(expect=1)
        self.assertIn(NO_IPVS, report["errors"][0]["message"])
        self.assertEqual(report["errors"][0]["path"], "/devices/dc1/pools/dns6")
        self.assertTrue(report["rolled_back"])


if __name__ == "__main__":
    unittest.main()
