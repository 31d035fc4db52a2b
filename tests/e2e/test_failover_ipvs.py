"""End to end: a client connection through dc1's virtual server survives every fault of the
active unit and the failback, with the kernel's IPVS connection sync daemons (examples/ha with
a pool on dc1's pair, `etherctl watch` on every unit, keepalived elected by VRRP).

IPVS is not in the host kernel: this runs in the stock-kernel VM (vm.<k>.e2e.failover_ipvs) and
skips on the host with the reason. `ipvsadm` in each unit's namespace is the independent reader
of the sync daemons, the virtual service and the connection table.

One lab for the class; the tests run in order. A long-lived TCP connection from the client
namespace to the virtual server (examples/two-dc/stream.py: every byte checked both ways, rate
limited) is opened while dc1-a is active and kept through every fault on dc1-a (its WAN link
down, every keepalived process SIGKILLed, all its links down) and each return of dc1-a
(preemption). In the link faults dc1-a is cut off while dc1-b is active: a second connection
opened then is one dc1-a learns only through dc1-b's master daemon after it returns (keepalived's
one-way sync loses exactly these on failback); it must survive the failback too.

The pairs advertise every 100 ms (the default) in the VM too, although it has one emulated
vCPU for four agents, four keepalived and the streams: measured there, no keepalived starved
(faults taken over in 0.5-0.8 s). Adverts every second would make the crash case race: the
agent starts keepalived again at once, and a new keepalived that comes up within 0.39 s of its
last advert is master again before the peer's longer master-down interval (3.61 s against
3.22 s) ends, so no takeover happens. ETHERCTL_FAILOVER_ADVERT_INT sets another interval.
No timing is asserted; waits stretch with ETHERCTL_TIME_FACTOR. Figures (how long until the
standby lists a connection, how long each connection stalled) are printed.
Needs root, keepalived, ipvsadm, /usr/bin/python3; ETHERCTL names the binary (set by ctest).
"""
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_failover import (ETHERCTL, INITIAL, KEEPALIVED, PY, STREAM,  # noqa: E402
                           halab, keep_logs_and_remove, run)
from test_pool_migration import require_root_and_ipvs  # noqa: E402

IN_VM = os.environ.get("ETHERCTL_IN_VM") == "1"
SLOW = float(os.environ.get("ETHERCTL_TIME_FACTOR") or (20 if IN_VM else 1))
ADVERT_INT = float(os.environ.get("ETHERCTL_FAILOVER_ADVERT_INT") or 0.1)
VIP = halab.VIRTUAL_SERVER["dc1"]
PORT = 8080
# Connection A: 20 kB/s in 16 KB writes. Connection B, made while dc1-a is away: 200 B/s in
# 200-byte writes, about two packets a second from the client: with the kernel's default sync
# rule (every 50th packet of a connection) the returning unit would learn it only about every
# 25 s, later than a preemption seconds after its return.
RATES = {"A": (20000, 16384), "B": (200, 200)}
GROUP = halab.VRID["dc1"]

# Each member echoes every connection (the client checks every echoed byte).
ECHO = r"""
import socket, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", %d))
srv.listen(64)
print("listening", flush=True)
def serve(c):
    while True:
        data = c.recv(65536)
        if not data:
            break
        c.sendall(data)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
""" % PORT

PROGRESS = re.compile(r"echoed\+verified=(\d+)")


class Connection:
    """A byte-checked stream from the client namespace to the virtual server."""

    def __init__(self, lab, tmp, name, kind):
        self.lab, self.name = lab, name
        self.rate, chunk = RATES[kind]
        self.stop = os.path.join(tmp, f"stop-{name}")
        self.verified = 0
        self.changed = time.monotonic()
        before = set(self.client_ports())
        self.proc = lab.popen("client", PY, STREAM, "client", "--connect", VIP, "--port",
                              str(PORT), "--duration", "3600", "--stop-file", self.stop,
                              "--rate", str(self.rate), "--chunk", str(chunk),
                              "--timeout", str(60 * SLOW),
                              "--connect-timeout", str(10 * SLOW), "--progress",
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.opened = time.monotonic()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 30 * SLOW
        while not (new := set(self.client_ports()) - before):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{name}: not connected ({self.proc.poll()})")
            time.sleep(0.1)
        self.port = new.pop()  # its row in `ipvsadm -L -n -c`

    def _read(self):
        for line in self.proc.stderr:
            m = PROGRESS.search(line)
            if m:
                self.verified, self.changed = int(m.group(1)), time.monotonic()

    def client_ports(self):
        """Source ports of the client's connections to the virtual server."""
        out = self.lab.exec("client", "ss", "-Htn", "state", "established", "dst",
                            f"{VIP}:{PORT}").stdout
        local = halab.CLIENT[2] + ":"
        return sorted(int(field[len(local):]) for line in out.splitlines()
                      for field in line.split() if field.startswith(local))

    def finish(self):
        open(self.stop, "w").close()
        out, _ = self.proc.communicate(timeout=120 * SLOW)
        self.reader.join(timeout=10)
        return json.loads(out.strip().splitlines()[-1])


class FailoverIpvsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_root_and_ipvs("e2e.failover_ipvs")
        for tool in (KEEPALIVED, "/usr/sbin/ipvsadm"):
            if not os.access(tool, os.X_OK):
                raise unittest.SkipTest(f"needs {tool}")
        cls.tmp = tempfile.mkdtemp(prefix="etherctl-failover-ipvs-")
        cls.lab = halab.Lab(f"ivlab{os.getpid()}")
        cls.site = os.path.join(cls.tmp, "site.json")
        with open(cls.site, "w") as f:
            json.dump(halab.site(advert_int=ADVERT_INT, pools=True), f)
        cls.lock_dir = os.path.join(cls.tmp, "run")
        cls.procs = []
        cls.connections = {}
        try:
            cls.lab.up()
            # The director: IPVS NAT forwards between the client and the members.
            for unit in ("dc1-a", "dc1-b"):
                cls.lab.exec(unit, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for vm in ("vm1", "vm3"):
                server = cls.lab.popen(vm, PY, "-c", ECHO, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL)
                cls.procs.append(server)
                server.stdout.readline()
            started = time.monotonic()
            cls.lab.start_agents(ETHERCTL, cls.site, cls.lock_dir, cls.tmp)
            cls.lab.wait_roles(INITIAL, timeout=60 * SLOW)
            print(f"\n  roles settled {time.monotonic() - started:.1f} s after the agents started"
                  f" (advert_int {ADVERT_INT} s)", flush=True)
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for conn in cls.connections.values():
            if conn.proc.poll() is None:
                conn.proc.kill()
                conn.proc.wait()
        for proc in cls.procs:
            proc.kill()
            proc.wait()
        cls.lab.stop_agents(sig=signal.SIGKILL)
        env = dict(os.environ, ETHERCTL_LOCK_DIR=cls.lock_dir)
        for unit in halab.UNITS:  # pins in bpffs outlive namespaces: destroy first
            if cls.lab.exists(unit):
                run(ETHERCTL, "--netns", cls.lab.ns(unit), "--device", unit, "destroy", cls.site,
                    check=False, env=env, timeout=120 * SLOW)
        cls.lab.down()
        keep_logs_and_remove(cls.tmp)

    # --- readers ------------------------------------------------------------------------------

    def ipvsadm(self, unit, *args):
        return self.lab.exec(unit, "ipvsadm", *args).stdout

    def daemons(self, unit):
        """{"master"/"backup": (interface, syncid)} from `ipvsadm -L -n --daemon`."""
        out = {}
        for m in re.finditer(r"(master|backup) sync daemon \(mcast=(\S+), syncid=(\d+)",
                             self.ipvsadm(unit, "-L", "-n", "--daemon")):
            out[m.group(1)] = (m.group(2), int(m.group(3)))
        return out

    def sync_rule(self, unit):
        """(sync_threshold, sync_refresh_period) of the unit's namespace."""
        return tuple(self.lab.exec(unit, "cat", f"/proc/sys/net/ipv4/vs/{name}").stdout.split()
                     for name in ("sync_threshold", "sync_refresh_period"))

    def listed(self, unit, conn):
        """The state `unit`'s IPVS table gives the client's connection, or None."""
        client = f"{halab.CLIENT[2]}:{conn.port}"
        for line in self.ipvsadm(unit, "-L", "-n", "-c").splitlines():
            fields = line.split()
            if len(fields) >= 6 and fields[3] == client and fields[4] == f"{VIP}:{PORT}":
                return fields[2]
        return None

    def logs(self):
        out = []
        for unit in halab.UNITS:
            with open(os.path.join(self.tmp, f"{unit}.log")) as f:
                out.append(f"--- {unit}\n" + "".join(f.readlines()[-30:]))
        for unit in ("dc1-a", "dc1-b"):
            out.append(f"--- {unit} ipvsadm -L -n -c\n" + self.ipvsadm(unit, "-L", "-n", "-c"))
        return "\n".join(out)

    # --- waits ------------------------------------------------------------------------------

    def wait_listed(self, unit, conn, timeout=30):
        deadline = time.monotonic() + timeout * SLOW
        while self.listed(unit, conn) != "ESTABLISHED":
            self.assert_alive(conn)
            self.assertLess(time.monotonic(), deadline,
                            f"{unit} never listed {conn.name} as established\n{self.logs()}")
            time.sleep(0.2)
        return time.monotonic()

    def assert_alive(self, conn):
        if conn.proc.poll() is not None:
            out, err = conn.proc.communicate()
            self.fail(f"connection {conn.name} ended: {out} {err[-2000:]}\n{self.logs()}")

    def wait_flowing(self, conn, since, timeout=60):
        """Waits until `conn` verified two seconds' worth of bytes more than it had at time
        `since`; returns how long after `since` its bytes first moved again (1 s resolution: the
        stream reports once a second)."""
        deadline = time.monotonic() + timeout * SLOW
        base, resumed = conn.verified, None
        while conn.verified < base + 2 * conn.rate:
            self.assert_alive(conn)
            if resumed is None and conn.verified > base:
                resumed = conn.changed - since
            self.assertLess(time.monotonic(), deadline,
                            f"{conn.name} stopped at {conn.verified} bytes\n{self.logs()}")
            time.sleep(0.1)
        return resumed if resumed is not None else conn.changed - since

    def wait_takeover(self, unit, offset, timeout=60):
        deadline = time.monotonic() + timeout * SLOW
        path = os.path.join(self.tmp, f"{unit}.log")
        while True:
            with open(path) as f:
                f.seek(offset)
                if "standby -> active" in f.read():
                    return time.monotonic()
            self.assertLess(time.monotonic(), deadline, f"{unit} never took over\n{self.logs()}")
            time.sleep(0.05)

    def assert_finished_intact(self, conn):
        result = conn.finish()
        self.assertTrue(result["ok"], f"{conn.name}: {result}\n{self.logs()}")
        self.assertIsNone(result["first_bad_byte"], result)
        print(f"  {conn.name}: {result['echoed']} bytes, every one verified, longest stall "
              f"{result['longest_stall_ms']} ms", flush=True)

    # --- the tests --------------------------------------------------------------------------

    def test_1_both_units_run_both_sync_daemons_and_the_service(self):
        interface = "eth0"  # the group's VLAN "wan" is the units' eth0
        for unit in ("dc1-a", "dc1-b"):
            with self.subTest(unit=unit):
                self.assertEqual(self.daemons(unit), {"master": (interface, GROUP),
                                                      "backup": (interface, GROUP)})
                # synced by time (every 2 s while a connection has traffic), not every 50th
                # packet: a returning unit learns slow connections before it preempts
                self.assertEqual(self.sync_rule(unit), (["3", "0"], ["2"]))
                service = self.ipvsadm(unit, "-L", "-n", "-t", f"{VIP}:{PORT}")
                for vm in ("vm1", "vm3"):
                    self.assertRegex(service, rf"->\s+{halab.VMS[vm][1]}:{PORT}\s+Masq")
        for unit in ("dc2-a", "dc2-b"):  # no pools: no daemons
            self.assertEqual(self.daemons(unit), {})
        # the virtual address floats with the active unit (wait_roles checks the WAN one)
        self.lab.wait_roles(INITIAL, timeout=60 * SLOW)
        self.assertEqual({u: any(a.startswith(VIP + "/")
                                 for a in self.lab.addresses(u).get("eth0", []))
                          for u in ("dc1-a", "dc1-b")}, {"dc1-a": True, "dc1-b": False})

    def test_2_connections_survive_every_fault_and_the_failback(self):
        a = self.connections["a"] = Connection(self.lab, self.tmp, "connection A", "A")
        listed = self.wait_listed("dc1-a", a)
        synced = self.wait_listed("dc1-b", a)
        print(f"  the standby dc1-b listed connection A {synced - a.opened:.1f} s after it was "
              f"opened ({listed - a.opened:.1f} s for dc1-a)", flush=True)
        for fault, heal in (("wan-down", "wan-up"), ("kill-keepalived", None),
                            ("links-down", "links-up")):
            with self.subTest(fault=fault):
                self.fault_and_failback(a, fault, heal)
        self.assertEqual(self.lab.role("dc1-a"), "active")
        self.assert_finished_intact(a)
        # 3 faults: 6 transitions of each unit, more when a starved keepalived lost the role
        records = {u: self.lab.record(u) for u in ("dc1-a", "dc1-b")}
        print("  role transitions: " + ", ".join(
            f"{u} {r.get('transitions')} (split brains {r.get('split_brain', {}).get('count')})"
            for u, r in records.items()), flush=True)

    def fault_and_failback(self, a, fault, heal):
        offset = os.path.getsize(os.path.join(self.tmp, "dc1-b.log"))
        injected = self.lab.fault(fault, "dc1-a")
        took = self.wait_takeover("dc1-b", offset)
        resumed = self.wait_flowing(a, injected)
        line = (f"  {fault}: dc1-b active {took - injected:.1f} s after the fault; connection A "
                f"moved again within {resumed:.1f} s")
        b = None
        if heal:
            # dc1-a is cut off: it learns connection B only from dc1-b's master daemon after it
            # returns, before it may take the role back.
            self.lab.wait_roles({"dc1-a": "standby", "dc1-b": "active"}, timeout=60 * SLOW)
            b = self.connections[fault] = Connection(self.lab, self.tmp, f"connection B ({fault})",
                                                     "B")
            self.wait_listed("dc1-b", b)
            self.wait_flowing(b, time.monotonic())
            healed = time.monotonic()
            self.lab.fault(heal, "dc1-a")
            line += f"; {heal}"
        else:
            healed = injected  # the agent starts keepalived again by itself
        self.lab.wait_roles(INITIAL, timeout=60 * SLOW)
        back = time.monotonic()
        line += f"; dc1-a active again {back - healed:.1f} s later"
        line += f"; connection A moved within {self.wait_flowing(a, back):.1f} s"
        if b:
            line += f", connection B within {self.wait_flowing(b, back):.1f} s"
            self.assertEqual(self.listed("dc1-a", b), "ESTABLISHED", self.logs())
            print(line, flush=True)
            self.assert_finished_intact(b)
        else:
            print(line, flush=True)
        self.assertEqual(self.listed("dc1-a", a), "ESTABLISHED", self.logs())

    def test_zz_removing_the_groups_leaves_nothing_behind(self):
        site = halab.without_groups(halab.site(advert_int=ADVERT_INT, pools=True))
        with open(self.site, "w") as f:
            json.dump(site, f)
        for unit in halab.UNITS:
            self.lab.agents[unit].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60 * SLOW
        while (any(self.lab.keepalived_pids(u) for u in halab.UNITS) or
               any(os.path.exists(self.lab.failover_dir(u)) for u in halab.UNITS) or
               any(self.daemons(u) for u in halab.UNITS)):
            self.assertLess(time.monotonic(), deadline, self.logs())
            time.sleep(0.2)
        for unit in ("dc1-a", "dc1-b"):  # the kernel's sync rule again
            self.assertEqual(self.sync_rule(unit), (["3", "50"], ["0"]))
        floating = [halab.WAN["dc1"][4], VIP, halab.SERVER_GATEWAY["dc1"]]
        held = [a for addrs in self.lab.addresses("dc1-b").values() for a in addrs
                if a.split("/")[0] in floating]
        self.assertEqual(held, [], "dc1-b keeps no floating address")
        # dc1-a, a single edge host now, still serves the pool
        self.assertRegex(self.ipvsadm("dc1-a", "-L", "-n"), rf"TCP\s+{VIP}:{PORT}")


if __name__ == "__main__":
    unittest.main()
