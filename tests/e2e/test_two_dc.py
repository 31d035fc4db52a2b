"""End to end: the two-data-center lab (examples/two-dc) with etherctl applied on both edges.

Every test builds its own lab (namespaces prefixed with a name unique to the process and the
test) and removes it afterwards, also when the test fails. Needs root, /usr/bin/tshark and
/usr/bin/python3; ETHERCTL names the binary (set by ctest).
"""
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
LAB_SH = os.path.join(ROOT, "examples", "two-dc", "lab.sh")
SITE = os.path.join(ROOT, "examples", "two-dc", "site.json")
STREAM = os.path.join(ROOT, "examples", "two-dc", "stream.py")
ETHERCTL = os.environ.get("ETHERCTL") or os.path.join(ROOT, "build", "cmd", "etherctl", "etherctl")
PY = "/usr/bin/python3"
TSHARK = "/usr/bin/tshark"

VM_IP = {"vm1": "10.1.0.21", "vm2": "10.1.0.22"}
VM_MAC = {"vm1": "02:ec:00:00:00:21", "vm2": "02:ec:00:00:00:22"}
EDGE_SELF = {"dc1": "10.1.0.1", "dc2": "10.1.0.2"}
MIGRATION_STALL_LIMIT_S = 10.0

_counter = itertools.count()

# Datagrams of a few sizes (the largest crosses the WAN in two outer fragments) to a port
# nobody listens on: only the capture on the WAN looks at them.
UDP_SENDER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for size in (100, 1000, 1400, 1472):
    s.sendto(bytes(range(256)) * (size // 256) + bytes(size % 256), (sys.argv[1], 9))
"""


def run(*args, check=True, timeout=60, env=None):
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return result


class Lab:
    """One instance of examples/two-dc/lab.sh, named so that parallel runs never collide."""

    def __init__(self):
        self.name = f"e2e{os.getpid()}x{next(_counter)}"
        self.env = dict(os.environ, LAB=self.name)
        self.tmp = tempfile.mkdtemp(prefix=f"etherctl-{self.name}-")
        self.env["ETHERCTL_LOCK_DIR"] = os.path.join(self.tmp, "run")
        self.site = SITE
        self.dc_env = {}  # per-edge environment (test_ipsec.py: each edge's own charon)

    def ns(self, node):
        return f"{self.name}-{node}"

    def sh(self, *args, check=True, timeout=60):
        return run(LAB_SH, *args, check=check, timeout=timeout, env=self.env)

    def up(self):
        # A limit for a hung lab, not a timing check: in the TCG VM on a loaded machine (CI
        # runs both VMs beside other tests) building the lab took more than 60 s.
        self.sh("up", timeout=300)

    def down(self):
        # etherctl destroy first: the datapath's maps are pinned in the host's bpffs and would
        # outlive the namespaces (deleting a namespace does not unpin them)
        for dc in ("dc1", "dc2"):
            if os.path.exists(f"/run/netns/{self.ns(dc + '-edge')}"):
                self.etherctl(dc, "destroy", check=False)
        self.sh("down", check=False)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def exec(self, node, *args, check=True, timeout=60):
        return run("ip", "netns", "exec", self.ns(node), *args, check=check, timeout=timeout)

    def popen(self, node, *args, **kwargs):
        return subprocess.Popen(["ip", "netns", "exec", self.ns(node), *args], text=True,
                                **kwargs)

    def etherctl(self, dc, *args, check=True, timeout=60):
        return run(ETHERCTL, "--netns", self.ns(f"{dc}-edge"), "--device", f"{dc}-edge", *args,
                   self.site, check=check, env=dict(self.env, **self.dc_env.get(dc, {})),
                   timeout=timeout)

    def etherctl_json(self, dc, *args):
        return json.loads(self.etherctl(dc, "--json", *args).stdout)

    def migrate(self, vm, *args):
        return self.sh("migrate", vm, *args)

    def links(self, node):
        return {l["ifname"]: l for l in json.loads(
            run("ip", "-n", self.ns(node), "-j", "-d", "link", "show").stdout)}

    def fdb_port(self, dc, mac):
        """The port of dcN-edge's vmotion bridge that has learned mac, or None."""
        entries = json.loads(run("bridge", "-n", self.ns(f"{dc}-edge"), "-j", "fdb", "show",
                                 "br", "vmotion").stdout)
        for e in entries:
            if e.get("mac", "").lower() == mac and "vlan" not in e and e.get("ifname"):
                if e.get("ifname") != "vmotion":
                    return e["ifname"]
        return None


class TwoDcTest(unittest.TestCase):
    """The lab with the site file applied on both edges."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (network namespaces, BPF)")
        if not os.access(ETHERCTL, os.X_OK):
            raise AssertionError(f"no etherctl binary at {ETHERCTL} (set ETHERCTL)")

    def setUp(self):
        self.lab = Lab()
        self.addCleanup(self.lab.down)  # registered first: also runs after a partial up
        self.lab.up()
        self.apply_reports = {dc: self.apply(dc) for dc in ("dc1", "dc2")}
        self.assert_operational()

    def assert_operational(self):
        """Right after apply, both tunnel ports are operationally up and forwarding in their
        bridges: apply waits for the veth pair's operational state (set asynchronously by the
        kernel's linkwatch) before it enslaves the port, so no frame is lost after it returns."""
        for dc in ("dc1", "dc2"):
            edge = self.lab.ns(f"{dc}-edge")
            port = json.loads(run("bridge", "-n", edge, "-j", "link", "show", "dev", "dcx",
                                  check=False).stdout or "[]")
            oper = {l["ifname"]: l.get("operstate")
                    for l in json.loads(run("ip", "-n", edge, "-j", "link", "show").stdout)}
            self.assertEqual((port[0].get("state") if port else None, oper.get("dcx"),
                              oper.get("eip-dcx")), ("forwarding", "UP", "UP"),
                             f"{dc}: tunnel port not operational right after apply")

    def apply(self, dc):
        result = self.lab.etherctl(dc, "--json", "apply", check=False)
        self.assertEqual(result.returncode, 0,
                         f"etherctl apply on {dc}-edge failed ({result.returncode}):\n"
                         f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return json.loads(result.stdout)

    def ping(self, node, target, *extra, count=3):
        # -w: the first packet may wait for ARP across the tunnel (ping stops at the first
        # error, such as an ARP resolution that failed after 3 probes)
        args = ["ping", "-n", "-D", "-c", str(count), "-i", "0.2", "-w", "10", *extra, target]
        result = self.lab.exec(node, *args, check=False)
        if result.returncode != 0:
            self.fail(f"{node}: {' '.join(args)} failed ({result.returncode}) at "
                      f"{time.time():.3f}:\n{result.stdout}{result.stderr}\n{self.diagnostics()}")
        return result

    def diagnostics(self):
        """What the edges know, for failure messages."""
        out = []
        for dc in ("dc1", "dc2"):
            edge = self.lab.ns(f"{dc}-edge")
            for cmd in (["bridge", "-n", edge, "fdb", "show", "br", "vmotion"],
                        ["ip", "-n", edge, "neigh", "show"],
                        ["ip", "-n", edge, "-s", "link", "show"]):
                r = run(*cmd, check=False)
                out.append(f"--- {' '.join(cmd)}\n{r.stdout}{r.stderr}")
            r = self.lab.etherctl(dc, "status", check=False)
            out.append(f"--- etherctl status ({dc}-edge)\n{r.stdout}{r.stderr}")
        for node in ("vm1", "vm2", "dc1-hv", "dc2-hv"):
            r = run("ip", "-n", self.lab.ns(node), "-s", "link", "show", check=False)
            out.append(f"--- ip -s link ({node})\n{r.stdout}")
        return "\n".join(out)

    # --- traffic across the tunnel ---------------------------------------------------------

    def test_arp_and_ping_across_the_tunnel(self):
        for vm in ("vm1", "vm2"):
            self.lab.exec(vm, "ip", "neigh", "flush", "dev", "eth0")
        self.ping("vm1", VM_IP["vm2"])
        self.ping("vm2", VM_IP["vm1"])
        neigh = json.loads(self.lab.exec("vm1", "ip", "-j", "neigh", "show", VM_IP["vm2"]).stdout)
        self.assertEqual([n.get("lladdr") for n in neigh], [VM_MAC["vm2"]],
                         "vm1 resolved vm2 by ARP across the tunnel")
        # each edge learned the remote VM behind the tunnel port
        self.assertEqual(self.lab.fdb_port("dc1", VM_MAC["vm2"]), "dcx")
        self.assertEqual(self.lab.fdb_port("dc2", VM_MAC["vm1"]), "dcx")
        # the edges' server self IPs reach the VMs of the other data center
        self.ping("dc1-edge", VM_IP["vm2"])
        self.ping("dc2-edge", VM_IP["vm1"])

    def test_full_size_frames_cross_the_1500_byte_wan_both_ways(self):
        self.assertEqual(self.lab.links("wan")["dc1"]["mtu"], 1500)
        self.assertEqual(self.lab.links("wan")["dc2"]["mtu"], 1500)
        self.ping("vm1", VM_IP["vm2"], "-M", "do", "-s", "1472")
        self.ping("vm2", VM_IP["vm1"], "-M", "do", "-s", "1472")

    def test_tcp_stream_across_the_tunnel(self):
        result, server = self.stream("vm2", "vm1", bytes_=4_000_000)
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["echoed"], 4_000_000)
        self.assertEqual(server["received"], 4_000_000)
        self.assertIsNone(server["first_bad_byte"])
        # The tunnel clamps the MSS of SYNs crossing it (clamp_tcp_mss, on by default), so a
        # connection opened across the WAN never needs an outer fragment.
        self.check_tunnel_counters(reassembled=False)

    # --- live migration ---------------------------------------------------------------------

    def test_live_migration_with_gratuitous_arp(self):
        self.live_migration("--garp")

    def test_live_migration_with_rarp(self):
        self.live_migration("--rarp")

    def test_live_migration_there_and_back(self):
        """dc1 -> dc2 (gratuitous ARP), then back to dc1 (RARP), one connection throughout."""
        stop = os.path.join(self.lab.tmp, "stop-stream")

        def migrate_twice():
            time.sleep(2.5)
            t = time.monotonic()
            self.lab.migrate("vm1", "--to", "dc2", "--garp")
            taken = time.monotonic() - t
            self.assert_stream_crosses_tunnel(seconds=3)
            self.lab.migrate("vm1", "--to", "dc1", "--rarp")
            time.sleep(2)
            open(stop, "w").close()
            return taken, t

        result, server = self.stream("vm1", "dc1-edge", source=EDGE_SELF["dc1"], duration=60,
                                     stop_file=stop, rate=2_000_000, during=migrate_twice)
        print(f"\n  there and back: longest stall {result['longest_stall_ms']} ms (ended "
              f"{result['stall_ended_at_s']} s into the stream), {result['echoed']} bytes "
              f"echoed and verified", flush=True)
        self.assertTrue(result["ok"], result)
        self.assertEqual(server["received"], result["sent"])
        self.assertIsNone(server["first_bad_byte"], server)
        self.assertLess(result["longest_stall_ms"], MIGRATION_STALL_LIMIT_S * 1000)
        self.assertIn("vm1", self.lab.links("dc1-hv"))
        self.assertEqual(self.lab.fdb_port("dc1", VM_MAC["vm1"]), "eth1")
        self.assertEqual(self.lab.fdb_port("dc2", VM_MAC["vm1"]), "dcx")

    def live_migration(self, announce):
        """vm1 moves from dc1 to dc2 while dc1-edge (10.1.0.1) streams to it."""
        self.ping("dc1-edge", VM_IP["vm1"], count=1)
        self.assertEqual(self.lab.fdb_port("dc1", VM_MAC["vm1"]), "eth1")
        stop = os.path.join(self.lab.tmp, "stop-stream")

        def migrate():
            time.sleep(2.5)
            t = time.monotonic()
            self.lab.migrate("vm1", "--to", "dc2", announce)
            taken = time.monotonic() - t
            # the stream goes on for a while after the move, whatever the move took
            self.assert_stream_crosses_tunnel(seconds=4)
            open(stop, "w").close()
            return taken, t

        result, server = self.stream("vm1", "dc1-edge", source=EDGE_SELF["dc1"], duration=60,
                                     stop_file=stop, rate=2_000_000, during=migrate)
        stall = result["longest_stall_ms"]
        print(f"\n  live migration ({announce[2:]}): longest stall {stall} ms (ended "
              f"{result['stall_ended_at_s']} s into the stream, byte {result['stall_at_byte']}; "
              f"the migration started about {self.migrate_started:.1f} s in and its command took "
              f"{self.migrate_seconds * 1000:.0f} ms), {result['echoed']} bytes echoed and "
              f"verified", flush=True)
        self.assertIsNone(result["error"], f"the connection broke: {result}")
        self.assertIsNone(result["first_bad_byte"], result)
        self.assertTrue(result["complete"], result)
        self.assertTrue(result["ok"], result)
        self.assertEqual(server["received"], result["sent"])
        self.assertIsNone(server["first_bad_byte"], server)
        self.assertIsNone(server["error"], server)
        self.assertLess(stall, MIGRATION_STALL_LIMIT_S * 1000)
        # vm1 is in dc2 now, and dc1-edge reaches it through the tunnel
        self.assertIn("vm1", self.lab.links("dc2-hv"))
        self.assertNotIn("vm1", self.lab.links("dc1-hv"))
        self.assertEqual(self.lab.fdb_port("dc1", VM_MAC["vm1"]), "dcx")
        self.ping("dc1-edge", VM_IP["vm1"], "-M", "do", "-s", "1472")
        self.check_tunnel_counters(reassembled=True)

    def assert_stream_crosses_tunnel(self, seconds, rate=2_000_000):
        """The stream's frames cross the tunnel for `seconds` (called after a move to dc2)."""
        before = self.tunnel_counters("dc1")["tx_bytes"]
        time.sleep(seconds)
        crossed = self.tunnel_counters("dc1")["tx_bytes"] - before
        print(f"\n  {crossed} bytes crossed dc1-edge's tunnel in the {seconds} s after the move",
              flush=True)
        self.assertGreater(crossed, rate * seconds / 4, "the stream did not go through the tunnel")

    def tunnel_counters(self, dc):
        status = self.lab.etherctl_json(dc, "status")["status"]["objects"]
        tunnels = [o for o in status if o["kind"] == "tunnel" and o["name"] == "dcx"]
        self.assertEqual(len(tunnels), 1, status)
        self.assertIn("counters", tunnels[0], tunnels[0])
        return tunnels[0]["counters"]

    def check_tunnel_counters(self, reassembled):
        """Traffic crossed both ways, nothing was dropped; outer fragments were reassembled
        (reassembled=True), or none were needed (False), or either (None)."""
        for dc in ("dc1", "dc2"):
            c = self.tunnel_counters(dc)
            print(f"  {dc}-edge dcx: tx {c['tx_packets']} rx {c['rx_packets']} fragments "
                  f"{c['rx_fragments']} reassembled {c['reassembled']} drops "
                  f"{ {k: v for k, v in c['drops'].items() if v} }", flush=True)
            self.assertGreater(c["tx_packets"], 0, c)
            self.assertGreater(c["rx_packets"], 0, c)
            # Without the site file, status finds the tunnel by its mark alone, with its
            # device and the same counters (read after the ones above: never fewer).
            bare = json.loads(run(ETHERCTL, "--netns", self.lab.ns(f"{dc}-edge"), "--json",
                                  "status", env=self.lab.env).stdout)["status"]
            self.assertIsNone(bare["site_file"])
            tunnels = [o for o in bare["objects"] if o["kind"] == "tunnel"]
            self.assertEqual([(o["key"], o["device"]) for o in tunnels], [("dcx", f"{dc}-edge")])
            self.assertGreaterEqual(tunnels[0]["counters"]["tx_packets"], c["tx_packets"])
            self.assertGreaterEqual(tunnels[0]["counters"]["rx_packets"], c["rx_packets"])
            # Every drop reason of the datapath is reported, the reassembly ones included.
            for reason in ("frag_overlap", "frag_timeout", "frag_evicted", "frag_oversize"):
                self.assertIn(reason, c["drops"], c)
            if reassembled is True:
                self.assertGreater(c["reassembled"], 0, c)
            elif reassembled is False:
                self.assertEqual((c["rx_fragments"], c["reassembled"]), (0, 0), c)
            self.assertEqual({k: v for k, v in c["drops"].items() if v}, {}, c)

    def stream(self, server_node, client_node, source=None, bytes_=None, duration=None,
               rate=0, during=None, stop_file=None):
        server_ip = VM_IP[server_node]
        server = self.lab.popen(server_node, PY, STREAM, "server", "--bind", server_ip,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(lambda: server.poll() is None and server.kill())
        line = server.stdout.readline()
        self.assertIn("listening", line, server.stderr.read() if not line else line)
        args = [PY, STREAM, "client", "--connect", server_ip, "--timeout", "20",
                "--rate", str(rate)]
        if source:
            args += ["--source", source]
        args += ["--bytes", str(bytes_)] if bytes_ else ["--duration", str(duration)]
        if stop_file:
            args += ["--stop-file", stop_file]
        client = self.lab.popen(client_node, *args, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        self.addCleanup(lambda: client.poll() is None and client.kill())
        started = time.monotonic()
        self.migrate_seconds, self.migrate_started = (
            during() if during else (0.0, started))
        self.migrate_started -= started
        try:
            out, err = client.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            client.kill()
            out, err = client.communicate()
            self.fail(f"stream client hung:\n{out}\n{err}")
        try:
            sout, serr = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            sout, serr = server.communicate()
        try:
            result = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.fail(f"stream client printed no result:\nstdout:\n{out}\nstderr:\n{err}")
        summary = [json.loads(l) for l in sout.strip().splitlines() if l.startswith("{")]
        summary = summary[-1] if summary else {}
        self.assertEqual(summary.get("role"), "server",
                         f"stream server printed no summary:\n{sout}\n{serr}")
        return result, summary

    # --- an independent decoder on the WAN --------------------------------------------------

    def test_wireshark_decodes_etherip_version_3_on_the_wan(self):
        pcap = os.path.join(self.lab.tmp, "wan.pcap")
        log = os.path.join(self.lab.tmp, "tshark.log")
        with open(log, "w") as errf:
            cap = self.lab.popen("wan", TSHARK, "-n", "-i", "dc1", "-w", pcap, "-f", "ip proto 97",
                                 stdout=subprocess.DEVNULL, stderr=errf)
        self.addCleanup(lambda: cap.poll() is None and cap.kill())
        def read_log():
            with open(log) as f:
                return f.read()

        deadline = time.monotonic() + 30
        while "Capturing on" not in read_log():
            self.assertIsNone(cap.poll(), read_log())
            self.assertLess(time.monotonic(), deadline, "tshark did not start")
            time.sleep(0.1)
        time.sleep(0.5)  # let dumpcap settle
        # a broadcast ARP request that has to cross the tunnel, whatever vm1's neighbour cache holds
        self.lab.exec("vm1", "ping", "-c", "1", "-W", "1", "10.1.0.99", check=False)
        self.ping("vm1", VM_IP["vm2"], count=2)
        self.ping("vm1", VM_IP["vm2"], "-M", "do", "-s", "1472", count=2)
        # TCP and UDP leave the VMs with partial checksums, which the tunnel's bridge port keeps
        # partial (IPv4 outer): they are filled in after encapsulation. The edges' WAN devices
        # act as NICs without checksum offload (the kernel fills the checksum in as it sends),
        # so the capture holds what a wire carries and tshark checks every inner checksum.
        for dc in ("dc1", "dc2"):
            self.lab.exec(f"{dc}-edge", "ethtool", "-K", "eth0", "tx", "off")
        result, server = self.stream("vm2", "vm1", bytes_=2_000_000)
        self.assertTrue(result["ok"], result)
        self.assertIsNone(server["first_bad_byte"])
        self.lab.exec("vm1", PY, "-c", UDP_SENDER, VM_IP["vm2"])
        time.sleep(0.5)
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=20)
        out = run(TSHARK, "-n", "-r", pcap, "-Y", "etherip", "-T", "fields", "-E", "separator=|",
                  "-e", "ip.src", "-e", "ip.dst", "-e", "etherip.ver", "-e", "eth.src",
                  "-e", "eth.type", "-e", "arp.opcode", "-e", "icmp.type", "-e", "ip.len",
                  "-e", "arp.dst.proto_ipv4").stdout
        rows = [l.split("|") for l in out.strip().splitlines()]
        self.assertTrue(rows, f"no EtherIP on the WAN; tshark log:\n{read_log()}")
        for src, dst, ver, *_ in rows:
            self.assertEqual(ver, "3")
            self.assertEqual({src.split(",")[0], dst.split(",")[0]},
                             {"198.51.100.1", "203.0.113.1"})

        def inner(row):
            return row[3].split(",")[-1].lower(), row[4].split(",")[-1]

        arp = [r for r in rows if inner(r) == (VM_MAC["vm1"], "0x0806") and r[5] == "1"
               and r[8] == "10.1.0.99"]
        self.assertTrue(arp, f"vm1's ARP request inside EtherIP: {rows}")
        icmp = [r for r in rows if inner(r) == (VM_MAC["vm1"], "0x0800") and r[6] == "8"]
        self.assertTrue(icmp, f"vm1's echo request inside EtherIP: {rows}")
        big = [r for r in icmp if "1500" in r[7].split(",")]
        self.assertTrue(big, f"a full-size inner packet (fragmented outer, reassembled): {rows}")
        print(f"\n  tshark decoded {len(rows)} EtherIP packets, all version 3", flush=True)
        out = run(TSHARK, "-n", "-r", pcap, "-o", "tcp.check_checksum:TRUE", "-o",
                  "udp.check_checksum:TRUE", "-Y", "etherip and (tcp or udp) and not icmp",
                  "-T", "fields", "-E", "separator=|", "-e", "tcp.checksum.status", "-e", "tcp.len",
                  "-e", "udp.checksum.status", "-e", "udp.length", "-e", "tcp.checksum",
                  "-e", "tcp.checksum_calculated").stdout
        rows = [l.split("|") for l in out.strip().splitlines()]
        status = {}
        for row in rows:
            if row[0] == "0" and row[4:6] == ["0xffff", "0x0000"]:
                row[0] = "1"  # a zero sum, written as 0xffff by the kernel (CSUM_MANGLED_0)
            key = ("tcp", row[0]) if row[0] else ("udp", row[2])
            status[key] = status.get(key, 0) + 1
        # status 1: good (0 bad, 2 unverified)
        self.assertEqual({s for _, s in status}, {"1"}, f"inner checksums: {status}")
        self.assertGreater(status.get(("tcp", "1"), 0), 1000, status)
        udp_sizes = {int(r[3]) - 8 for r in rows if r[2]}
        self.assertEqual(udp_sizes, {100, 1000, 1400, 1472}, status)
        print(f"  inner TCP/UDP checksums all good: {status}", flush=True)

    # --- idempotence and removal ------------------------------------------------------------

    def test_second_apply_changes_nothing(self):
        for dc in ("dc1", "dc2"):
            self.assertTrue(self.apply_reports[dc]["changed"])
            report = self.apply(dc)
            self.assertFalse(report["changed"], report)
            self.assertEqual(report["changes"], [], report)
        self.ping("vm1", VM_IP["vm2"])

    def test_destroy_removes_the_tunnel_and_its_datapath(self):
        self.ping("vm1", VM_IP["vm2"])
        pin_dirs = {}
        for dc in ("dc1", "dc2"):
            pin_dirs[dc] = self.pin_dir(dc)
            self.assertTrue(self.tc_filters(dc), "the decap program is attached after apply")
            self.assertTrue(os.path.isdir(pin_dirs[dc]),
                            f"the datapath's maps are pinned in {pin_dirs[dc]} after apply")
        for dc in ("dc1", "dc2"):
            self.lab.etherctl(dc, "destroy")
            links = self.lab.links(f"{dc}-edge")
            self.assertNotIn("dcx", links)
            self.assertNotIn("eip-dcx", links)
            self.assertNotIn("vmotion", links)
            self.assertEqual(self.tc_filters(dc), "", "no BPF program left on the underlay")
            pins = os.listdir(pin_dirs[dc]) if os.path.isdir(pin_dirs[dc]) else []
            self.assertEqual(pins, [], f"pins left in {pin_dirs[dc]}")
        self.assertNotEqual(self.lab.exec("vm1", "ping", "-c", "1", "-W", "1", VM_IP["vm2"],
                                          check=False).returncode, 0)

    def pin_dir(self, dc):
        """The datapath's pins: <bpffs>/etherctl/cookie-<netns cookie> (inode-<inode> before 5.14)."""
        cookie = self.lab.exec(f"{dc}-edge", PY, "-c",
                               "import socket; s = socket.socket(); print(int.from_bytes("
                               "s.getsockopt(socket.SOL_SOCKET, 71, 8), 'little'))",
                               check=False)  # 71: SO_NETNS_COOKIE
        if cookie.returncode == 0:
            return f"/sys/fs/bpf/etherctl/cookie-{cookie.stdout.strip()}"
        inode = os.stat(f"/run/netns/{self.lab.ns(dc + '-edge')}").st_ino
        return f"/sys/fs/bpf/etherctl/inode-{inode}"

    def tc_filters(self, dc):
        # the "wan" VLAN is untagged on eth0: the underlay interface is eth0
        out = run("tc", "-n", self.lab.ns(f"{dc}-edge"), "filter", "show", "dev", "eth0",
                  "ingress", check=False)
        return out.stdout.strip()


if __name__ == "__main__":
    unittest.main()
