"""IPsec for the EtherIP tunnel (issue 12), end to end, in the stock-kernel VM.

The two-data-center lab (examples/two-dc) with "ipsec" on the tunnel, each edge with its own
charon (tests/e2e/charon.py), plus a third site "bsd": a strongSwan peer configured by hand in
transport mode for protocol 97, as an OpenBSD etherip(4) or NEC IX box would be, speaking
EtherIP through a raw socket. One lab serves every case (charon start-up and Python under TCG
are slow); the cases run in the order of their names and leave the lab as they found it
(but the last, which leaves it on certificates).

This machine's kernel has no ESP: on the host the whole class skips and says why.
"""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import charon as charon_mod  # noqa: E402
import test_two_dc as two_dc
from test_two_dc import EDGE_SELF, PY, TSHARK, VM_IP, VM_MAC, Lab, run

HERE = os.path.dirname(os.path.abspath(__file__))
PEER_TOOL = os.path.join(HERE, "ipsec_peer.py")
CHILD_REKEY_S = 12  # short: the stream tests see several rekeys
BSD = {"address": "192.0.2.1", "router": "192.0.2.254", "mac": "02:ec:00:00:00:99",
       "ip": "10.1.0.99"}
ADDRESS = {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}  # the edge hosts' WAN addresses


def xfrm_available():
    """'' when this kernel can hold an ESP state, else why not (probed in a throwaway netns)."""
    name = f"ecxfrm{os.getpid()}"
    run("ip", "netns", "add", name)
    try:
        r = run("ip", "-n", name, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.2",
                "proto", "esp", "spi", "0x100", "reqid", "1", "mode", "transport", "aead",
                "rfc4106(gcm(aes))", "0x" + "11" * 36, "128", check=False)
        return "" if r.returncode == 0 else "no ESP in this kernel (" + r.stderr.strip() + ")"
    finally:
        run("ip", "netns", "del", name, check=False)


def site(psk_file, ipsec=True, mode="transport"):
    with open(two_dc.SITE) as f:
        s = json.load(f)
    dc2 = s["devices"]["dc2-edge"]
    # The hand-configured peer: an endpoint etherctl does not manage.
    dc2["routes"]["to-bsd"] = {"destination": "192.0.2.0/24", "gateway": "203.0.113.254"}
    dc2["vlan_groups"]["vmotion"]["members"].append("bsdx")
    s["tunnels"]["bsdx"] = {"profile": "etherip",
                            "endpoints": {"dc2-edge": "203.0.113.1",
                                          "bsd": {"address": BSD["address"], "managed": False}},
                            "ipsec": {"psk_file": psk_file, "mode": "transport"}}
    if ipsec:
        s["tunnels"]["dcx"]["ipsec"] = {"psk_file": psk_file, "mode": mode,
                                        "lifetimes": {"child_rekey": CHILD_REKEY_S},
                                        "dpd_delay": 2}
    return s


class IpsecTest(unittest.TestCase):
    lab = None

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root (network namespaces, BPF, xfrm)")
        why = charon_mod.available() or xfrm_available()
        if why:
            if os.environ.get("ETHERCTL_REQUIRE_ALL_FEATURES") == "1":
                raise AssertionError(why + " (required here)")
            raise unittest.SkipTest(why + "; this test runs in the stock-kernel VM")
        cls.lab = lab = Lab()
        try:
            lab.up()
            cls.psk = os.path.join(lab.tmp, "dcx.psk")
            with open(os.open(cls.psk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(os.urandom(36).hex() + "\n")
            cls.write_site(site(cls.psk))
            cls.add_bsd_peer()
            cls.charons = {}
            for dc in ("dc1", "dc2"):
                c = charon_mod.Charon(lab.ns(f"{dc}-edge"), os.path.join(lab.tmp, f"{dc}-ipsec"))
                c.start()
                cls.charons[dc] = c
                lab.dc_env[dc] = c.env()
            cls.apply_both()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        lab = cls.lab
        if not lab:
            return
        for c in getattr(cls, "charons", {}).values():
            c.stop()
        if getattr(cls, "bsd_charon", None):
            cls.bsd_charon.stop()
        if getattr(cls, "bsd_sink", None):
            cls.bsd_sink.kill()
            cls.bsd_sink.wait()
        lab.down()

    # --- helpers ------------------------------------------------------------------------------

    @classmethod
    def write_site(cls, s):
        path = os.path.join(cls.lab.tmp, "site.json")
        with open(path, "w") as f:
            json.dump(s, f, indent=1)
        cls.lab.site = path

    @classmethod
    def apply_both(cls):
        """dc1 first, without waiting: its peer is not configured yet, so apply reports the
        tunnel as not established (exit 4); then dc2, which waits for the SAs."""
        report = cls.apply_ok("dc1", "--ipsec-wait", "0", exit_codes=(0, 4))
        for w in report.get("warnings", []):
            assert "IPsec not established" in w["message"], report["warnings"]
        cls.apply_ok("dc2", "--ipsec-wait", "60s")

    @classmethod
    def apply_ok(cls, dc, *extra, exit_codes=(0,)):
        r = cls.lab.etherctl(dc, "--json", *extra, "apply", check=False, timeout=180)
        if r.returncode not in exit_codes:
            raise AssertionError(f"apply on {dc}-edge exited {r.returncode}:\n{r.stdout}\n"
                                 f"{r.stderr}\n--- charon log\n"
                                 f"{cls.charons[dc].log_text()[-3000:]}")
        return json.loads(r.stdout)

    @classmethod
    def add_bsd_peer(cls):
        """Namespace "bsd" on a third leg of the WAN router, with charon configured by hand."""
        lab = cls.lab
        ns = lab.ns("bsd")
        run("ip", "netns", "add", ns)
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", "bsd",
            "netns", lab.ns("wan"))
        run("ip", "-n", lab.ns("wan"), "addr", "add", BSD["router"] + "/24", "dev", "bsd")
        run("ip", "-n", lab.ns("wan"), "link", "set", "bsd", "up")
        run("ip", "-n", ns, "addr", "add", BSD["address"] + "/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", BSD["router"])
        c = charon_mod.Charon(ns, os.path.join(lab.tmp, "bsd-ipsec"))
        c._write_config()
        with open(cls.psk) as f:
            key = f.read().strip()
        # What an administrator writes for a BSD/NEC box: transport mode for protocol 97,
        # charon installs its own policies, keys by IKEv2 with the pre-shared key.
        with open(os.path.join(c.dir, "conf.d", "bsd.conf"), "w") as f:
            f.write(f"""connections {{
  to-dc2 {{
    version = 2
    local_addrs = {BSD["address"]}
    remote_addrs = 203.0.113.1
    proposals = aes256gcm16-prfsha384-ecp384
    local {{ auth = psk
             id = {BSD["address"]} }}
    remote {{ auth = psk
              id = 203.0.113.1 }}
    children {{
      etherip {{
        mode = transport
        local_ts = {BSD["address"]}/32[97]
        remote_ts = 203.0.113.1/32[97]
        esp_proposals = aes256gcm16-ecp384
        start_action = trap
      }}
    }}
  }}
}}
secrets {{ ike-bsd {{ id = 203.0.113.1
                     secret = "{key}" }} }}
""")
        c.start()
        c.load_all()
        cls.bsd_charon = c
        # A BSD or NEC box always has its EtherIP endpoint: without one, this kernel would
        # answer what the tunnel floods to it (broadcasts) with ICMP protocol unreachable, in
        # clear, quoting the decrypted EtherIP header (its charon's policies cover protocol 97
        # only). A raw protocol-97 socket that reads and discards stands for it between the
        # cases that speak EtherIP themselves.
        cls.bsd_sink = lab.popen("bsd", PY, "-c",
                                 "import socket\n"
                                 "s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 97)\n"
                                 "while True: s.recv(65535)",
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def status(self, dc):
        return self.lab.etherctl_json(dc, "status")["status"]

    def tunnel_status(self, dc, name="dcx"):
        objects = self.status(dc)["objects"]
        found = [o for o in objects if o["kind"] == "tunnel" and o["name"] == name]
        self.assertEqual(len(found), 1, objects)
        return found[0]

    def ping(self, node, target, *extra, count=3):
        return two_dc.TwoDcTest.ping(self, node, target, *extra, count=count)

    def diagnostics(self):
        """The IPsec facts first (a CI log keeps only the start of a long failure message):
        each end's SAs as charon, the kernel and etherctl see them, the tunnel's counters and
        charon's recent log lines; then what every edge knows (test_two_dc)."""
        out = []
        for dc, c in self.charons.items():
            ns = self.lab.ns(f"{dc}-edge")
            out.append(f"=== {dc}-edge: swanctl --list-sas\n{c.swanctl('--list-sas', check=False)}")
            states = run("ip", "-n", ns, "-s", "xfrm", "state", check=False).stdout
            out.append(f"--- ip -s xfrm state ({dc})\n{states}")
            stats = run("ip", "netns", "exec", ns, "cat", "/proc/net/xfrm_stat", check=False).stdout
            out.append(f"--- xfrm_stat ({dc}), non-zero: "
                       f"{[line for line in stats.splitlines() if not line.endswith(' 0')]}")
            try:
                t = self.tunnel_status(dc)
                out.append(f"--- etherctl status, tunnel dcx ({dc})\n"
                           f"{json.dumps({k: t.get(k) for k in ('state', 'ipsec', 'counters')})}")
            except Exception as e:  # noqa: BLE001 - a diagnostic must not hide the failure
                out.append(f"--- etherctl status ({dc}): {e}")
            out.append(f"--- charon log ({dc}), tail\n{c.log_text()[-8000:]}")
        out.append(two_dc.TwoDcTest.diagnostics(self))
        return "\n".join(out)

    def stream(self, *args, **kwargs):
        return two_dc.TwoDcTest.stream(self, *args, **kwargs)

    def assert_stream_crosses_tunnel(self, *args, **kwargs):
        return two_dc.TwoDcTest.assert_stream_crosses_tunnel(self, *args, **kwargs)

    def tunnel_counters(self, dc):
        return self.tunnel_status(dc)["counters"]

    def check_tunnel_counters(self, reassembled):
        """test_two_dc's check for this lab (dc2-edge has a second tunnel, bsdx): traffic
        crossed both ways, nothing was dropped; full-size frames crossed as ESP fragments,
        reassembled by the datapath (reassembled=True)."""
        for dc in ("dc1", "dc2"):
            c = self.tunnel_counters(dc)
            self.assertGreater(c["tx_packets"], 0, c)
            self.assertGreater(c["rx_packets"], 0, c)
            if reassembled:
                self.assertGreater(c["reassembled"], 0, c)
            self.assertEqual({k: v for k, v in c["drops"].items() if v}, {}, c)

    def capture(self, node, iface):
        """tshark on a WAN leg; returns a function that stops it and gives the packets as
        (ip.proto, udp.dstport, ip.src) tuples; a field that occurs more than once (an ICMP
        error quotes the IP header of the packet it is about) holds every value, joined by
        ";"."""
        pcap = os.path.join(self.lab.tmp, f"{node}-{iface}-{time.monotonic_ns()}.pcap")
        # Headers are all it reads (200 bytes hold an ICMP error's quoted header too): a
        # smaller file, read faster in the TCG VM.
        proc = self.lab.popen(node, TSHARK, "-n", "-i", iface, "-s", "200", "-w", pcap,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        deadline = time.time() + 60
        while "Capturing on" not in (line := proc.stderr.readline()):
            self.assertTrue(line or proc.poll() is None, "tshark did not start")
            self.assertLess(time.time(), deadline, "tshark did not start")

        def stop():
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            proc.wait(60)
            proc.stderr.close()
            out = run(TSHARK, "-n", "-r", pcap, "-T", "fields", "-e", "ip.proto", "-e",
                      "udp.dstport", "-e", "ip.src", "-E", "separator=|", "-E",
                      "aggregator=;", timeout=600).stdout
            return [tuple(line.split("|")) for line in out.splitlines() if line]
        return stop

    def assert_only_ike_and_esp(self, packets, what):
        kinds = {}
        for protos, udp_port, src in packets:
            proto, quoted = protos.split(";")[0], protos.split(";")[1:]
            key = ("esp" if proto == "50" else f"udp/{udp_port}" if proto == "17"
                   else f"protocol {proto}")
            if quoted:  # an ICMP error: what it quotes must not be clear EtherIP either
                key += f" quoting {';'.join(quoted)} from {src}"
            if "97" in quoted:
                key = "protocol 97 " + key
            kinds[key] = kinds.get(key, 0) + 1
        self.assertGreater(kinds.get("esp", 0), 0, f"{what}: no ESP at all: {kinds}")
        self.assertEqual(set(kinds) - {"esp", "udp/500", "protocol "}, set(),
                         f"{what}: the WAN carried more than IKE and ESP: {kinds}")
        self.assertNotIn("protocol 97", kinds)

    def carrying_within(self, timeout):
        """Whether a ping from vm1 crosses within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.lab.exec("vm1", "ping", "-n", "-c", "1", "-W", "1", VM_IP["vm2"],
                             check=False).returncode == 0:
                return True
            time.sleep(0.5)
        return False

    def wait_until_carrying(self, what, timeout=90):
        """After both ends changed their authentication or mode: both ends re-initiate at once
        (the changed connection is terminated and started again on each), and charon may need
        a collision or a dead-peer round to settle. Waits until a ping crosses, and says how
        long it took; fails after `timeout` seconds with the diagnostics."""
        start = time.monotonic()
        while True:
            r = self.lab.exec("vm1", "ping", "-n", "-c", "1", "-W", "1", VM_IP["vm2"],
                              check=False)
            if r.returncode == 0:
                break
            if time.monotonic() - start > timeout:
                self.fail(f"{what}: the tunnel carried nothing for {timeout} s\n"
                          f"{self.diagnostics()}")
            time.sleep(0.5)
        print(f"\n  {what}: carrying {time.monotonic() - start:.1f} s after the second apply",
              flush=True)

    def sa_of(self, dc):
        t = self.tunnel_status(dc)
        return t.get("ipsec", {})

    # --- the cases ----------------------------------------------------------------------------

    def test_01_established_with_status_and_oracles(self):
        for dc in ("dc1", "dc2"):
            sa = self.sa_of(dc)
            self.assertTrue(sa.get("established"), sa)
            child = sa["child"]
            self.assertEqual(child["mode"], "TRANSPORT", sa)
            self.assertGreaterEqual(child["rekey_seconds"], 0, sa)
            self.assertLessEqual(child["rekey_seconds"], CHILD_REKEY_S, sa)
            self.assertIn("AES_GCM_16", child["encryption"], sa)
            # The oracles: charon's own view, and the kernel's states and policies.
            self.assertTrue(self.charons[dc].sas().get("etherctl-dcx"), self.charons[dc].sas())
            # (`ip xfrm` has no JSON output)
            states = run("ip", "-n", self.lab.ns(f"{dc}-edge"), "xfrm", "state").stdout
            self.assertIn(f"reqid {child['reqid']} mode transport", states)
            policies = run("ip", "-n", self.lab.ns(f"{dc}-edge"), "xfrm", "policy").stdout
            self.assertIn(f"reqid {child['reqid']} mode transport", policies)
            # The key is nowhere in what etherctl prints.
            with open(self.psk) as f:
                key = f.read().strip()
            for args in (["status"], ["--json", "status"], ["plan"], ["--json", "plan"]):
                r = self.lab.etherctl(dc, *args, check=False)
                self.assertNotIn(key, r.stdout + r.stderr)
                self.assertNotIn(key[:16], r.stdout + r.stderr)

    def test_02_ping_and_tcp_cross_and_the_wan_carries_only_ike_and_esp(self):
        stop = self.capture("wan", "dc1")
        for vm, other in (("vm1", "vm2"), ("vm2", "vm1")):
            self.ping(vm, VM_IP[other])
            # full-size frames: the ESP packets are fragmented on the 1500-byte WAN
            self.ping(vm, VM_IP[other], "-s", "1472", "-M", "do")
        result, server = self.stream("vm2", "vm1", bytes_=3_000_000)
        self.assertTrue(result["ok"], result)
        self.assertIsNone(result["first_bad_byte"], result)
        self.assertEqual(server["received"], result["sent"])
        self.assert_only_ike_and_esp(stop(), "ping and TCP")
        for dc in ("dc1", "dc2"):
            c = self.tunnel_status(dc)["counters"]
            self.assertEqual({k: v for k, v in c["drops"].items() if v}, {}, c)

    def test_03_live_migration_keeps_every_byte(self):
        stop = self.capture("wan", "dc2")
        try:
            two_dc.TwoDcTest.live_migration(self, "--garp")
        finally:
            self.lab.migrate("vm1", "--to", "dc1")
        self.assert_only_ike_and_esp(stop(), "live migration")

    def test_04_plaintext_etherip_from_the_peer_address_is_dropped_and_counted(self):
        before = self.tunnel_status("dc2")["counters"]["drops"].get("plaintext", 0)
        # tcpdump on vm2's side: the forged frames must not reach the VLAN.
        seen = self.lab.popen("dc2-hv", "tcpdump", "-n", "-l", "-i", "uplink", "ether", "src",
                              BSD["mac"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: seen.poll() is None and seen.kill())
        time.sleep(1)
        # The WAN router forges EtherIP with dc1-edge's address, in clear, towards dc2-edge.
        r = self.lab.exec("wan", PY, PEER_TOOL, "forge", "--source", "198.51.100.1",
                          "--destination", "203.0.113.1", "--src-mac", BSD["mac"],
                          "--dst-mac", VM_MAC["vm2"], "--src-ip", BSD["ip"],
                          "--dst-ip", VM_IP["vm2"], "--count", "20", timeout=120)
        self.assertIn("sent 20", r.stdout)
        time.sleep(1)
        seen.send_signal(signal.SIGINT)
        out, _ = seen.communicate(timeout=20)
        self.assertEqual(out.strip(), "", "forged frames reached the server VLAN")
        after = self.tunnel_status("dc2")["counters"]["drops"].get("plaintext", 0)
        self.assertEqual(after - before, 20)

    def test_05_rekeys_during_a_stream_lose_nothing(self):
        spis = set()
        stop_file = os.path.join(self.lab.tmp, "stop-rekey-stream")

        def watch_rekeys():
            deadline = time.monotonic() + 4 * CHILD_REKEY_S
            while time.monotonic() < deadline and len(spis) < 4:
                sa = self.sa_of("dc1")
                if sa.get("established"):
                    spis.add(sa["child"]["spi_out"])
                time.sleep(1)
            open(stop_file, "w").close()
            return 0.0, time.monotonic()

        result, server = self.stream("vm2", "vm1", duration=120, rate=1_000_000,
                                     stop_file=stop_file, during=watch_rekeys)
        print(f"\n  {len(spis)} outbound SAs during the stream; longest stall "
              f"{result['longest_stall_ms']} ms", flush=True)
        self.assertGreaterEqual(len(spis), 3, "fewer than two rekeys happened")
        self.assertIsNone(result["error"], result)
        self.assertIsNone(result["first_bad_byte"], result)
        self.assertEqual(server["received"], result["sent"])

    def test_06_charon_restart_does_not_break_the_tunnel(self):
        stop_file = os.path.join(self.lab.tmp, "stop-restart-stream")

        def restart():
            # Not before the stream's connection is up: a client that starts slowly (a loaded
            # TCG guest) would otherwise try to connect while charon is away, and give up
            # after its 5 s connect timeout instead of testing the restart.
            deadline = time.monotonic() + 60
            while not self.lab.exec("vm2", "ss", "-Htn", "state", "established", "dst",
                                    VM_IP["vm1"], check=False).stdout.strip():
                self.assertLess(time.monotonic(), deadline, "the stream did not connect")
                time.sleep(0.2)
            time.sleep(2)
            c = self.charons["dc2"]
            c.stop()
            c.start()
            c.load_all()  # what the system's service runs at start (swanctl --load-all)
            deadline = time.monotonic() + 60
            while not self.sa_of("dc2").get("established"):
                self.assertLess(time.monotonic(), deadline, self.diagnostics())
                time.sleep(0.5)
            time.sleep(3)
            open(stop_file, "w").close()
            return 0.0, time.monotonic()

        result, server = self.stream("vm2", "vm1", duration=120, rate=1_000_000,
                                     stop_file=stop_file, during=restart)
        print(f"\n  charon restart: longest stall {result['longest_stall_ms']} ms", flush=True)
        self.assertIsNone(result["error"], result)
        self.assertIsNone(result["first_bad_byte"], result)
        self.assertEqual(server["received"], result["sent"])

    def test_07_wrong_key_is_reported_and_nothing_goes_in_clear(self):
        good = os.path.join(self.lab.tmp, "good.psk")
        os.rename(self.psk, good)
        self.addCleanup(lambda: os.path.exists(good) and os.replace(good, self.psk))
        with open(os.open(self.psk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(36).hex() + "\n")
        stop = self.capture("wan", "dc2")
        r = self.lab.etherctl("dc2", "--ipsec-wait", "40s", "apply", check=False, timeout=180)
        pinger = self.lab.exec("vm2", "ping", "-c", "3", "-W", "1", VM_IP["vm1"], check=False)
        packets = stop()
        self.assertEqual(r.returncode, 4, r.stdout + r.stderr)
        self.assertRegex(r.stderr, r"tunnel dcx: IPsec not established")
        self.assertRegex(r.stderr, r"AUTH|MAC mismatch|authentication", r.stderr)
        self.assertIn("charon does not retry a refused negotiation by itself", r.stderr)
        self.assertNotEqual(pinger.returncode, 0)
        self.assertNotIn("97", [p[0] for p in packets], packets)
        with open(self.psk) as f:
            self.assertNotIn(f.read().strip()[:16], r.stdout + r.stderr)
        os.replace(good, self.psk)
        self.apply_ok("dc2", "--ipsec-wait", "60s")
        self.ping("vm2", VM_IP["vm1"])

    def test_08_interop_with_a_peer_configured_by_hand(self):
        stop = self.capture("wan", "bsd")
        r = self.lab.exec("bsd", PY, PEER_TOOL, "ping", "--source", BSD["address"],
                          "--destination", "203.0.113.1", "--src-mac", BSD["mac"],
                          "--dst-mac", VM_MAC["vm2"], "--src-ip", BSD["ip"],
                          "--dst-ip", VM_IP["vm2"], "--count", "5", "--timeout", "60",
                          check=False, timeout=120)
        if r.returncode != 0:
            bsd = self.lab.ns("bsd")
            self.fail(r.stdout + r.stderr + self.diagnostics() + "\n--- bsd: ip -s xfrm state\n" +
                      run("ip", "-n", bsd, "-s", "xfrm", "state", check=False).stdout +
                      "\n--- bsd: ip xfrm policy\n" +
                      run("ip", "-n", bsd, "xfrm", "policy", check=False).stdout +
                      "\n--- bsd: xfrm_stat\n" +
                      self.lab.exec("bsd", "cat", "/proc/net/xfrm_stat", check=False).stdout +
                      "\n--- bsd: nstat\n" +
                      self.lab.exec("bsd", "nstat", "-az", check=False).stdout +
                      "\n--- bsd charon\n" + self.bsd_charon.log_text()[-2000:])
        self.assertIn("5 replies", r.stdout)
        self.assert_only_ike_and_esp(stop(), "interop")
        self.assertTrue(self.bsd_charon.sas().get("to-dc2"), self.bsd_charon.sas())

    def test_09_removing_ipsec_and_the_tunnel_leaves_nothing(self):
        try:
            self.write_site(site(self.psk, ipsec=False))
            for dc in ("dc1", "dc2"):
                self.apply_ok(dc)
            self.ping("vm1", VM_IP["vm2"])  # the tunnel carries on, in clear now
            for dc in ("dc1", "dc2"):
                self.assert_no_ipsec_left(dc, tunnels=("dcx",))
            for dc in ("dc1", "dc2"):
                self.lab.etherctl(dc, "destroy")
                self.assert_no_ipsec_left(dc, tunnels=("dcx", "bsdx"))
        finally:
            self.write_site(site(self.psk))
            self.apply_both()

    def test_10_esp_decrypted_by_the_underlays_own_gro_is_taken_there(self):
        """Where the underlay's own GRO decrypts ESP (a NIC with GRO on and esp4_offload; here
        dc2-edge's veth with GRO on, fed by a router leg without segmentation offload, so that
        the veth hands its packets to the edge's NAPI), the decap program on the underlay sees
        the clear packet with its security path and takes it there: the esp-dcx pair carries
        nothing. Fragmented ESP, which GRO passes by, still goes through the pair."""
        edge = self.lab.ns("dc2-edge")

        def esp_pair_packets():
            link = json.loads(run("ip", "-n", edge, "-s", "-j", "link", "show", "esp-dcx").stdout)
            return link[0]["stats64"]["tx"]["packets"]

        self.lab.exec("wan", "ethtool", "-K", "dc2", "tso", "off", "gso", "off")
        run("ip", "netns", "exec", edge, "ethtool", "-K", "eth0", "gro", "on")
        self.addCleanup(lambda: self.lab.exec("wan", "ethtool", "-K", "dc2", "tso", "on", "gso",
                                              "on", check=False))
        self.addCleanup(lambda: run("ip", "netns", "exec", edge, "ethtool", "-K", "eth0", "gro",
                                    "off", check=False))
        before = self.tunnel_status("dc2")["counters"]
        through_pair = esp_pair_packets()
        self.ping("vm1", VM_IP["vm2"], count=5)
        self.assertEqual(esp_pair_packets(), through_pair,
                         "whole ESP packets took the pair although the underlay's GRO decrypts")
        self.ping("vm1", VM_IP["vm2"], "-s", "1472", "-M", "do", count=3)
        self.assertGreaterEqual(esp_pair_packets() - through_pair, 3,
                                "fragmented ESP did not take the pair")
        after = self.tunnel_status("dc2")["counters"]
        self.assertGreaterEqual(after["rx_packets"] - before["rx_packets"], 8)
        self.assertEqual({k: v - before["drops"].get(k, 0) for k, v in after["drops"].items()
                          if v != before["drops"].get(k, 0)}, {}, after)

    def test_11_tunnel_mode_carries_the_tunnel_and_switches_back(self):
        """mode "tunnel" (a changed mode renegotiates the SAs and rewrites the policies in
        place), then back to the default transport mode."""
        try:
            self.write_site(site(self.psk, mode="tunnel"))
            self.apply_both()
            stop = self.capture("wan", "dc1")
            for dc in ("dc1", "dc2"):
                sa = self.sa_of(dc)
                self.assertTrue(sa.get("established"), sa)
                self.assertEqual(sa["child"]["mode"], "TUNNEL", sa)
                policies = run("ip", "-n", self.lab.ns(f"{dc}-edge"), "xfrm", "policy").stdout
                self.assertIn(f"reqid {sa['child']['reqid']} mode tunnel", policies)
            self.ping("vm1", VM_IP["vm2"])
            self.ping("vm2", VM_IP["vm1"], "-s", "1472", "-M", "do")
            result, server = self.stream("vm2", "vm1", bytes_=2_000_000)
            self.assertTrue(result["ok"], result)
            self.assertIsNone(result["first_bad_byte"], result)
            self.assertEqual(server["received"], result["sent"])
            self.assert_only_ike_and_esp(stop(), "tunnel mode")
        finally:
            self.write_site(site(self.psk))
            self.apply_both()
        self.wait_until_carrying("tunnel mode back to transport")
        for dc in ("dc1", "dc2"):
            self.assertEqual(self.sa_of(dc)["child"]["mode"], "TRANSPORT")
        self.ping("vm1", VM_IP["vm2"])

    def test_12_certificates_and_identities(self):
        """X.509 instead of the pre-shared key: a test CA, one certificate per edge (subject
        CN=<edge>, the edge's address as subjectAltName), the identities set to the subjects.
        Each edge is a host of its own, so each reads its own files at the same paths; here
        both share a filesystem, so each edge gets its own copy of the site file."""
        pki = os.path.join(self.lab.tmp, "pki")
        os.makedirs(pki, exist_ok=True)

        def openssl(*args):
            run("openssl", *args)

        ca_key, ca = os.path.join(pki, "ca.key"), os.path.join(pki, "ca.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", ca_key, "-out", ca, "-subj", "/CN=etherctl test CA", "-days", "2")
        shared, sites = self.lab.site, {}
        for dc, address in ADDRESS.items():
            d = os.path.join(pki, dc)
            os.makedirs(d, exist_ok=True)
            key, csr, cert = (os.path.join(d, n) for n in ("edge.key", "edge.csr", "edge.pem"))
            ext = os.path.join(d, "ext.cnf")
            with open(ext, "w") as f:
                f.write(f"subjectAltName=IP:{address}\n")
            openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", csr, "-subj", f"/CN={dc}-edge")
            openssl("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-out", cert, "-days", "2", "-extfile", ext)
            os.chmod(key, 0o600)
            s = site(self.psk)
            s["tunnels"]["dcx"]["ipsec"] = {
                "certificate": cert, "key": key, "ca": ca, "mode": "transport",
                "identities": {"dc1-edge": "CN=dc1-edge", "dc2-edge": "CN=dc2-edge"}}
            sites[dc] = os.path.join(self.lab.tmp, f"site-{dc}.json")
            with open(sites[dc], "w") as f:
                json.dump(s, f, indent=1)
        for dc, waits in (("dc1", "0"), ("dc2", "60s")):
            self.lab.site = sites[dc]
            self.apply_ok(dc, "--ipsec-wait", waits, exit_codes=(0, 4))
        self.wait_until_carrying("pre-shared key to certificates")
        stop = self.capture("wan", "dc1")
        for dc in ("dc1", "dc2"):
            self.lab.site = sites[dc]
            sa = self.sa_of(dc)
            self.assertTrue(sa.get("established"), f"{sa}\n{self.diagnostics()}")
            # The oracle: charon authenticated both ends by their certificates' subjects.
            listed = self.charons[dc].swanctl("--list-sas", check=False)
            other = "dc2" if dc == "dc1" else "dc1"
            self.assertRegex(listed, rf"local\s+'CN={dc}-edge'", listed)
            self.assertRegex(listed, rf"remote\s+'CN={other}-edge'", listed)
        self.ping("vm1", VM_IP["vm2"])
        self.ping("vm2", VM_IP["vm1"])
        self.assert_only_ike_and_esp(stop(), "certificates")
        # And back to the pre-shared key (the lab's own file), each end in turn as before.
        # In three CI runs on 6.1 (never in 74 switches back here, in order or with both ends
        # applying at once, loaded or not) the tunnel did not carry after this switch although
        # dc2's apply saw the SAs up; the cause is not known yet. When it happens the test
        # prints what both ends hold and then requires what the periodic reconcile promises:
        # one more apply on each end brings the tunnel back.
        self.lab.site = shared
        self.apply_both()
        if not self.carrying_within(30):
            print(f"\n  certificates back to the pre-shared key: nothing carried 30 s after the "
                  f"second apply; the state, before a reconciling apply on each end:\n"
                  f"{self.diagnostics()}", file=sys.stderr, flush=True)
            for dc in ("dc1", "dc2"):
                self.apply_ok(dc, "--ipsec-wait", "30s", exit_codes=(0, 4))
        self.wait_until_carrying("certificates back to the pre-shared key", timeout=60)
        for dc in ("dc1", "dc2"):
            listed = self.charons[dc].swanctl("--list-sas", check=False)
            self.assertRegex(listed, rf"local\s+'{ADDRESS[dc]}'", listed)
        self.ping("vm2", VM_IP["vm1"])

    def test_13_apply_restarts_a_negotiation_charon_gave_up(self):
        """Both ends lose their SAs while the WAN drops everything (the DELETEs are lost), so
        neither charon holds an SA or tries to make one: nothing would bring the tunnel back
        before a charon restart. A reconciling apply on one end, with nothing to change,
        starts the negotiation again."""
        wan = self.lab.ns("wan")
        blackholes = [f"{ADDRESS[dc]}/32" for dc in ("dc1", "dc2")]
        for prefix in blackholes:
            run("ip", "-n", wan, "route", "add", "blackhole", prefix)
        try:
            for dc in ("dc1", "dc2"):
                # --force: deleted at once, without waiting for the peer's answer
                self.charons[dc].swanctl("--terminate", "--ike", "etherctl-dcx", "--force")
        finally:
            for prefix in blackholes:
                run("ip", "-n", wan, "route", "del", "blackhole", prefix)
        time.sleep(5)
        for dc in ("dc1", "dc2"):
            self.assertNotIn("etherctl-dcx", self.charons[dc].sas(), "charon tries by itself")
        report = self.apply_ok("dc1", "--ipsec-wait", "60s")
        self.assertEqual(report["changes"], [], report)
        self.wait_until_carrying("a negotiation restarted by apply")
        self.ping("vm2", VM_IP["vm1"])

    def assert_no_ipsec_left(self, dc, tunnels):
        ns = self.lab.ns(f"{dc}-edge")
        states = run("ip", "-n", ns, "xfrm", "state").stdout
        policies = run("ip", "-n", ns, "xfrm", "policy").stdout
        links = run("ip", "-n", ns, "-o", "link", "show").stdout
        conf = os.listdir(os.path.join(self.charons[dc].dir, "conf.d"))
        for t in tunnels:
            self.assertNotIn(f"esp-{t}", links)
            self.assertNotIn(f"dec-{t}", links)
            self.assertNotIn(f"etherctl-{t}.conf", conf)
            self.assertNotIn(f"etherctl-{t}", self.charons[dc].conns())
            self.assertNotIn(f"etherctl-{t}", self.charons[dc].sas())
        if set(tunnels) >= {"dcx", "bsdx"}:
            self.assertNotIn("proto esp", states, states)
            self.assertNotIn("etherip", policies, policies)
        else:
            self.assertNotRegex(policies, r"198\.51\.100\.1/32 dst 203\.0\.113\.1/32|"
                                          r"203\.0\.113\.1/32 dst 198\.51\.100\.1/32")


if __name__ == "__main__":
    unittest.main()
