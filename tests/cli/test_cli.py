"""etherctl's command line against the real kernel, in throwaway network namespaces.

Run with /usr/bin/python3 -m unittest; ETHERCTL is the binary under test."""
import copy
import fcntl
import json
import os
import subprocess
import tempfile
import threading
import time
import unittest

from netns import Netns, have_vlan_support, require_feature, sh

ETHERCTL = os.environ.get("ETHERCTL", "etherctl")
ALIAS = "etherctl:dc1"

# Untagged VLANs (adopted veths) so the core runs on kernels without 802.1Q.
SITE = {
    "etherctl": 1,
    "devices": {"dc1": {
        "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
        "vlan_groups": {"vmotion": {"members": ["servers"], "mode": "transparent"}},
        "self_ips": {
            "wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
            "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"},
            "server-v6": {"address": "2001:db8:1::1/64", "vlan": "vmotion"},
        },
        "routes": {
            "to-dc2": {"destination": "203.0.113.0/24", "gateway": "198.51.100.254"},
            "to-dc2-v6": {"destination": "2001:db8:2::/64", "vlan": "vmotion"},
        },
    }},
}


class CliBase(unittest.TestCase):
    """A namespace with two veths standing in for NICs, and etherctl runners."""

    def setUp(self):
        self.ns = Netns()
        self.addCleanup(self.ns.delete)
        self.ns.ip("link", "add", "eth0", "type", "veth", "peer", "name", "wan-peer")
        self.ns.ip("link", "add", "eth1", "type", "veth", "peer", "name", "srv-peer")
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.lock_dir = os.path.join(self.tmp.name, "run")  # per test: no cross-test lock fights
        self.site = copy.deepcopy(SITE)

    def write_site(self, site=None):
        path = os.path.join(self.tmp.name, "site.json")
        with open(path, "w") as f:
            json.dump(self.site if site is None else site, f)
        return path

    def etherctl(self, *args, site=None, expect=0, env=None):
        cmd = [ETHERCTL, "--netns", self.ns.name, *args]
        if args and args[-1] != "--":
            cmd.append(self.write_site(site))
        full_env = dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir, **(env or {}))
        result = subprocess.run(cmd, capture_output=True, text=True, env=full_env)
        if expect is not None:
            self.assertEqual(result.returncode, expect,
                             f"{' '.join(cmd)}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def apply_json(self, *extra, expect=0, site=None, env=None):
        result = self.etherctl("--json", *extra, "apply", site=site, expect=expect, env=env)
        return json.loads(result.stdout)


class CliTest(CliBase):
    # --- create, idempotence, ownership marks -------------------------------------------------

    def test_apply_creates_everything_marked_as_ours(self):
        report = self.apply_json()
        self.assertTrue(report["changed"])
        self.assertEqual(report["device"], "dc1")
        self.assertEqual(report["errors"], [])
        links = self.ns.links()
        bridge = links["vmotion"]
        self.assertEqual(bridge["linkinfo"]["info_kind"], "bridge")
        self.assertEqual(bridge.get("ifalias"), ALIAS)
        self.assertIn("UP", bridge["flags"])
        self.assertEqual(links["eth1"].get("master"), "vmotion")
        self.assertIn("UP", links["eth0"]["flags"])
        self.assertNotIn("ifalias", links["eth0"])  # adopted interfaces are never marked
        self.assertEqual(self.ns.addresses(), {("eth0", "198.51.100.1/24"),
                                               ("vmotion", "10.1.0.1/24"),
                                               ("vmotion", "2001:db8:1::1/64")})
        routes = self.ns.routes()
        self.assertEqual(routes["203.0.113.0/24"]["gateway"], "198.51.100.254")
        self.assertEqual(routes["203.0.113.0/24"]["protocol"], "231")
        self.assertEqual(routes["2001:db8:2::/64"]["dev"], "vmotion")
        self.assertEqual(routes["2001:db8:2::/64"]["protocol"], "231")

    def test_second_apply_changes_nothing_and_writes_nothing(self):
        self.apply_json()
        before = self.ns.state()
        report = self.apply_json()
        self.assertFalse(report["changed"])
        self.assertEqual(report["changes"], [])
        self.assertEqual(report["netlink"]["writes"], 0)
        self.assertEqual(report["summary"], {"create": 0, "modify": 0, "delete": 0,
                                             "unchanged": 9})
        self.assertEqual(self.ns.state(), before)

    def test_json_output_is_one_object_with_the_documented_fields(self):
        result = self.etherctl("--json", "plan")
        report = json.loads(result.stdout)  # exactly one object: json.loads rejects trailing data
        self.assertTrue({"changed", "device", "summary", "changes", "errors",
                         "duration_ms"} <= set(report))
        self.assertFalse(report["changed"])  # plan never changes anything
        change = report["changes"][0]
        self.assertEqual(set(change) & {"op", "kind", "name", "path", "before", "after"},
                         {"op", "kind", "name", "path", "before", "after"})
        paths = {c["path"] for c in report["changes"]}
        self.assertIn("/devices/dc1/vlan_groups/vmotion", paths)

    def test_plan_changes_nothing(self):
        before = self.ns.state()
        self.etherctl("plan")
        self.assertEqual(self.ns.state(), before)

    # --- change in place, removal -------------------------------------------------------------

    def test_mtu_changes_in_place_keeping_ports_and_fdb(self):
        self.apply_json()
        ifindex = self.ns.links()["vmotion"]["ifindex"]
        # A learned FDB entry must survive (a delete-and-recreate would flush it).
        self.ns.ip("link", "set", "srv-peer", "up")
        sh("bridge", "-n", self.ns.name, "fdb", "add", "02:00:00:00:00:01", "dev", "eth1",
           "master", "static")
        self.site["devices"]["dc1"]["vlan_groups"]["vmotion"]["mtu"] = 1400
        report = self.apply_json()
        self.assertEqual([(c["op"], c["kind"]) for c in report["changes"]],
                         [("modify", "vlan_group")])
        self.assertEqual(report["changes"][0]["before"], {"mtu": 1500})
        links = self.ns.links()
        self.assertEqual(links["vmotion"]["ifindex"], ifindex)
        self.assertEqual(links["vmotion"]["mtu"], 1400)
        self.assertEqual(links["eth1"].get("master"), "vmotion")
        fdb = json.loads(sh("bridge", "-n", self.ns.name, "-j", "fdb", "show", "br", "vmotion"))
        self.assertIn("02:00:00:00:00:01", {e["mac"] for e in fdb})

    def test_explicit_bridge_mtu_holds_when_ports_join_on_the_first_apply(self):
        # The kernel lets a bridge follow its ports' MTU unless the MTU was *changed* by a
        # setlink; created with it, the first port joining overrode it and verify failed.
        for bridge_mtu, port_mtu in ((1400, 1500), (1500, 1450)):
            with self.subTest(bridge=bridge_mtu, port=port_mtu):
                self.etherctl("destroy")
                self.site["devices"]["dc1"]["vlan_groups"]["vmotion"]["mtu"] = bridge_mtu
                self.site["devices"]["dc1"]["vlans"]["servers"]["mtu"] = port_mtu
                self.apply_json()
                self.assertEqual(self.ns.links()["vmotion"]["mtu"], bridge_mtu)
                self.assertFalse(self.apply_json()["changed"])

    def test_removed_objects_are_deleted_on_next_apply(self):
        self.apply_json()
        del self.site["devices"]["dc1"]["self_ips"]["server-v6"]
        del self.site["devices"]["dc1"]["routes"]["to-dc2"]
        report = self.apply_json()
        self.assertEqual(sorted((c["op"], c["kind"], c["key"]) for c in report["changes"]),
                         [("delete", "route", "203.0.113.0/24"),
                          ("delete", "self_ip", "vmotion 2001:db8:1::1/64")])
        self.assertNotIn(("vmotion", "2001:db8:1::1/64"), self.ns.addresses())
        self.assertNotIn("203.0.113.0/24", self.ns.routes())
        self.assertIn(("vmotion", "10.1.0.1/24"), self.ns.addresses())

    def test_destroy_removes_a_primary_address_and_its_secondary(self):
        # The kernel deletes an IPv4 primary address's secondaries with it; the plan's delete
        # of the secondary then met "Address not found" and the whole destroy rolled back.
        self.site["devices"]["dc1"]["self_ips"]["wan-self2"] = {"address": "198.51.100.2/24",
                                                                "vlan": "wan"}
        self.apply_json()
        self.etherctl("destroy")
        self.assertEqual(self.ns.addresses(), set())

    def test_group_member_removed_from_file_is_released(self):
        self.apply_json()
        self.site["devices"]["dc1"]["vlan_groups"]["vmotion"]["members"] = []
        self.apply_json()
        self.assertNotIn("master", self.ns.links()["eth1"])

    # --- foreign objects ----------------------------------------------------------------------

    def add_foreign_objects(self):
        self.ns.ip("link", "add", "vnet0", "type", "veth", "peer", "name", "vnet0-vm")
        self.ns.ip("link", "add", "br-foreign", "type", "bridge")
        self.ns.ip("addr", "add", "192.0.2.1/24", "dev", "eth0")
        self.ns.ip("link", "set", "eth0", "up")
        self.ns.ip("route", "add", "192.0.2.128/25", "via", "192.0.2.2")

    def test_foreign_objects_are_never_touched(self):
        self.add_foreign_objects()
        self.apply_json()
        # A hypervisor plugs a VM's vNIC into our bridge.
        self.ns.ip("link", "set", "vnet0", "master", "vmotion")
        report = self.apply_json()
        self.assertFalse(report["changed"], report["changes"])
        links = self.ns.links()
        self.assertEqual(links["vnet0"].get("master"), "vmotion")
        self.assertIn("br-foreign", links)
        self.assertIn(("eth0", "192.0.2.1/24"), self.ns.addresses())
        self.assertIn("192.0.2.128/25", self.ns.routes())
        # Destroy removes only ours.
        self.etherctl("destroy")
        links = self.ns.links()
        self.assertNotIn("vmotion", links)
        self.assertIn("vnet0", links)
        self.assertIn("br-foreign", links)
        self.assertIn("eth0", links)
        self.assertIn("eth1", links)  # adopted: never deleted
        self.assertEqual(self.ns.addresses(), {("eth0", "192.0.2.1/24")})
        routes = self.ns.routes()
        self.assertIn("192.0.2.128/25", routes)
        self.assertNotIn("203.0.113.0/24", routes)

    def test_a_foreign_address_identical_to_ours_is_left_to_its_owner(self):
        self.ns.ip("addr", "add", "198.51.100.1/24", "dev", "eth0")
        self.apply_json()
        self.etherctl("destroy")
        self.assertIn(("eth0", "198.51.100.1/24"), self.ns.addresses())

    def test_name_taken_by_a_foreign_interface_fails_before_any_change(self):
        self.ns.ip("link", "add", "vmotion", "type", "veth", "peer", "name", "x-peer")
        before = self.ns.state()
        result = self.etherctl("apply", expect=1)
        self.assertIn("/devices/dc1/vlan_groups/vmotion", result.stderr)
        self.assertIn("not created by etherctl", result.stderr)
        self.assertEqual(self.ns.state(), before)

    def test_missing_adopted_interface_fails_before_any_change(self):
        self.site["devices"]["dc1"]["vlans"]["wan"]["interface"] = "eth9"
        before = self.ns.state()
        result = self.etherctl("apply", expect=1)
        self.assertIn('/devices/dc1/vlans/wan: interface "eth9" does not exist', result.stderr)
        self.assertEqual(self.ns.state(), before)

    # --- destroy, status ----------------------------------------------------------------------

    def test_destroy_removes_all_we_own(self):
        self.apply_json()
        report = json.loads(self.etherctl("--json", "destroy").stdout)
        self.assertTrue(report["changed"])
        links = self.ns.links()
        self.assertNotIn("vmotion", links)
        self.assertNotIn("master", links["eth1"])
        self.assertEqual(self.ns.addresses(), set())
        self.assertNotIn("203.0.113.0/24", self.ns.routes())
        again = json.loads(self.etherctl("--json", "destroy").stdout)
        self.assertFalse(again["changed"])

    def test_status_shows_objects_and_drift(self):
        self.apply_json()
        self.ns.ip("link", "set", "vmotion", "mtu", "1400")
        self.site["devices"]["dc1"]["vlan_groups"]["vmotion"]["mtu"] = 1500
        status = json.loads(self.etherctl("--json", "status").stdout)["status"]["objects"]
        by_key = {(o["kind"], o["key"]): o for o in status}
        self.assertEqual(by_key[("vlan_group", "vmotion")]["state"], "drifted")
        self.assertTrue(by_key[("vlan_group", "vmotion")]["owned"])
        self.assertEqual(by_key[("self_ip", "vmotion 10.1.0.1/24")]["state"], "in sync")
        text = self.etherctl("status").stdout
        self.assertIn("vmotion", text)
        self.assertIn("drifted", text)

    def status_without_site(self, *args, expect=0):
        cmd = [ETHERCTL, "--netns", self.ns.name, *args, "status"]
        result = subprocess.run(cmd, capture_output=True, text=True,
                                env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
        self.assertEqual(result.returncode, expect, f"{cmd}\n{result.stdout}\n{result.stderr}")
        return result

    def test_status_without_a_site_file_lists_what_etherctl_owns(self):
        # Nothing owned yet: an empty list, and the hint that a site file adds the comparison.
        empty = json.loads(self.status_without_site("--json").stdout)
        self.assertEqual(empty["status"]["objects"], [])
        self.assertIsNone(empty["status"]["site_file"])
        self.apply_json()
        # Foreign objects, and a bridge that another device's apply marked (etherctl:dc2).
        self.ns.ip("link", "add", "foreign0", "type", "bridge")
        self.ns.ip("addr", "add", "192.0.2.99/24", "dev", "foreign0")
        self.ns.ip("link", "set", "foreign0", "up")
        self.ns.ip("route", "add", "192.0.3.0/24", "dev", "foreign0", "proto", "static")
        self.ns.ip("link", "add", "other0", "type", "bridge")
        self.ns.ip("link", "set", "other0", "alias", "etherctl:dc2")
        report = json.loads(self.status_without_site("--json").stdout)
        self.assertEqual(report["changes"], [], "status without a site file plans nothing")
        self.assertEqual(report["errors"], [])
        status = report["status"]
        self.assertIsNone(status["site_file"])
        self.assertEqual(status["last_applied"]["command"], "apply")
        objects = {(o["kind"], o["key"]): o for o in status["objects"]}
        self.assertEqual(set(objects), {
            ("vlan_group", "vmotion"), ("vlan_group", "other0"), ("port", "vmotion/eth1"),
            ("self_ip", "eth0 198.51.100.1/24"), ("self_ip", "vmotion 10.1.0.1/24"),
            ("self_ip", "vmotion 2001:db8:1::1/64"), ("route", "203.0.113.0/24"),
            ("route", "2001:db8:2::/64")})
        self.assertEqual(objects[("vlan_group", "vmotion")]["device"], "dc1")
        self.assertEqual(objects[("vlan_group", "other0")]["device"], "dc2")
        self.assertEqual(objects[("port", "vmotion/eth1")]["device"], "dc1")
        self.assertEqual(objects[("self_ip", "eth0 198.51.100.1/24")]["device"], "")  # adopted
        self.assertEqual(objects[("route", "203.0.113.0/24")]["attrs"]["gateway"],
                         "198.51.100.254")
        # The kernel's own marks, read by `ip` (the oracle): protocol 231 on ours only.
        routes = self.ns.routes()
        self.assertEqual({k for k, r in routes.items() if r.get("protocol") == "231"},
                         {key for kind, key in objects if kind == "route"})
        # Read-only: the namespace is as it was.
        before = self.ns.state()
        text = self.status_without_site().stdout
        self.assertEqual(self.ns.state(), before)
        self.assertRegex(text, r"vlan_group +vmotion +dc1 ")
        self.assertRegex(text, r"vlan_group +other0 +dc2 ")
        self.assertNotIn("foreign0", text)
        self.assertIn("etherctl status site.json", text)
        # The other commands still need one.
        for command in ("plan", "apply", "destroy", "validate"):
            result = subprocess.run([ETHERCTL, "--netns", self.ns.name, command],
                                    capture_output=True, text=True,
                                    env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
            self.assertEqual(result.returncode, 64, command)

    def test_configuration_digest_ignores_formatting_and_tracks_the_last_apply(self):
        first = json.loads(self.etherctl("--json", "plan").stdout)["digest"]
        self.assertRegex(first, r"^sha256:[0-9a-f]{64}$")
        # Same configuration, other spelling: keys reordered, indented.
        path = os.path.join(self.tmp.name, "reformatted.json")
        with open(path, "w") as f:
            json.dump(json.loads(json.dumps(self.site), object_pairs_hook=lambda p: dict(
                reversed(p))), f, indent=4)
        result = subprocess.run([ETHERCTL, "--netns", self.ns.name, "--json", "plan", path],
                                capture_output=True, text=True,
                                env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
        self.assertEqual(json.loads(result.stdout)["digest"], first)
        self.apply_json()
        status = json.loads(self.etherctl("--json", "status").stdout)["status"]
        self.assertTrue(status["in_sync"])
        self.assertEqual(status["digest"], first)
        self.assertEqual(status["last_applied"]["digest"], first)
        self.site["devices"]["dc1"]["vlan_groups"]["vmotion"]["mtu"] = 1400
        changed = json.loads(self.etherctl("--json", "status").stdout)["status"]
        self.assertNotEqual(changed["digest"], first)
        self.assertFalse(changed["in_sync"])
        self.assertEqual(changed["last_applied"]["digest"], first)

    # --- exit codes ---------------------------------------------------------------------------

    def test_detailed_exitcodes(self):
        self.etherctl("--detailed-exitcodes", "plan", expect=2)
        self.etherctl("--detailed-exitcodes", "apply", expect=2)
        self.etherctl("--detailed-exitcodes", "plan", expect=0)
        self.etherctl("--detailed-exitcodes", "apply", expect=0)
        self.ns.ip("link", "set", "vmotion", "down")  # drift behind etherctl's back
        self.etherctl("--detailed-exitcodes", "plan", expect=2)
        self.etherctl("plan", expect=0)

    def test_invalid_site_exits_65_and_touches_nothing(self):
        self.site["devices"]["dc1"]["vlans"]["servers"]["tag"] = 5000
        before = self.ns.state()
        result = self.etherctl("apply", expect=65)
        self.assertIn("/devices/dc1/vlans/servers/tag: 5000 is out of range 1..4094",
                      result.stderr)
        self.assertEqual(self.ns.state(), before)
        report = json.loads(self.etherctl("--json", "apply", expect=65).stdout)
        self.assertEqual(report["errors"][0]["path"], "/devices/dc1/vlans/servers/tag")

    def test_a_failover_unit_without_its_agent_takes_no_role(self):
        # A valid pair (issue 17) applied by `apply` alone, without the unit's agent (`etherctl
        # watch`): the role is unknown, so everything but the role's objects is applied; no
        # floating self IP is added and no keepalived is started (only the agent starts it:
        # docs/failover.md). Status and the report say why.
        site = {"etherctl": 1, "devices": {}, "failover_groups": {
            "dc1": {"devices": ["dc1-a", "dc1-b"], "vlan": "wan", "virtual_router_id": 51}}}
        for name, priority, last in (("dc1-a", 200, 11), ("dc1-b", 100, 12)):
            unit = copy.deepcopy(SITE["devices"]["dc1"])
            unit["failover"] = {"group": "dc1", "priority": priority}
            unit["self_ips"]["wan-self"]["address"] = f"198.51.100.{last}/24"
            unit["self_ips"]["wan-floating"] = {"address": "198.51.100.1/24", "vlan": "wan",
                                                "floating": True}
            site["devices"][name] = unit
        self.etherctl("--device", "dc1-a", "validate", site=site, expect=0)
        report = self.apply_json("--device", "dc1-a", site=site)
        self.assertEqual(report["failover"]["role"], "unknown", report)
        self.assertEqual(report["failover"]["role_source"], "no agent running", report)
        addresses = self.ns.addresses()
        self.assertIn(("eth0", "198.51.100.11/24"), addresses)
        self.assertIn(("vmotion", "10.1.0.1/24"), addresses)
        self.assertNotIn(("eth0", "198.51.100.1/24"), addresses)
        pids = sh("ip", "netns", "pids", self.ns.name).split()
        comms = []
        for pid in pids:
            try:
                with open(f"/proc/{pid}/comm") as f:
                    comms.append(f.read().strip())
            except OSError:
                pass
        self.assertNotIn("keepalived", comms)
        self.assertEqual(self.apply_json("--device", "dc1-a", site=site)["changes"], [])
        status = json.loads(self.etherctl("--device", "dc1-a", "--json", "status", site=site,
                                          expect=None).stdout)
        self.assertEqual(status["status"]["failover"]["role"], "unknown")
        self.assertFalse(status["status"]["failover"]["agent_running"])

    def test_usage_error_exits_64(self):
        result = subprocess.run([ETHERCTL, "apply"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 64, result.stderr)
        result = subprocess.run([ETHERCTL, "frobnicate", "x"], capture_output=True, text=True)
        self.assertEqual(result.returncode, 64, result.stderr)

    def test_unknown_namespace_is_a_clear_error(self):
        path = self.write_site()
        for command in ("plan", "apply", "status"):  # status used to abort (core dump)
            with self.subTest(command):
                result = subprocess.run([ETHERCTL, "--netns", "no-such-ns-xyz", command, path],
                                        capture_output=True, text=True)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertIn('network namespace "no-such-ns-xyz" does not exist',
                              result.stderr)

    def test_device_selection(self):
        self.site["devices"]["dc2"] = {}
        result = self.etherctl("plan", expect=65)
        self.assertIn("choose one with --device (devices: dc1, dc2)", result.stderr)
        self.etherctl("--device", "dc1", "plan")

    # --- lock ---------------------------------------------------------------------------------

    def lock_file(self):
        ino = os.stat(f"/run/netns/{self.ns.name}").st_ino
        os.makedirs(self.lock_dir, exist_ok=True)
        return os.path.join(self.lock_dir, f"netns-{ino}.lock")

    def test_second_run_exits_3_while_the_lock_is_held(self):
        with open(self.lock_file(), "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            held.write("4242\n")
            held.flush()
            before = self.ns.state()
            result = self.etherctl("apply", expect=3)
            self.assertIn("held by etherctl run with pid 4242", result.stderr)
            self.assertEqual(self.ns.state(), before)

    def test_wait_waits_for_the_lock(self):
        held = open(self.lock_file(), "w")
        fcntl.flock(held, fcntl.LOCK_EX)
        release = threading.Timer(1.0, held.close)
        release.start()
        started = time.monotonic()
        self.etherctl("--wait", "apply")
        self.assertGreaterEqual(time.monotonic() - started, 0.9)
        release.join()


class ProgressTest(CliBase):
    """A long apply on a terminal shows progress on stderr; piped output never has it."""

    def many_addresses(self):
        site = copy.deepcopy(SITE)
        self_ips = site["devices"]["dc1"]["self_ips"]
        for i in range(80):
            self_ips[f"extra{i}"] = {"address": f"10.2.{i}.1/24", "vlan": "vmotion"}
        return site

    def run_on_terminal(self, *args, site):
        """Runs etherctl with stderr on a pseudo-terminal; returns (status, stdout, stderr)."""
        import pty
        leader, follower = pty.openpty()
        proc = subprocess.Popen([ETHERCTL, "--netns", self.ns.name, *args, self.write_site(site)],
                                stdout=subprocess.PIPE, stderr=follower,
                                env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
        os.close(follower)
        stdout = proc.stdout.read()
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        os.close(leader)
        proc.stdout.close()
        return proc.wait(), stdout.decode(), b"".join(chunks).decode()

    def test_progress_on_a_terminal_only(self):
        site = self.many_addresses()
        status, stdout, stderr = self.run_on_terminal("apply", site=site)
        self.assertEqual(status, 0, stdout + stderr)
        self.assertRegex(stderr, r"^\r\x1b\[K\[1/89\] modify vlan servers")
        self.assertTrue(stderr.endswith("\r\x1b[K"), repr(stderr[-40:]))  # the line is cleared
        self.assertNotIn("\x1b[K", stdout)
        # Piped: no progress at all; --json on a terminal: none either.
        result = self.etherctl("destroy", site=site)
        self.assertNotIn("[1/", result.stderr)
        status, stdout, stderr = self.run_on_terminal("--json", "apply", site=site)
        self.assertEqual((status, stderr), (0, ""))
        # A short plan finishes before progress would help: none.
        self.etherctl("destroy", site=site)
        status, _, stderr = self.run_on_terminal("apply", site=SITE)
        self.assertEqual(status, 0)
        self.assertEqual(stderr, "")


class SiteFileTest(CliBase):
    """What etherctl says about the site file itself, before it touches anything."""

    def test_site_writable_by_others_is_warned_about_and_the_run_proceeds(self):
        path = self.write_site()
        os.chmod(self.tmp.name, 0o700)
        for mode, who in ((0o666, "its group and others"), (0o620, "its group"),
                          (0o602, "others")):
            os.chmod(path, mode)
            result = self.etherctl("plan")  # exit 0 checked
            self.assertIn(f"etherctl: warning: site file {path} is writable by {who} "
                          f"(mode {mode:04o})", result.stderr)
            self.assertIn("Plan for device dc1", result.stdout)
        # --json: stdout stays exactly one JSON object; apply goes ahead.
        report = self.apply_json()
        self.assertTrue(report["changed"])
        os.chmod(path, 0o644)
        result = self.etherctl("plan")
        self.assertNotIn("warning", result.stderr)
        self.assertEqual(result.stderr, "")

    def test_directory_writable_by_others_is_warned_about_unless_sticky(self):
        path = self.write_site()
        os.chmod(path, 0o644)
        os.chmod(self.tmp.name, 0o777)
        self.addCleanup(os.chmod, self.tmp.name, 0o700)
        result = self.etherctl("validate")
        self.assertIn(f"etherctl: warning: the site file's directory {self.tmp.name} is writable "
                      "by its group and others (mode 0777)", result.stderr)
        self.assertNotIn("warning: site file", result.stderr)
        os.chmod(self.tmp.name, 0o1777)  # like /tmp: no one else can replace the file
        self.assertEqual(self.etherctl("validate").stderr, "")
        # A relative name: the directory is the working directory.
        os.chmod(self.tmp.name, 0o770)
        result = subprocess.run([ETHERCTL, "validate", "site.json"], cwd=self.tmp.name,
                                capture_output=True, text=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("warning: the site file's directory . is writable by its group (mode 0770)",
                      result.stderr)

    def test_json_report_of_a_file_that_is_not_utf8(self):
        path = os.path.join(self.tmp.name, "latin1.json")
        with open(path, "wb") as f:
            f.write(b'{"etherctl": 1, "devices": {"dc\xff": {}}}')
        result = subprocess.run([ETHERCTL, "--json", "validate", path], capture_output=True)
        self.assertEqual(result.returncode, 65, result.stderr)  # it aborted (134) before
        report = json.loads(result.stdout)
        self.assertIn("ill-formed UTF-8", report["errors"][0]["message"])
        self.assertIn("dc\\xFF", report["errors"][0]["message"])


class TaggedVlanTest(CliBase):
    """802.1Q devices: skipped with the reason on a kernel without 8021q, run in the VM."""

    def setUp(self):
        super().setUp()
        self.vlan = have_vlan_support(self.ns)
        self.site["devices"]["dc1"]["vlans"]["servers"] = {"interface": "eth1", "tag": 100,
                                                           "mtu": 1500}

    def test_kernel_without_8021q_gets_a_clear_error_and_a_clean_rollback(self):
        if self.vlan:
            raise unittest.SkipTest("this kernel has 802.1Q; the error path needs one without")
        before = self.ns.state()
        result = self.etherctl("apply", expect=1)
        self.assertIn("/devices/dc1/vlans/servers", result.stderr)
        self.assertIn("this kernel has no 802.1Q VLAN support (8021q)", result.stderr)
        self.assertEqual(self.ns.state(), before)

    def test_tagged_vlan_lifecycle(self):
        require_feature(self, self.vlan, "802.1Q VLAN support (8021q)")
        self.apply_json()
        link = self.ns.links()["servers"]
        self.assertEqual(link["linkinfo"]["info_kind"], "vlan")
        self.assertEqual(link["linkinfo"]["info_data"]["id"], 100)
        self.assertEqual(link["link"], "eth1")
        self.assertEqual(link.get("master"), "vmotion")
        self.assertEqual(link.get("ifalias"), ALIAS)
        self.assertFalse(self.apply_json()["changed"])
        # MTU in place.
        self.site["devices"]["dc1"]["vlans"]["servers"]["mtu"] = 1400
        report = self.apply_json()
        self.assertEqual([(c["op"], c["kind"]) for c in report["changes"]], [("modify", "vlan")])
        self.assertEqual(self.ns.links()["servers"]["ifindex"], link["ifindex"])
        self.assertEqual(self.ns.links()["servers"]["mtu"], 1400)
        # A new tag means a new device, back in its group.
        self.site["devices"]["dc1"]["vlans"]["servers"]["tag"] = 200
        self.apply_json()
        link = self.ns.links()["servers"]
        self.assertEqual(link["linkinfo"]["info_data"]["id"], 200)
        self.assertEqual(link.get("master"), "vmotion")
        # Removal.
        del self.site["devices"]["dc1"]["vlans"]["servers"]
        self.site["devices"]["dc1"]["vlan_groups"]["vmotion"]["members"] = []
        self.apply_json()
        self.assertNotIn("servers", self.ns.links())
        self.etherctl("destroy")
        self.assertEqual(set(self.ns.links()), {"lo", "eth0", "eth1", "wan-peer", "srv-peer"})


if __name__ == "__main__":
    unittest.main()
