"""Virtual Location end to end: the two-data-center lab with a pool on dc1-edge, `etherctl
watch` running there, clients connecting to the virtual server from the WAN side, and VMs
migrating between the data centers.

IPVS is not in the host kernel: this runs in the stock-kernel VM (vm.<k>.e2e.pool_migration)
and skips on the host with the reason. `ipvsadm -Ln` is the independent reader of the weights.
Needs root and /usr/bin/python3; ETHERCTL names the binary.
"""
import copy
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_two_dc import ETHERCTL, PY, SITE, Lab, run  # noqa: E402

VIP = "192.0.2.10"
MEMBERS = {"vm1": "10.1.0.21:80", "vm2": "10.1.0.22:80", "vm3": "10.1.0.23:80"}
WEIGHTS = {"vm1": 1, "vm2": 2, "vm3": 1}
# Emulated CPUs are 5-20x slower: waits stretch, nothing here is a timing assertion.
SLOW = 20 if os.environ.get("ETHERCTL_IN_VM") == "1" else 1

# Each VM serves port 80: it greets with its name, then echoes (the stream's bytes checked by
# the client).
SERVER = r"""
import socket, sys, threading
name = sys.argv[1].encode()
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 80))
srv.listen(64)
def serve(c):
    c.sendall(name + b"\n")
    while True:
        data = c.recv(65536)
        if not data:
            break
        c.sendall(data)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# New connections: N connects to the virtual server; prints which VM greeted each.
PROBE = r"""
import json, socket, sys
names = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 80), timeout=15)
    f = s.makefile("rb")
    names.append(f.readline().decode().strip())
    s.close()
print(json.dumps(names))
"""

# A long-lived connection: greets, then sends numbered lines and checks each echo until the
# stop file appears. Prints one JSON summary; exit 0 only when every byte came back.
HOLD = r"""
import json, os, socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=30)
f = s.makefile("rb")
name = f.readline().decode().strip()
print(json.dumps({"member": name}), flush=True)
sent = 0
stall = 0.0
ok = True
error = ""
try:
    while not os.path.exists(sys.argv[2]):
        line = ("%010d" % sent).encode() * 100 + b"\n"
        t = time.monotonic()
        s.sendall(line)
        back = f.readline()
        stall = max(stall, time.monotonic() - t)
        if back != line:
            ok, error = False, "echo mismatch at line %d" % sent
            break
        sent += 1
        time.sleep(0.02)
except OSError as e:
    ok, error = False, repr(e)
print(json.dumps({"member": name, "lines": sent, "max_stall_s": round(stall, 3), "ok": ok,
                  "error": error}), flush=True)
sys.exit(0 if ok else 1)
"""


def ipvs_available():
    probe = f"ecprobe{os.getpid()}"
    run("ip", "netns", "add", probe)
    try:
        return run("ip", "netns", "exec", probe, "ipvsadm", "-Ln", check=False).returncode == 0
    finally:
        run("ip", "netns", "del", probe)


def require_root_and_ipvs(vm_test):
    """Skips (with the reason) without root or without IPVS, unless the VM layer requires every
    feature (ETHERCTL_REQUIRE_ALL_FEATURES=1): then a missing IPVS fails."""
    if os.geteuid() != 0:
        raise unittest.SkipTest("needs root (network namespaces, BPF)")
    if not ipvs_available():
        if os.environ.get("ETHERCTL_REQUIRE_ALL_FEATURES") == "1":
            raise AssertionError("IPVS is required here but missing")
        raise unittest.SkipTest("this kernel has no IPVS; this test runs in the stock-kernel "
                                f"VM (vm.<k>.{vm_test})")


class PoolMigrationTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_root_and_ipvs("e2e.pool_migration")

    def setUp(self):
        self.lab = Lab()
        self.addCleanup(self.lab.down)
        self.lab.up()
        with open(SITE) as f:
            site = json.load(f)
        edge = site["devices"]["dc1-edge"]
        edge["self_ips"]["vip"] = {"address": f"{VIP}/32", "vlan": "wan"}
        edge["pools"] = {"web": {
            "virtual": {"address": VIP, "port": 80, "protocol": "tcp", "scheduler": "wlc"},
            "members": {MEMBERS[vm]: {"weight": WEIGHTS[vm]} for vm in MEMBERS},
            "monitor": {"type": "virtual_location", "interval": 2, "min_active_members": 1}}}
        self.site = os.path.join(self.lab.tmp, "site.json")
        with open(self.site, "w") as f:
            json.dump(site, f)
        self.etherctl("dc2", "apply")
        # The director: NAT (masq) needs forwarding; the VMs answer clients through it.
        self.lab.exec("dc1-edge", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.lab.exec("wan", "ip", "route", "add", f"{VIP}/32", "via", "198.51.100.1")
        for vm in MEMBERS:
            self.lab.exec(vm, "ip", "route", "replace", "default", "via", "10.1.0.1")
            server = self.lab.popen(vm, PY, "-c", SERVER, vm, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self.addCleanup(server.kill)
        self.start_agent()

    def etherctl(self, dc, *args):
        return run(ETHERCTL, "--netns", self.lab.ns(f"{dc}-edge"), "--device", f"{dc}-edge",
                   *args, self.site, env=self.lab.env)

    def start_agent(self):
        self.agent_log = []
        self.agent = subprocess.Popen(
            [ETHERCTL, "--netns", self.lab.ns("dc1-edge"), "--device", "dc1-edge", "watch",
             "--listen", "none", "--interval", "2s", self.site],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.lab.env)
        reader = threading.Thread(target=lambda: self.agent_log.extend(self.agent.stdout),
                                  daemon=True)
        reader.start()

        def stop():
            self.agent.send_signal(signal.SIGTERM)
            self.assertEqual(self.agent.wait(timeout=30), 0, "".join(self.agent_log))
        self.addCleanup(stop)

    def weights(self):
        """{vm: weight} from `ipvsadm -Ln` (the independent reader)."""
        out = self.lab.exec("dc1-edge", "ipvsadm", "-Ln").stdout
        by_address = {m: vm for vm, m in MEMBERS.items()}
        return {by_address[m.group(1)]: int(m.group(2))
                for m in re.finditer(r"->\s+(\S+)\s+Masq\s+(\d+)", out)}

    def wait_weights(self, expected, why, timeout=20):
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            if self.weights() == expected:
                return time.monotonic()
            time.sleep(0.05)
        status = run(ETHERCTL, "--netns", self.lab.ns("dc1-edge"), "--device", "dc1-edge",
                     "--wait", "status", self.site, env=self.lab.env, check=False).stdout
        self.fail(f"{why}: weights {self.weights()}, expected {expected}\n{status}\n"
                  f"agent log:\n{''.join(self.agent_log)}")

    def new_connections(self, count):
        out = self.lab.exec("wan", PY, "-c", PROBE, VIP, str(count), timeout=60 * SLOW).stdout
        return json.loads(out)

    def locations(self):
        report = json.loads(self.etherctl("dc1", "--wait", "--json", "status").stdout)
        by_address = {m: vm for vm, m in MEMBERS.items()}
        return {by_address[m["member"]]: m["location"] for m in report["status"]["members"]}

    def hold_connection_to(self, vm, attempts=8):
        """A long-lived connection through the virtual server that landed on `vm`."""
        for i in range(attempts):
            stop = os.path.join(self.lab.tmp, f"stop-{vm}-{i}")
            proc = self.lab.popen("wan", PY, "-c", HOLD, VIP, stop, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
            first = json.loads(proc.stdout.readline())
            if first["member"] == vm:
                return proc, stop
            open(stop, "w").close()
            proc.communicate(timeout=30 * SLOW)
        self.fail(f"no connection landed on {vm} in {attempts} attempts")

    def test_migrated_members_are_quiesced_and_keep_their_connections(self):
        # vm1 and vm3 are here, vm2 in dc2: only the local ones take new connections.
        self.wait_weights({"vm1": 1, "vm2": 0, "vm3": 1}, "initial locations")
        self.assertEqual(self.locations(), {"vm1": "local", "vm2": "remote", "vm3": "local"})
        self.assertEqual(set(self.new_connections(6)), {"vm1", "vm3"})

        # A connection to vm1 stays open while vm1 migrates to dc2 (announcing itself by GARP).
        hold, stop = self.hold_connection_to("vm1")
        time.sleep(0.5)
        moved = time.monotonic()
        self.lab.migrate("vm1", "--to", "dc2")
        done = self.wait_weights({"vm1": 0, "vm2": 0, "vm3": 1}, "vm1 quiesced after migrating")
        print(f"\n  vm1 quiesced {1000 * (done - moved):.0f} ms after the migrate command "
              f"(includes lab.sh and polling; see bench/location_latency.py)", flush=True)
        self.assertEqual(self.locations()["vm1"], "remote")
        # New connections go to the one local member; vm1's connection keeps flowing.
        self.assertEqual(set(self.new_connections(4)), {"vm3"})
        time.sleep(1.0)
        open(stop, "w").close()
        out, err = hold.communicate(timeout=60 * SLOW)
        summary = json.loads(out.strip().splitlines()[-1])
        self.assertEqual(hold.returncode, 0, f"{summary} {err}")
        self.assertEqual(summary["member"], "vm1")
        self.assertGreater(summary["lines"], 20, summary)
        print(f"  the connection to vm1 survived the move: {summary}", flush=True)

        # vm3 leaves too: no local member is left, so the remote ones carry new connections.
        self.lab.migrate("vm3", "--to", "dc2")
        self.wait_weights({"vm1": 1, "vm2": 2, "vm3": 1}, "all remote: configured weights")
        self.assertEqual(set(self.locations().values()), {"remote"})
        self.assertTrue(set(self.new_connections(4)) <= {"vm1", "vm2", "vm3"})

        # vm2 comes over to dc1: it is local now, and the others are quiesced again.
        self.lab.migrate("vm2", "--to", "dc1")
        self.wait_weights({"vm1": 0, "vm2": 2, "vm3": 0}, "vm2 local after migrating here")
        self.assertEqual(set(self.new_connections(4)), {"vm2"})
        self.assertIn("reconcile (kernel event)", "".join(self.agent_log))


if __name__ == "__main__":
    unittest.main()
