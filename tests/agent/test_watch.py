"""`etherctl watch` against the host kernel, in throwaway network namespaces: drift repair
driven by kernel events, reload on SIGHUP (a bad file keeps the running configuration),
the shared lock, HTTP endpoints, sd_notify, dropped capabilities, a clean SIGTERM.

Run with /usr/bin/python3 -m unittest; ETHERCTL is the binary under test."""
import copy
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import charon as charon_mod  # noqa: E402
from netns import Netns, sh  # noqa: E402

ETHERCTL = os.environ.get("ETHERCTL", "etherctl")

SITE = {
    "etherctl": 1,
    "devices": {
        "dc1": {
            "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
            "vlan_groups": {"vmotion": {"members": ["servers", "dcx"], "mtu": 1500}},
            "self_ips": {
                "wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"},
            },
            "routes": {"to-dc2": {"destination": "203.0.113.0/24",
                                  "gateway": "198.51.100.254"}},
        },
        "dc2": {"vlans": {"wan": {"interface": "eth0"}},
                "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}},
    },
    "tunnels": {"dcx": {"profile": "etherip",
                        "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}},
}

# CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21), CAP_BPF (39)
KEPT_CAPS = (1 << 12) | (1 << 21) | (1 << 39)


def wait_for(predicate, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Agent:
    """An `etherctl watch` process in a namespace, its log collected by a thread."""

    def __init__(self, test, env=None, extra=()):
        self.test = test
        cmd = [ETHERCTL, "--netns", test.ns.name, "--device", "dc1", "watch",
               "--listen", "127.0.0.1:0", "--interval", "60s", *extra, test.site_path]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=dict(os.environ, ETHERCTL_LOCK_DIR=test.lock_dir, **(env or {})))
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        match = wait_for(lambda: self.find(r"listening on http://127\.0\.0\.1:(\d+)/") or
                         (self.proc.poll() is not None and "exited"), what="the agent to listen")
        test.assertNotEqual(match, "exited", self.log())
        self.port = int(match.group(1))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def log(self):
        return "\n".join(self.lines)

    def find(self, pattern):
        for line in list(self.lines):
            m = re.search(pattern, line)
            if m:
                return m
        return None

    def get(self, path):
        """(status, body) of GET path, fetched from inside the namespace."""
        script = ("import sys, urllib.request, urllib.error\n"
                  "try:\n"
                  f"    r = urllib.request.urlopen('http://127.0.0.1:{self.port}{path}', timeout=10)\n"
                  "    print(r.status); sys.stdout.write(r.read().decode())\n"
                  "except urllib.error.HTTPError as e:\n"
                  "    print(e.code); sys.stdout.write(e.read().decode())\n")
        out = sh("ip", "netns", "exec", self.test.ns.name, "/usr/bin/python3", "-c", script)
        status, _, body = out.partition("\n")
        return int(status), body

    def metric(self, name, labels=""):
        _, body = self.get("/metrics")
        m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", body, re.M)
        return float(m.group(1)) if m else None

    def reconciles(self):
        return sum(self.metric("etherctl_reconciles_total", f'{{result="{r}"}}')
                   for r in ("ok", "failed", "lock_held", "invalid"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=5)
        self.proc.stdout.close()
        return self.proc.returncode


class WatchBase(unittest.TestCase):
    def setUp(self):
        self.ns = Netns("ecwatch")
        self.addCleanup(self.ns.delete)
        for a, b in (("eth0", "wan-peer"), ("eth1", "srv-peer")):
            self.ns.ip("link", "add", a, "type", "veth", "peer", "name", b)
        self.ns.ip("link", "set", "lo", "up")  # the agent's HTTP server listens on 127.0.0.1
        self.tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self.tmp.cleanup)
        self.lock_dir = os.path.join(self.tmp.name, "run")
        self.site = copy.deepcopy(SITE)
        self.site_path = os.path.join(self.tmp.name, "site.json")
        self.write_site()
        self.env = dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir)

    def write_site(self, text=None):
        with open(self.site_path + ".new", "w") as f:
            f.write(text if text is not None else json.dumps(self.site))
        os.rename(self.site_path + ".new", self.site_path)

    def start(self, **kwargs):
        agent = Agent(self, **kwargs)
        self.addCleanup(agent.stop)
        wait_for(lambda: self.plan_is_empty(), what="the first reconcile")
        return agent

    def etherctl(self, *args, expect=0):
        result = subprocess.run([ETHERCTL, "--netns", self.ns.name, "--device", "dc1", *args,
                                 self.site_path], capture_output=True, text=True, env=self.env)
        self.assertEqual(result.returncode, expect, result.stdout + result.stderr)
        return result

    def plan_is_empty(self):
        result = subprocess.run([ETHERCTL, "--netns", self.ns.name, "--device", "dc1", "--wait",
                                 "--detailed-exitcodes", "plan", self.site_path],
                                capture_output=True, text=True, env=self.env)
        return result.returncode == 0

    def addresses(self):
        return self.ns.addresses()

    def settle(self, agent, quiet=1.5, timeout=15):
        """Waits until no reconcile has run for `quiet` seconds (IPv6 brings link-local
        addresses up a while after links: their events come and go)."""
        deadline = time.monotonic() + timeout
        last, since = agent.reconciles(), time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = agent.reconciles()
            if now != last:
                last, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return now
        raise AssertionError(f"reconciles did not stop within {timeout} s:\n{agent.log()}")


class WatchTest(WatchBase):
    def test_repairs_drift_of_owned_objects_from_events(self):
        agent = self.start()
        state = self.ns.state()
        foreign_before = self.ns.links()["wan-peer"]
        # Each change behind etherctl's back is undone without waiting for the timer (60 s).
        for damage in (["addr", "del", "10.1.0.1/24", "dev", "vmotion"],
                       ["link", "set", "vmotion", "mtu", "1400"],
                       ["link", "set", "eth1", "nomaster"],
                       ["route", "del", "203.0.113.0/24"]):
            self.ns.ip(*damage)
            wait_for(lambda: self.ns.state() == state, timeout=10,
                     what=f"repair after `ip {' '.join(damage)}`")
        # A deleted link comes back (with a new ifindex and MAC: compare the plan instead).
        for link in ("vmotion", "dcx"):
            self.ns.ip("link", "del", link)
            wait_for(lambda: link in self.ns.links() and self.plan_is_empty(), timeout=10,
                     what=f"{link} re-created")
        self.assertEqual(self.ns.links()["wan-peer"], foreign_before)
        self.assertTrue(agent.find(r"reconcile \(kernel event\): \d+ change"), agent.log())
        # A run that looked at the kernel mid-deletion fails and is run again at once (the
        # rerun counter); none may end failed.
        self.assertEqual(agent.metric("etherctl_reconciles_total", '{result="failed"}'), 0,
                         agent.log())
        self.assertIsNotNone(agent.metric("etherctl_reconcile_reruns_total"))
        self.assertGreaterEqual(agent.metric("etherctl_reconcile_changes_total"), 6)
        self.assertEqual(agent.stop(), 0)

    def test_a_detached_bpf_program_is_drift_and_is_repaired(self):
        # Without the agent: plan sees it, apply repairs exactly that.
        self.etherctl("apply")
        self.ns.ip("link", "show", "eip-dcx")
        sh("tc", "-n", self.ns.name, "filter", "del", "dev", "eip-dcx", "ingress")
        plan = self.etherctl("--detailed-exitcodes", "plan", expect=2).stdout
        self.assertIn("attached: false -> true", plan)
        self.assertIn("1 to modify, 0 to delete", plan)
        self.etherctl("apply")
        self.assertIn("etherip_encap", sh("tc", "-n", self.ns.name, "filter", "show", "dev",
                                          "eip-dcx", "ingress"))
        # With the agent: tc notifications wake it; the decap program on the underlay returns.
        agent = self.start()
        sh("tc", "-n", self.ns.name, "filter", "del", "dev", "eth0", "ingress")
        wait_for(lambda: "etherip_decap" in sh("tc", "-n", self.ns.name, "filter", "show", "dev",
                                               "eth0", "ingress"), what="the decap program back")
        self.assertGreaterEqual(agent.metric("etherctl_events_total", '{kind="tc"}'), 1)

    def test_foreign_changes_and_unrelated_neighbours_do_not_reconcile_forever(self):
        agent = self.start()
        before = self.settle(agent)
        # A neighbour entry that is no pool member's: no reconcile at all.
        self.ns.ip("neigh", "add", "198.51.100.77", "lladdr", "02:00:00:00:00:77", "dev", "eth0")
        wait_for(lambda: agent.metric("etherctl_events_total", '{kind="neighbour"}') >= 1,
                 what="the neighbour event")
        time.sleep(0.5)
        self.assertEqual(agent.reconciles(), before)
        # A foreign link: a reconcile that changes nothing, then quiet again.
        self.ns.ip("link", "add", "foreign0", "type", "veth", "peer", "name", "foreign1")
        wait_for(lambda: agent.reconciles() > before, what="a reconcile for the link event")
        self.settle(agent)
        self.assertIn("foreign0", self.ns.links())
        self.assertEqual(agent.metric("etherctl_reconcile_changes_total"), 9)  # the first apply's

    def test_reload_applies_a_good_file_and_keeps_running_on_a_bad_one(self):
        agent = self.start()
        self.site["devices"]["dc1"]["self_ips"]["extra"] = {"address": "10.1.0.9/24",
                                                            "vlan": "vmotion"}
        self.write_site()
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: ("vmotion", "10.1.0.9/24") in self.addresses(), what="the reload")
        self.assertEqual(agent.metric("etherctl_config_reloads_total", '{result="ok"}'), 1)
        good = self.addresses()
        # A broken file: the agent says why and keeps the configuration in force.
        self.write_site('{"etherctl": 1, "devices": {"dc1": {"vlans": {"wan": {"tag": 5000}}}}}')
        agent.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: agent.find(r"reload: .* is invalid"), what="the reload error")
        self.assertTrue(agent.find(r"/devices/dc1/vlans/wan"), agent.log())
        self.assertEqual(agent.metric("etherctl_config_reloads_total", '{result="failed"}'), 1)
        self.assertIsNone(agent.proc.poll())
        self.ns.ip("addr", "del", "10.1.0.9/24", "dev", "vmotion")
        wait_for(lambda: self.addresses() == good, what="repair under the old configuration")

    def test_shares_the_lock_with_apply(self):
        agent = self.start()
        # While someone else holds the lock, drift waits; once it is released, it is repaired.
        lock = os.path.join(self.lock_dir, f"netns-{os.stat('/run/netns/' + self.ns.name).st_ino}.lock")
        self.assertTrue(os.path.exists(lock), os.listdir(self.lock_dir))
        with open(lock, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            self.ns.ip("addr", "del", "10.1.0.1/24", "dev", "vmotion")
            wait_for(lambda: agent.find(r"retrying every second"), what="the agent to meet the lock")
            self.assertNotIn(("vmotion", "10.1.0.1/24"), self.addresses())
        wait_for(lambda: ("vmotion", "10.1.0.1/24") in self.addresses(), what="repair after unlock")
        # apply from cron at the same time as the agent: both succeed (one waits).
        self.etherctl("--wait", "apply")

    def test_http_endpoints(self):
        agent = self.start()
        status, body = agent.get("/healthz")
        self.assertEqual((status, body), (200, "ok\n"))
        status, body = agent.get("/status")
        self.assertEqual(status, 200)
        doc = json.loads(body)
        self.assertTrue(doc["agent"]["in_sync"])
        self.assertTrue(doc["now"]["status"]["in_sync"])
        self.assertEqual(doc["agent"]["digest"], doc["now"]["digest"])
        kinds = {o["kind"] for o in doc["now"]["status"]["objects"]}
        self.assertIn("tunnel", kinds)
        _, metrics = agent.get("/metrics")
        for family in ("etherctl_reconciles_total", "etherctl_reconcile_duration_seconds",
                       "etherctl_tunnel_packets_total", "etherctl_tunnel_drops_total",
                       "etherctl_member_weight", "etherctl_events_total"):
            self.assertIn(f"# TYPE {family} ", metrics)
        self.assertRegex(metrics, r'etherctl_tunnel_packets_total\{tunnel="dcx",direction="tx"\} \d+')
        self.assertEqual(agent.get("/nope")[0], 404)

    def test_capabilities_are_dropped(self):
        agent = self.start()
        with open(f"/proc/{agent.proc.pid}/status") as f:
            caps = dict(line.split(":\t") for line in f if line.startswith("Cap"))
        self.assertEqual(int(caps["CapEff"], 16), KEPT_CAPS)
        self.assertEqual(int(caps["CapPrm"], 16), KEPT_CAPS)
        self.assertEqual(int(caps["CapBnd"], 16), KEPT_CAPS)
        # ... and it still repairs what it owns with them.
        self.ns.ip("link", "del", "dcx")
        wait_for(lambda: "dcx" in self.ns.links(), what="the tunnel back")

    def test_sd_notify_and_clean_stop(self):
        path = os.path.join(self.tmp.name, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        self.addCleanup(sock.close)
        sock.settimeout(10)
        agent = self.start(env={"NOTIFY_SOCKET": path})
        messages = [sock.recv(4096).decode()]
        self.assertIn("READY=1", messages[0])
        agent.proc.send_signal(signal.SIGHUP)
        while "READY=1" not in messages[-1] or len(messages) < 2:
            messages.append(sock.recv(4096).decode())
        self.assertIn("RELOADING=1", messages)
        self.assertEqual(agent.stop(), 0)
        rest = []
        sock.settimeout(1)
        try:
            while True:
                rest.append(sock.recv(4096).decode())
        except socket.timeout:
            pass
        self.assertIn("STOPPING=1", rest)
        self.assertTrue(agent.find(r"SIGTERM: stopping"), agent.log())

    def test_a_bad_file_at_start_is_fatal(self):
        self.write_site('{"etherctl": 1, "devices": {"dc1": {"vlans": []}}}')
        result = subprocess.run([ETHERCTL, "--netns", self.ns.name, "watch", "--listen", "none",
                                 self.site_path], capture_output=True, text=True, timeout=20,
                                env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))
        self.assertEqual(result.returncode, 1)
        self.assertIn("/devices/dc1/vlans", result.stderr)
        self.assertIn("not starting", result.stderr)


class WatchIpsecTest(WatchBase):
    """The tunnel with IPsec, charon in the test's namespace. This kernel has no ESP states and
    the peer does not exist: no SA ever comes up, which is what the agent must not wait for."""

    def setUp(self):
        why = charon_mod.available()
        if why:
            raise unittest.SkipTest(why)
        super().setUp()
        psk = os.path.join(self.tmp.name, "dcx.psk")
        with open(os.open(psk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write("etherctl-watch-test-key-" + os.urandom(12).hex() + "\n")
        self.site["tunnels"]["dcx"]["ipsec"] = {"psk_file": psk}
        self.write_site()
        self.charon = charon_mod.Charon(self.ns.name, os.path.join(self.tmp.name, "ipsec"))
        self.addCleanup(self.charon.stop)
        self.env.update(self.charon.env())

    def test_charon_starting_late_and_a_missing_sa_hold_nothing_back(self):
        # At boot the agent may start before strongSwan. Its reconciles fail (no charon; each
        # run rolls back) and are tried again after 1, 2, 4 s..., not only every --interval.
        agent = Agent(self, env=self.charon.env())
        self.addCleanup(agent.stop)
        wait_for(lambda: agent.find(r"reconcile \(after a failure\): next try in 4 s"),
                 timeout=20, what="two tries after the first failure")
        self.assertTrue(agent.find(r"reconcile \(start\): next try in 1 s"), agent.log())
        self.assertTrue(agent.find(r"reconcile \(after a failure\) failed: .*cannot reach charon"),
                        agent.log())
        # /status and /healthz say when the next try comes.
        _, body = agent.get("/status")
        self.assertLessEqual(0, json.loads(body)["agent"]["next_try_after_failure_ms"])
        self.assertLessEqual(json.loads(body)["agent"]["next_try_after_failure_ms"], 8000)
        code, body = agent.get("/healthz")
        self.assertEqual(code, 503)
        self.assertRegex(body, r"^not in sync: .*cannot reach charon.*; next try in \d+ ms$")
        started = time.monotonic()
        self.charon.start()
        wait_for(lambda: "etherctl-dcx" in self.charon.conns() and self.plan_is_empty(),
                 timeout=20, what="the site applied once charon runs (--interval is 60 s)")
        self.assertLess(time.monotonic() - started, 20, agent.log())
        self.assertTrue(agent.find(r"reconcile \(after a failure\): \d+ changes"), agent.log())
        # Each failed run's rollback made kernel events; none started a reconcile (which would
        # have failed and rolled back in turn, in a loop).
        self.assertIsNone(agent.find(r"reconcile \(kernel event\)"), agent.log())
        _, body = agent.get("/status")
        self.assertIsNone(json.loads(body)["agent"]["next_try_after_failure_ms"])
        # No SA, and none coming: the agent's reconciles do not wait for one (apply would, up to
        # --ipsec-wait, 30 s), so drift is still repaired at once.
        state = self.ns.state()
        self.ns.ip("addr", "del", "10.1.0.1/24", "dev", "vmotion")
        wait_for(lambda: self.ns.state() == state, timeout=10,
                 what="the repair of an address while the tunnel has no SA")
        _, metrics = agent.get("/metrics")
        self.assertRegex(metrics, r'etherctl_tunnel_ipsec_established\{[^}]*"dcx"[^}]*\} 0\n')
        self.assertRegex(metrics, r'etherctl_tunnel_ipsec_connection_loaded\{[^}]*"dcx"[^}]*\} 1\n')
        self.assertEqual(agent.stop(), 0)


if __name__ == "__main__":
    unittest.main()
