"""End to end: failover pairs (examples/ha) on the host kernel, with `etherctl watch` on every
unit and keepalived elected by VRRP.

One lab for the class (16 namespaces, four agents): the tests run in order and each leaves
the pair as it found it (dc1-a and dc2-a active). Faults on dc1's active unit: its WAN link
down, every keepalived process of it killed, all its links down; then it returns and takes the
role back (preemption). Throughout: a TCP stream from vm2 (dc2) to vm1 (dc1) across the tunnel
checks every byte, and numbered broadcasts from a VM of each data center must never arrive
twice anywhere. No timing is asserted here beyond generous waits: bench/failover.py measures.

Needs root, keepalived, /usr/bin/python3; ETHERCTL names the binary (set by ctest).
"""
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "examples", "ha"))
import lab as halab  # noqa: E402

ETHERCTL = os.environ.get("ETHERCTL") or os.path.join(ROOT, "build", "cmd", "etherctl", "etherctl")
PY = "/usr/bin/python3"
STREAM = os.path.join(ROOT, "examples", "two-dc", "stream.py")
BROADCAST = os.path.join(ROOT, "examples", "ha", "broadcast.py")
KEEPALIVED = "/usr/sbin/keepalived"
INITIAL = {"dc1-a": "active", "dc1-b": "standby", "dc2-a": "active", "dc2-b": "standby"}
_counter = itertools.count()


def run(*args, check=True, timeout=60, env=None):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def keep_logs_and_remove(tmp):
    """Removes a test's directory; the agents' logs in it (<unit>.log) are copied first to the
    directory ETHERCTL_E2E_KEEP_LOGS names, if set."""
    keep = os.environ.get("ETHERCTL_E2E_KEEP_LOGS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        for unit in halab.UNITS:
            log = os.path.join(tmp, f"{unit}.log")
            if os.path.exists(log):
                shutil.copy(log, keep)
    shutil.rmtree(tmp, ignore_errors=True)


class Traffic:
    """A byte-checked TCP stream vm2 -> vm1 and numbered broadcasts from vm3 and vm4, heard by
    every VM, for the duration of a `with` block."""

    def __init__(self, lab, tmp):
        self.lab, self.tmp = lab, tmp

    def __enter__(self):
        self.stop = os.path.join(self.tmp, f"stop-{next(_counter)}")
        self.listeners = {vm: self.lab.popen(vm, PY, BROADCAST, "listen", "--stop-file", self.stop,
                                             stdout=subprocess.PIPE)
                          for vm in halab.VMS}
        for listener in self.listeners.values():
            listener.stdout.readline()
        self.server = self.lab.popen("vm1", PY, STREAM, "server", "--bind", halab.VMS["vm1"][1],
                                     stdout=subprocess.PIPE)
        self.server.stdout.readline()
        self.client = self.lab.popen("vm2", PY, STREAM, "client", "--connect",
                                     halab.VMS["vm1"][1], "--duration", "600", "--stop-file",
                                     self.stop, "--rate", "1000000", "--timeout", "30",
                                     stdout=subprocess.PIPE)
        self.senders = [self.lab.popen(vm, PY, BROADCAST, "send", "--to", "10.1.0.255",
                                       "--count", "100000", "--rate", "100", "--id", vm,
                                       stdout=subprocess.DEVNULL)
                        for vm in ("vm3", "vm4")]
        time.sleep(1)
        return self

    def __exit__(self, *exc):
        for sender in self.senders:
            sender.kill()
            sender.wait()
        time.sleep(0.5)
        open(self.stop, "w").close()
        out, _ = self.client.communicate(timeout=60)
        self.stream = json.loads(out.strip().splitlines()[-1])
        self.server.kill()
        self.server.wait()
        self.received = {}
        for vm, listener in self.listeners.items():
            out, _ = listener.communicate(timeout=30)
            self.received[vm] = json.loads(out.strip().splitlines()[-1])["received"]
        return False

    def duplicates(self):
        """{(receiver, sender): [seq received more than once]}"""
        out = {}
        for vm, senders in self.received.items():
            for sender, counts in senders.items():
                dup = sorted(int(seq) for seq, n in counts.items() if n > 1)
                if dup:
                    out[(vm, sender)] = dup
        return out

    def received_by_all(self, sender):
        """Numbers of `sender`'s broadcasts that every other VM received exactly once."""
        others = [vm for vm in halab.VMS if vm != sender]
        sets = [{int(s) for s, n in self.received[vm].get(sender, {}).items() if n == 1}
                for vm in others]
        return set.intersection(*sets)


class FailoverTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (network namespaces, BPF)")
        if not os.access(KEEPALIVED, os.X_OK):
            raise unittest.SkipTest("needs keepalived (Debian package keepalived)")
        cls.tmp = tempfile.mkdtemp(prefix="etherctl-failover-")
        cls.lab = halab.Lab(f"ha{os.getpid()}")
        cls.site = os.path.join(cls.tmp, "site.json")
        with open(cls.site, "w") as f:
            json.dump(halab.site(), f)
        cls.lock_dir = os.path.join(cls.tmp, "run")
        try:
            cls.lab.up()
            cls.lab.start_agents(ETHERCTL, cls.site, cls.lock_dir, cls.tmp)
            cls.lab.wait_roles(INITIAL, timeout=60)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.stop_agents(sig=signal.SIGKILL)
        env = dict(os.environ, ETHERCTL_LOCK_DIR=cls.lock_dir)
        for unit in halab.UNITS:  # pins in the host's bpffs outlive namespaces: destroy first
            if cls.lab.exists(unit):
                run(ETHERCTL, "--netns", cls.lab.ns(unit), "--device", unit, "destroy", cls.site,
                    check=False, env=env)
        cls.lab.down()
        keep_logs_and_remove(cls.tmp)

    def etherctl(self, unit, *args, check=True):
        # --wait: the unit's agent holds the namespace's lock during each of its reconciles
        return run(ETHERCTL, "--netns", self.lab.ns(unit), "--device", unit, "--wait", *args,
                   self.site, check=check, env=dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir))

    def status(self, unit):
        return json.loads(self.etherctl(unit, "--json", "status").stdout)

    def logs(self):
        out = []
        for unit in halab.UNITS:
            with open(os.path.join(self.tmp, f"{unit}.log")) as f:
                out.append(f"--- {unit}\n" + "".join(f.readlines()[-40:]))
        return "\n".join(out)

    def tunnel_port(self, unit):
        return json.loads(run("ip", "-n", self.lab.ns(unit), "-j", "link", "show", "dev",
                              "dcx").stdout)[0].get("master")

    def untruthful(self):
        """What the units say about their roles (record, `etherctl status`) against what their
        kernels do (floating addresses, tunnel port), and pairs without exactly one active
        unit; [] when all agree. A pair whose records changed while it was read, or whose last
        transition is not applied yet, counts as not agreeing yet (a unit whose keepalived is
        starved on a loaded host may change its role at any moment)."""
        problems = []
        for dc in halab.DCS:
            units = (f"{dc}-a", f"{dc}-b")
            before = {unit: self.lab.record(unit) for unit in units}
            seen = {unit: (self.status(unit)["status"]["failover"]["role"],
                           self.lab.holds_floating(unit), self.tunnel_port(unit))
                    for unit in units}
            after = {unit: self.lab.record(unit) for unit in units}
            changing = [unit for unit in units
                        if (before[unit].get("role"), before[unit].get("transitions")) !=
                        (after[unit].get("role"), after[unit].get("transitions")) or
                        (before[unit].get("transitions", 0) and
                         "applied" not in before[unit].get("last_transition", {}))]
            if changing:
                problems.append(f"{changing}: role changing")
                continue
            for unit in units:
                role = before[unit].get("role")
                wanted = (role, role == "active", "vmotion" if role == "active" else None)
                if seen[unit] != wanted:
                    problems.append(f"{unit}: record says {role}; status role, floating held, "
                                    f"tunnel port: {seen[unit]}")
            active = [unit for unit in units if before[unit].get("role") == "active"]
            if len(active) != 1:
                problems.append(f"{dc}: active units {active}")
        return problems

    def assert_truthful(self, diagnostics="", timeout=30):
        deadline = time.monotonic() + timeout
        while problems := self.untruthful():
            self.assertLess(time.monotonic(), deadline, f"{problems}\n{diagnostics}")
            time.sleep(0.1)

    def wait_split_brain_over(self, unit, timeout=30):
        """A split brain ends by itself once keepalived is healthy again (not at a given moment:
        a keepalived starved on a loaded host starts a new one now and then)."""
        deadline = time.monotonic() + timeout
        while self.lab.record(unit)["split_brain"]["now"]:
            self.assertLess(time.monotonic(), deadline, f"{self.lab.record(unit)}\n{self.logs()}")
            time.sleep(0.05)

    def assert_traffic_intact(self, traffic):
        """Every byte of the stream arrived in order, no broadcast arrived twice anywhere, and
        each VM's broadcasts reached every other VM."""
        diagnostics = f"{traffic.stream}\n{self.logs()}"
        self.assertTrue(traffic.stream["ok"], diagnostics)
        self.assertIsNone(traffic.stream["first_bad_byte"], diagnostics)
        self.assertEqual(traffic.duplicates(), {}, diagnostics)
        for sender in ("vm3", "vm4"):
            self.assertTrue(traffic.received_by_all(sender), f"{sender}: {diagnostics}")

    # --- the steady state -------------------------------------------------------------------

    def test_1_roles_in_the_kernel(self):
        for unit, role in INITIAL.items():
            active = role == "active"
            with self.subTest(unit=unit):
                self.assertEqual(self.lab.holds_floating(unit), active)
                gateway = halab.SERVER_GATEWAY[halab.dc_of(unit)]
                self.assertEqual(any(a.startswith(gateway + "/")
                                     for a in self.lab.addresses(unit).get("vmotion", [])), active)
                self.assertEqual(self.tunnel_port(unit), "vmotion" if active else None)
                # its own server port stays in the bridge: the fixed self IP stays reachable
                self.lab.exec(f"vm{1 if unit.startswith('dc1') else 2}", "ping", "-c", "1",
                              "-W", "2", halab.SERVER_SELF[unit])
                self.assertEqual(len(self.lab.keepalived_pids(unit)), 2, "parent and VRRP child")
                self.assertTrue(os.path.exists(os.path.join(self.lab.failover_dir(unit),
                                                            "keepalived.conf")))
        self.lab.exec("vm1", "ping", "-c", "2", "-W", "2", halab.VMS["vm2"][1])

    def test_2_status_and_digests(self):
        reports = {unit: self.status(unit) for unit in halab.UNITS}
        for unit, report in reports.items():
            with self.subTest(unit=unit):
                failover = report["status"]["failover"]
                self.assertEqual(failover["role"], INITIAL[unit])
                self.assertEqual(failover["role_source"], "agent's record")
                self.assertTrue(failover["agent_running"])
                self.assertTrue(report["status"]["in_sync"], report["status"])
                self.assertFalse(failover["split_brain"]["now"])
                self.assertTrue(failover["keepalived"]["running"])
                peer = failover["peer"]
                self.assertEqual(peer["state"], "master" if INITIAL[unit] == "standby" else
                                 "not advertising")
        # both units of a group report the same configuration (group digest), and each its own
        for dc in halab.DCS:
            a, b = reports[f"{dc}-a"], reports[f"{dc}-b"]
            self.assertEqual(a["status"]["failover"]["group_digest"],
                             b["status"]["failover"]["group_digest"])
            self.assertNotEqual(a["digest"], b["digest"])
        text = self.etherctl("dc1-a", "status").stdout
        self.assertIn("failover group dc1 (dc1-a, dc1-b)", text)
        self.assertIn("role ACTIVE", text)

    # --- faults -----------------------------------------------------------------------------

    def log_offset(self, unit):
        return os.path.getsize(os.path.join(self.tmp, f"{unit}.log"))

    def log_since(self, unit, offset):
        with open(os.path.join(self.tmp, f"{unit}.log")) as f:
            f.seek(offset)
            return f.read()

    def wait_takeover(self, unit, offset, timeout=30):
        """Waits until `unit`'s log says, after `offset`, that it became active (the role may be
        short-lived: a unit whose keepalived comes back by itself preempts again within a
        second, so its record may already say standby again)."""
        deadline = time.monotonic() + timeout
        while "standby -> active" not in self.log_since(unit, offset):
            self.assertLess(time.monotonic(), deadline, f"{unit} never took over\n{self.logs()}")
            time.sleep(0.02)

    def wait_takeover_or_resumption(self, offset_a, offset_b, timeout=30):
        """After a crash of dc1-a's keepalived: True once dc1-b took over, False once dc1-a
        left the role and took it back without dc1-b taking over. dc1-a's agent starts
        keepalived again at once; when that keepalived (priority 200, preempting) advertises
        before dc1-b's master-down timer runs out (3 intervals plus skew, about 360 ms),
        dc1-b stays standby: seen on loaded hosts with a restart 340 ms after the kill."""
        deadline = time.monotonic() + timeout
        while True:
            if "standby -> active" in self.log_since("dc1-b", offset_b):
                return True
            own = self.log_since("dc1-a", offset_a)
            left = own.find("active -> standby")
            if left >= 0 and "standby -> active" in own[left:]:
                return False
            self.assertLess(time.monotonic(), deadline,
                            f"dc1-b never took over, dc1-a never came back\n{self.logs()}")
            time.sleep(0.02)

    def fault_and_return(self, fault, heal):
        """Returns whether dc1-b took over (always, except after a keepalived crash that
        dc1-a's restarted keepalived outran)."""
        with Traffic(self.lab, self.tmp) as traffic:
            offset = self.log_offset("dc1-b")
            offset_a = self.log_offset("dc1-a")
            self.lab.fault(fault, "dc1-a")
            took_over = True
            if fault == "kill-keepalived":
                took_over = self.wait_takeover_or_resumption(offset_a, offset)
            else:
                self.wait_takeover("dc1-b", offset)
            time.sleep(2)
            heal()
            self.lab.wait_roles(INITIAL, timeout=60)
            time.sleep(2)
        self.assert_traffic_intact(traffic)
        diagnostics = f"{traffic.stream}\n{self.logs()}"
        # after everything settled, broadcasts reach every VM exactly once again
        sent = max(int(seq) for seq in traffic.received["vm1"].get("vm4", {"0": 1}))
        for seq in range(sent - 50, sent - 10):
            self.assertIn(seq, traffic.received_by_all("vm4"), diagnostics)
        for dc in halab.DCS:
            self.assertEqual(self.status(f"{dc}-a")["status"]["failover"]["group_digest"],
                             self.status(f"{dc}-b")["status"]["failover"]["group_digest"])
        self.assert_truthful(diagnostics)
        return took_over

    def test_3_wan_link_down(self):
        self.fault_and_return("wan-down", lambda: self.lab.fault("wan-up", "dc1-a"))

    def test_4_keepalived_crash(self):
        pids = self.lab.keepalived_pids("dc1-a")

        def heal():
            pass  # the agent starts keepalived again by itself

        offset = self.log_offset("dc1-a")
        took_over = self.fault_and_return("kill-keepalived", heal)
        self.assertFalse(set(pids) & set(self.lab.keepalived_pids("dc1-a")),
                         "keepalived was started again")
        failover = self.lab.record("dc1-a")
        # Either way dc1-a failed closed (it left the role because keepalived was gone) and
        # reported the split brain that keepalived alone would have left (both units holding
        # the floating addresses), which ends once keepalived is healthy again.
        self.assertIn("active -> standby: keepalived is not running",
                      self.log_since("dc1-a", offset), self.logs())
        self.assertGreaterEqual(failover["split_brain"]["count"], 1, failover)
        if not took_over:
            print("test_4: dc1-a's restarted keepalived took the role back before dc1-b's "
                  "timer ran out (no takeover this run)", file=sys.stderr)
        self.wait_split_brain_over("dc1-a")

    def test_5_all_links_down(self):
        self.fault_and_return("links-down", lambda: self.lab.fault("links-up", "dc1-a"))

    def test_6_hung_keepalived(self):
        # keepalived of the active unit stopped (SIGSTOP), then resumed (SIGCONT). While it is
        # stopped, its unit leaves the role: because its own adverts stopped (hung) or because
        # the peer's adverts as master came first, whichever the load of the host makes come
        # first; either way it reports a split brain. The resumed keepalived advertises at once
        # as the master it still thinks it is and takes the role back; the peer leaves the
        # segments before it joins (its word). No duplicate, no byte lost, in any order.
        pids = self.lab.keepalived_pids("dc1-a")
        with Traffic(self.lab, self.tmp) as traffic:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                self.lab.wait_roles({"dc1-a": "standby", "dc1-b": "active"}, timeout=30)
                record = self.lab.record("dc1-a")
                self.assertRegex(record["cause"], r"hung|the peer \S+ \(priority 100\) advertised",
                                 record)
                self.assertTrue(record["split_brain"]["now"], record)
                self.assertIsNone(self.tunnel_port("dc1-a"))
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)
            self.lab.wait_roles(INITIAL, timeout=60)
            time.sleep(1)
        self.assert_traffic_intact(traffic)
        self.wait_split_brain_over("dc1-a")
        self.assert_truthful(self.logs())

    # --- the agent ----------------------------------------------------------------------------

    def test_7_drift_on_the_standby_is_repaired_as_standby(self):
        # the standby's tunnel port put back into its bridge by hand: the agent's next run
        # (a kernel event) takes it out again, as the standby's state wants
        self.lab.ip("dc1-b", "link", "set", "dev", "dcx", "master", "vmotion")
        deadline = time.monotonic() + 30
        while self.tunnel_port("dc1-b"):
            self.assertLess(time.monotonic(), deadline, self.logs())
            time.sleep(0.05)
        self.assertEqual(self.lab.role("dc1-b"), "standby")
        self.assertFalse(self.lab.holds_floating("dc1-b"))

    def test_8_an_agent_that_dies_is_adopted_without_a_transition(self):
        # The agent of the active unit killed: keepalived and the kernel state stay as they are
        # (no transition: keepalived is not told to track the agent), and the next agent adopts
        # both: it starts in the role the election says and changes nothing at start. Whether a
        # takeover happens later while keepalived is starved on a loaded host is VRRP's
        # business; every one must keep the invariants checked at the end.
        pids = self.lab.keepalived_pids("dc1-a")
        with Traffic(self.lab, self.tmp) as traffic:
            self.lab.stop_agents(units=["dc1-a"], sig=signal.SIGKILL)
            time.sleep(2)
            self.assertEqual(self.lab.keepalived_pids("dc1-a"), pids, "keepalived runs on")
            self.assertTrue(self.lab.holds_floating("dc1-a"), self.logs())
            self.assertEqual(self.tunnel_port("dc1-a"), "vmotion")
            self.assertEqual(self.status("dc1-a")["status"]["failover"]["role_source"],
                             "no agent running")
            offset = self.log_offset("dc1-a")
            self.lab.start_agents(ETHERCTL, self.site, self.lock_dir, self.tmp, units=["dc1-a"])
            time.sleep(2)
            self.lab.wait_roles(INITIAL)
        self.assertEqual(self.lab.keepalived_pids("dc1-a"), pids, "adopted, not restarted")
        new_agent = self.log_since("dc1-a", offset)
        self.assertIn("failover: group dc1 (dc1-a), active at start", new_agent, self.logs())
        self.assertNotIn("reconcile (start)", new_agent, "the adopting run changed something")
        self.assert_traffic_intact(traffic)
        self.assert_truthful(self.logs())

    def test_9_a_stopped_agent_hands_over_and_apply_alone_stays_standby(self):
        self.lab.stop_agents(units=["dc1-a"])  # SIGTERM: leaves the segments, then resigns
        self.lab.wait_roles({"dc1-b": "active"}, timeout=30)
        self.assertFalse(self.lab.holds_floating("dc1-a"))
        self.assertIsNone(self.tunnel_port("dc1-a"))
        with open(os.path.join(self.lab.failover_dir("dc1-a"), "agent-ready")) as f:
            self.assertEqual(f.read(), "1\n", "keepalived stays out of the election")
        report = json.loads(self.etherctl("dc1-a", "--json", "apply").stdout)
        self.assertEqual(report["failover"]["role"], "unknown")
        self.assertFalse(self.lab.holds_floating("dc1-a"))
        self.assertIsNone(self.tunnel_port("dc1-a"))
        self.lab.start_agents(ETHERCTL, self.site, self.lock_dir, self.tmp, units=["dc1-a"])
        self.lab.wait_roles(INITIAL, timeout=60)

    def test_zz_removing_the_groups_leaves_nothing_behind(self):
        # dc1 and dc2 become single edge hosts: the a units keep the addresses, fixed
        site = halab.without_groups(halab.site())
        with open(self.site, "w") as f:
            json.dump(site, f)
        for unit in halab.UNITS:
            self.lab.agents[unit].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while any(self.lab.keepalived_pids(u) for u in halab.UNITS) or any(
                os.path.exists(self.lab.failover_dir(u)) for u in halab.UNITS):
            self.assertLess(time.monotonic(), deadline, self.logs())
            time.sleep(0.1)
        for unit in ("dc1-b", "dc2-b"):
            self.assertFalse(self.lab.holds_floating(unit))
        # vm1 reaches vm2 across the tunnel of the a units alone. Not necessarily at once: when
        # dc1-b was the last to forward vm2's frames (test_9) and vm2 has sent nothing through
        # dc1-a since, dc1's switch still sends vm2's MAC to dc1-b's port until vm1 resolves
        # vm2 again (its neighbour entry's probes: up to about a minute; docs/failover.md,
        # server-side learning). Seen once: the ping right after the removal failed.
        deadline = time.monotonic() + 90
        while self.lab.exec("vm1", "ping", "-c", "1", "-W", "1", halab.VMS["vm2"][1],
                            check=False).returncode != 0:
            fdb = run("bridge", "-n", self.lab.ns("dc1-srv"), "fdb", "show", check=False).stdout
            self.assertLess(time.monotonic(), deadline, f"dc1 switch:\n{fdb}\n{self.logs()}")


if __name__ == "__main__":
    unittest.main()
