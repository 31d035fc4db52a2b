#!/usr/bin/python3
"""End-to-end test of the EtherIP datapath on the host kernel, in throwaway namespaces.

Lab (all namespaces named ectest-<pid>-*, removed at exit even on failure):

  v1 ─ br0[vm1, dcx] e1 wan1 ══ 1500-byte WAN ══ wan2 e2 br0[dcx, vm2] ─ v2
  v1 ─ br6[vm1b, dcx6]  (IPv6 outer)                br6[dcx6, vm2b] ─ v2
  v3 ─ brs[vm3, sp0] e1 wsp ══ sp (scapy.contrib.etherip as an independent EtherIP peer)

The programs of dcx and dcx6 are attached with dp_tool (the loader library); everything else
of those is set up with ip(8). e1's side of sp0 (the bridge brs, its ports, the self IP on wsp
and the tunnel) is made by `etherctl apply` from a site file in which the scapy peer is an
endpoint etherctl does not manage ({"address": ..., "managed": false}), as an operator would
declare an OpenBSD or FreeBSD peer. Independent oracles: tshark's etherip dissector on the WAN,
and scapy as a peer.
Usage: e2e_test.py --dp-tool PATH --etherctl PATH [unittest args]
"""
import argparse
import atexit
import hashlib
import json
import os
import random
import re
import signal
import socket
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

from scapy.all import ARP, ICMP, IP, UDP, Dot1Q, Ether, Raw, defragment, fragment  # noqa: E402
from scapy.contrib.etherip import EtherIP  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = f"ectest-{os.getpid()}"
DP_TOOL = None
ETHERCTL = None
STATE = tempfile.mkdtemp(prefix="ectest-etherctl-")  # site file, lock directory
# e1 as etherctl's device; the scapy peer is not a device of the file.
SCAPY_PEER_SITE = {
    "etherctl": 1,
    "devices": {"e1": {
        "vlans": {"wsp": {"interface": "wsp"}, "vm3": {"interface": "vm3"}},
        "vlan_groups": {"brs": {"members": ["vm3", "sp0"]}},
        "self_ips": {"wsp-self": {"address": "198.51.100.1/24", "vlan": "wsp"}},
    }},
    "tunnels": {"sp0": {"profile": "etherip", "endpoints": {
        "e1": "198.51.100.1",
        "scapy-peer": {"address": "198.51.100.2", "managed": False},
    }}},
}
NAMESPACES = ["e1", "e2", "v1", "v2", "v3", "sp"]
MAC = {
    "v1": "02:00:00:00:00:01", "v2": "02:00:00:00:00:02", "v3": "02:00:00:00:09:01",
    "v1b": "02:00:00:00:06:01", "v2b": "02:00:00:00:06:02", "peer": "02:00:00:00:09:02",
}


def ns(name):
    return f"{PREFIX}-{name}"


def run(*args, check=True, capture=True, timeout=60, input=None):
    r = subprocess.run(args, check=False, capture_output=capture, text=True, timeout=timeout,
                       input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def nsrun(name, *args, **kw):
    return run("ip", "netns", "exec", ns(name), *args, **kw)


def ip(*args):
    return run("ip", *args)


def dp(name, *args):
    return nsrun(name, DP_TOOL, *args)


def counters(edge, tunnel):
    return json.loads(dp(edge, "counters", tunnel).stdout)


def cleanup():
    for n in NAMESPACES:
        subprocess.run(["ip", "netns", "del", ns(n)], capture_output=True)
    shutil.rmtree(STATE, ignore_errors=True)


def etherctl(*args):
    site = os.path.join(STATE, "site.json")
    with open(site, "w") as f:
        json.dump(SCAPY_PEER_SITE, f)
    r = subprocess.run([ETHERCTL, "--netns", ns("e1"), "--device", "e1", *args, site],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, ETHERCTL_LOCK_DIR=os.path.join(STATE, "run")))
    assert r.returncode == 0, f"etherctl {' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}"
    return r


def build_lab():
    for n in NAMESPACES:
        ip("netns", "add", ns(n))
        ip("-n", ns(n), "link", "set", "lo", "up")
    # WAN: 1500 bytes, IPv4 and IPv6.
    ip("link", "add", "wan1", "netns", ns("e1"), "type", "veth", "peer", "name", "wan2",
       "netns", ns("e2"))
    for e, dev, last in (("e1", "wan1", 1), ("e2", "wan2", 2)):
        ip("-n", ns(e), "addr", "add", f"192.0.2.{last}/24", "dev", dev)
        ip("-n", ns(e), "addr", "add", f"2001:db8::{last}/64", "dev", dev, "nodad")
        ip("-n", ns(e), "link", "set", dev, "mtu", "1500", "up")
    # Link to the scapy peer.
    ip("link", "add", "wsp", "netns", ns("e1"), "type", "veth", "peer", "name", "wan",
       "netns", ns("sp"))
    ip("-n", ns("sp"), "addr", "add", "198.51.100.2/24", "dev", "wan")
    ip("-n", ns("sp"), "link", "set", "wan", "up")

    def bridge(edge, br, tunnel, port, vm, vm_if, mac, addr):
        ip("-n", ns(edge), "link", "add", br, "type", "bridge")
        ip("-n", ns(edge), "link", "set", br, "up")
        ip("-n", ns(edge), "link", "add", tunnel, "type", "veth", "peer", "name", "eip-" + tunnel)
        ip("-n", ns(edge), "link", "set", tunnel, "master", br)
        ip("-n", ns(edge), "link", "set", tunnel, "up")
        ip("-n", ns(edge), "link", "set", "eip-" + tunnel, "up")
        ip("link", "add", port, "netns", ns(edge), "type", "veth", "peer", "name", vm_if,
           "netns", ns(vm))
        ip("-n", ns(edge), "link", "set", port, "master", br)
        ip("-n", ns(edge), "link", "set", port, "up")
        ip("-n", ns(vm), "link", "set", vm_if, "address", mac)
        ip("-n", ns(vm), "addr", "add", addr, "dev", vm_if)
        ip("-n", ns(vm), "link", "set", vm_if, "up")

    bridge("e1", "br0", "dcx", "vm1", "v1", "eth0", MAC["v1"], "10.0.0.1/24")
    bridge("e2", "br0", "dcx", "vm2", "v2", "eth0", MAC["v2"], "10.0.0.2/24")
    bridge("e1", "br6", "dcx6", "vm1b", "v1", "eth1", MAC["v1b"], "10.6.0.1/24")
    bridge("e2", "br6", "dcx6", "vm2b", "v2", "eth1", MAC["v2b"], "10.6.0.2/24")
    # e1's side of brs (the port to v3, the tunnel to the scapy peer): etherctl's, below.
    ip("link", "add", "vm3", "netns", ns("e1"), "type", "veth", "peer", "name", "eth0",
       "netns", ns("v3"))
    ip("-n", ns("v3"), "link", "set", "eth0", "address", MAC["v3"])
    ip("-n", ns("v3"), "addr", "add", "10.9.0.1/24", "dev", "eth0")
    ip("-n", ns("v3"), "link", "set", "eth0", "up")
    # The scapy peer answers no ARP: give the VM its neighbour entry.
    ip("-n", ns("v3"), "neigh", "add", "10.9.0.2", "lladdr", MAC["peer"], "dev", "eth0")

    # Hardened hosts: reverse-path filtering on for "all" (loose on e1, strict on e2). The
    # loader must keep the tunnel working without weakening any other interface.
    nsrun("e1", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2")
    nsrun("e2", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")

    dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
    dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2")
    dp("e1", "apply", "dcx6", "2001:db8::1", "2001:db8::2", "wan1")
    dp("e2", "apply", "dcx6", "2001:db8::2", "2001:db8::1", "wan2")
    applied = json.loads(etherctl("--json", "apply").stdout)
    tunnel = [c for c in applied["changes"] if c["kind"] == "tunnel"]
    assert [(c["op"], c["name"], c["after"]["remote"]) for c in tunnel] == \
        [("create", "sp0", "198.51.100.2")], applied["changes"]
    assert not json.loads(etherctl("--json", "apply").stdout)["changed"], "apply is idempotent"
    for edge, value in (("e1", "2"), ("e2", "1")):
        out = nsrun(edge, "sysctl", "-n", "net.ipv4.conf.wan1.rp_filter"
                    if edge == "e1" else "net.ipv4.conf.wan2.rp_filter").stdout.strip()
        assert out == value, f"{edge}: the underlay keeps its effective rp_filter ({out})"
    # Carrier comes up asynchronously (linkwatch), slowly on a loaded machine.
    deadline = time.time() + 20
    for vm, dev in (("v1", "eth0"), ("v1", "eth1"), ("v2", "eth0"), ("v2", "eth1"), ("v3", "eth0")):
        while "state UP" not in run("ip", "-n", ns(vm), "link", "show", dev).stdout:
            assert time.time() < deadline, f"{vm} {dev} has no carrier"
            time.sleep(0.1)


def mac_of(name, dev):
    out = json.loads(run("ip", "-n", ns(name), "-j", "link", "show", dev).stdout)
    return out[0]["address"]


def tshark_started(name, *args, stdout=subprocess.PIPE):
    """tshark capturing in a namespace, once it says so (opening the capture takes a while)."""
    cap = subprocess.Popen(["ip", "netns", "exec", ns(name), "tshark", *args], stdout=stdout,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = cap.stderr.readline()
        if not line or "Capturing on" in line:
            break
    time.sleep(0.5)
    return cap


class Sniffer:
    """scapy capture in a namespace, started before traffic is sent."""

    def __init__(self, name, iface, seconds, bpf=None):
        args = ["ip", "netns", "exec", ns(name), "/usr/bin/python3",
                os.path.join(HERE, "scapy_helper.py"), "sniff", iface, str(seconds)]
        if bpf:
            args.append(bpf)
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", f"sniffer did not start: {line!r}"

    def frames(self):
        """Stops the capture (everything was sent) and returns what it saw."""
        out, _ = self.proc.communicate(input="stop\n", timeout=60)
        return [Ether(bytes.fromhex(h)) for h in json.loads(out)]


def send_frames(name, iface, frames):
    nsrun(name, "/usr/bin/python3", os.path.join(HERE, "scapy_helper.py"), "send", iface,
          *[bytes(f).hex() for f in frames])


class TunnelTest(unittest.TestCase):
    def test_01_arp_and_ping(self):
        nsrun("v1", "ip", "neigh", "flush", "dev", "eth0")
        r = nsrun("v1", "ping", "-c", "3", "-i", "0.2", "-w", "10", "10.0.0.2")
        self.assertIn("3 received", r.stdout)
        neigh = nsrun("v1", "ip", "neigh", "show", "10.0.0.2").stdout
        self.assertIn(MAC["v2"], neigh, "ARP resolved across the tunnel")

    def test_02_full_size_frames_fragment_and_reassemble(self):
        before = counters("e2", "dcx")
        nstat_before = wan_frag_creates()
        r = nsrun("v1", "ping", "-M", "do", "-s", "1472", "-c", "3", "-i", "0.2", "-w", "10",
                  "10.0.0.2")
        self.assertIn("3 received", r.stdout)
        after = counters("e2", "dcx")
        self.assertGreaterEqual(after["reassembled"] - before["reassembled"], 3)
        self.assertGreaterEqual(after["rx_fragments"] - before["rx_fragments"], 6)
        self.assertGreaterEqual(wan_frag_creates() - nstat_before, 6, "e1 fragmented outer")
        # The echo replies went the other way, through e1's reassembly.
        self.assertEqual(sum(after["drops"].values()), sum(before["drops"].values()))

    def tcp_echo_byte_exact(self, address="10.0.0.2", mib=24):
        # An echo server in v2; the client checks every byte that comes back.
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns("v2"), "/usr/bin/python3", "-c", ECHO_SERVER, address],
            stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(server.stdout.readline().strip(), "listening")
            r = nsrun("v1", "/usr/bin/python3", "-c", ECHO_CLIENT, address, str(mib),
                      timeout=120)
            result = json.loads(r.stdout)
            self.assertEqual(result["sent"], result["received"], address)
            self.assertEqual(result["sent_sha"], result["received_sha"], address)
            self.assertEqual(result["sent"], mib << 20)
        finally:
            server.kill()
            server.wait()
            server.stdout.close()

    def udp_echo_byte_exact(self, address, sizes=()):
        server = subprocess.Popen(
            ["ip", "netns", "exec", ns("v2"), "/usr/bin/python3", "-c", UDP_ECHO_SERVER,
             address], stdout=subprocess.PIPE, text=True)
        try:
            self.assertEqual(server.stdout.readline().strip(), "listening")
            r = nsrun("v1", "/usr/bin/python3", "-c", UDP_ECHO_CLIENT, address,
                      *([",".join(map(str, sizes))] if sizes else []), timeout=120)
            result = json.loads(r.stdout)
            self.assertEqual(result["lost"], [], f"{address}: no echo, or a wrong one: {result}")
            return result["sizes"]
        finally:
            server.kill()
            server.wait()
            server.stdout.close()

    def test_03_tcp_stream_both_ways_byte_exact(self):
        self.tcp_echo_byte_exact()
        for edge in ("e1", "e2"):
            self.assertEqual(counters(edge, "dcx")["drops"]["gso"], 0, "offloads must be off")

    def test_04_iperf3(self):
        server = subprocess.Popen(["ip", "netns", "exec", ns("v2"), "iperf3", "-s", "-1"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            r = nsrun("v1", "iperf3", "-c", "10.0.0.2", "-t", "3", "-J", timeout=60)
            bps = json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]
            print(f"\n  iperf3 over EtherIP (1500-byte WAN, fragmenting): {bps / 1e9:.2f} Gbit/s",
                  file=sys.stderr)
            self.assertGreater(bps, 1e6)
        finally:
            server.wait(timeout=10)

    def test_05_broadcast_tagged_and_non_ip_frames_cross(self):
        sniffer = Sniffer("v2", "eth0", 30.0)
        frames = [
            Ether(src=MAC["v1"], dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.0.1", dst="10.0.0.255")
            / UDP(sport=4000, dport=4001) / Raw(b"etherctl-broadcast"),
            Ether(src=MAC["v1"], dst=MAC["v2"]) / Dot1Q(vlan=42, prio=5)
            / IP(src="10.42.0.1", dst="10.42.0.2") / UDP(sport=4000, dport=4002)
            / Raw(b"etherctl-tagged"),
            Ether(src=MAC["v1"], dst=MAC["v2"], type=0x88B5) / Raw(b"etherctl-local-experimental"),
            Ether(src=MAC["v1"], dst="01:00:5e:00:00:fb") / IP(src="10.0.0.1", dst="224.0.0.251")
            / UDP(sport=5353, dport=5353) / Raw(b"etherctl-multicast"),
        ]
        send_frames("v1", "eth0", frames)
        got = sniffer.frames()
        raw = [bytes(f) for f in got]
        for sent in frames:
            want = bytes(sent).ljust(60, b"\0")  # short frames arrive zero-padded, as from a NIC
            self.assertIn(want, raw, f"not received intact: {sent.summary()}")
        tagged = [f for f in got if Dot1Q in f]
        self.assertEqual(tagged[0][Dot1Q].vlan, 42)

    def test_06_tshark_decodes_etherip_version_3(self):
        nsrun("v1", "ip", "neigh", "flush", "dev", "eth0")
        cap = subprocess.Popen(
            ["ip", "netns", "exec", ns("e1"), "tshark", "-l", "-n", "-i", "wan1", "-a",
             "duration:60", "-f", "ip proto 97", "-T", "fields", "-E", "separator=|",
             "-e", "etherip.ver", "-e", "eth.type", "-e", "eth.src", "-e", "arp.opcode",
             "-e", "icmp.type", "-e", "data.len", "-e", "_ws.expert.message"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # tshark takes a while to open the capture; it says so on stderr.
        deadline = time.time() + 20
        while time.time() < deadline and "Capturing on" not in cap.stderr.readline():
            pass
        time.sleep(0.5)
        nsrun("v1", "arping", "-c", "1", "-w", "2", "-I", "eth0", "10.0.0.2")
        nsrun("v1", "ping", "-c", "2", "-i", "0.2", "-w", "10", "10.0.0.2")
        nsrun("v1", "ping", "-c", "1", "-w", "10", "-s", "1472", "10.0.0.2")
        time.sleep(1.0)
        cap.send_signal(signal.SIGINT)  # stops the capture; tshark flushes what it decoded
        out, err = cap.communicate(timeout=60)
        lines = [line.split("|") for line in out.splitlines() if line.strip()]
        self.assertTrue(lines, f"tshark saw nothing: {err}")
        versions = {fields[0] for fields in lines if fields[0]}
        self.assertEqual(versions, {"3"}, out)
        inner_types = [fields[1].split(",")[-1] for fields in lines if fields[0]]
        self.assertIn("0x0806", inner_types, "ARP inside EtherIP")
        icmp = [fields for fields in lines if fields[0] and fields[4]]
        self.assertTrue(any("8" in f[4].split(",") for f in icmp), "ICMP echo inside EtherIP")
        self.assertTrue(any("0" in f[4].split(",") for f in icmp), "ICMP reply inside EtherIP")
        # The inner Ethernet source is the VM's MAC.
        self.assertTrue(any(MAC["v1"] in f[2] for f in lines if f[0]), out)
        # The 1472-byte ping (8 bytes of it a timestamp) crossed in a reassembled outer datagram.
        self.assertTrue(any(f[5] == "1464" for f in icmp), out)
        self.assertFalse(any("EtherIP" in f[6] for f in lines), "no dissector warnings")

    def test_07_ipv6_outer(self):
        before = counters("e1", "dcx6")
        r = nsrun("v1", "ping", "-c", "3", "-i", "0.2", "-w", "10", "10.6.0.2")
        self.assertIn("3 received", r.stdout)
        r = nsrun("v1", "ping", "-c", "2", "-w", "10", "-s", "1400", "-M", "do", "10.6.0.2")
        self.assertIn("2 received", r.stdout)
        # Full-size frames: the datapath fragments the outer IPv6 packet itself.
        reassembled = counters("e2", "dcx6")["reassembled"]
        r = nsrun("v1", "ping", "-c", "2", "-i", "0.2", "-w", "10", "-s", "1472", "-M", "do", "10.6.0.2")
        self.assertIn("2 received", r.stdout)
        self.assertGreaterEqual(counters("e2", "dcx6")["reassembled"] - reassembled, 2)
        # Frames just too big (1459..1481 bytes) leave a second fragment shorter than the skb's
        # transport header offset, which the kernel will not trim to: they were dropped
        # (helper_failed) until the datapath kept the skb's length (datapath.bpf_fuzz found it).
        for size in ("1417", "1439"):
            r = nsrun("v1", "ping", "-c", "1", "-w", "10", "-s", size, "-M", "do", "10.6.0.2")
            self.assertIn("1 received", r.stdout)
        self.assertEqual(counters("e1", "dcx6")["drops"]["helper_failed"],
                         before["drops"]["helper_failed"])
        after = counters("e1", "dcx6")
        self.assertGreaterEqual(after["tx_packets"] - before["tx_packets"], 5)
        self.assertGreaterEqual(after["rx_packets"] - before["rx_packets"], 5)

    def test_07a_ipv6_inside_ipv4_and_ipv6_outer(self):
        # IPv6 VM traffic over the IPv4 tunnel (the encap program names the outer family: the
        # skb arrives as IPv6) and over the IPv6 tunnel, up to the full 1500-byte packet.
        for vm, dev, last in (("v1", "eth0", 1), ("v2", "eth0", 2), ("v1", "eth1", 1),
                              ("v2", "eth1", 2)):
            net = "2001:db8:100" if dev == "eth0" else "2001:db8:106"
            nsrun(vm, "ip", "addr", "replace", f"{net}::{last}/64", "dev", dev, "nodad")
        for peer, size in (("2001:db8:100::2", 56), ("2001:db8:100::2", 1452),
                           ("2001:db8:106::2", 56)):
            r = nsrun("v1", "ping", "-6", "-c", "3", "-i", "0.2", "-w", "10", "-s", str(size),
                      peer)
            self.assertIn("3 received", r.stdout, f"{peer} size {size}")

    def test_07b_jumbo_frames_over_a_1500_byte_wan(self):
        """A 9000-byte tunnel MTU over the 1500-byte WAN: 9014-byte frames cross in 7 outer
        fragments, cut by the stack (IPv4 outer) or by the datapath itself (IPv6 outer), and are
        reassembled in BPF; tshark on the WAN reassembles the IPv6 ones independently."""
        links = {"e1": ["dcx", "eip-dcx", "vm1", "br0", "dcx6", "eip-dcx6", "vm1b", "br6"],
                 "e2": ["dcx", "eip-dcx", "vm2", "br0", "dcx6", "eip-dcx6", "vm2b", "br6"],
                 "v1": ["eth0", "eth1"], "v2": ["eth0", "eth1"]}

        def set_mtu(mtu):
            for name, devs in links.items():
                for dev in devs:
                    ip("-n", ns(name), "link", "set", dev, "mtu", str(mtu))

        set_mtu(9000)
        try:
            before = {e: {t: counters(e, t) for t in ("dcx", "dcx6")} for e in ("e1", "e2")}
            r = nsrun("v1", "ping", "-M", "do", "-s", "8972", "-c", "3", "-i", "0.2", "-w", "15",
                      "10.0.0.2")
            self.assertIn("3 received", r.stdout)
            cap = tshark_started(
                "e1", "-l", "-n", "-i", "wan1", "-a", "duration:60", "-f",
                "ip6 and src 2001:db8::1", "-T", "fields", "-E", "separator=|",
                "-e", "ipv6.fraghdr.offset", "-e", "ipv6.fraghdr.more", "-e", "etherip.ver",
                "-e", "icmp.type", "-e", "data.len", "-e", "frame.len")
            r = nsrun("v1", "ping", "-M", "do", "-s", "8972", "-c", "3", "-i", "0.2", "-w", "15",
                      "10.6.0.2")
            self.assertIn("3 received", r.stdout)
            time.sleep(1.0)
            cap.send_signal(signal.SIGINT)
            out, err = cap.communicate(timeout=60)
            lines = [line.split("|") for line in out.splitlines() if line.strip()]
            pieces = [f for f in lines if f[0] or f[1]]
            self.assertEqual(len(pieces), 3 * 7, out + err)  # 3 echo requests, 7 fragments each
            self.assertTrue(all(int(f[5]) <= 1514 for f in pieces), out)
            # tshark put each request back together (shown on its last fragment): EtherIP
            # version 3, ICMP echo, 8964 bytes of data after the 8-byte timestamp.
            whole = [f for f in pieces if f[2]]
            self.assertEqual(len(whole), 3, out)
            self.assertTrue(all(f[2] == "3" and f[3] == "8" and f[4] == "8964" for f in whole),
                            out)
            after = {e: {t: counters(e, t) for t in ("dcx", "dcx6")} for e in ("e1", "e2")}
            for e in ("e1", "e2"):
                for t in ("dcx", "dcx6"):
                    d = {k: after[e][t][k] - before[e][t][k]
                         for k in ("reassembled", "rx_fragments", "rx_packets")}
                    self.assertGreaterEqual(d["reassembled"], 3, (e, t, d))
                    self.assertGreaterEqual(d["rx_fragments"], 21, (e, t, d))
                    self.assertEqual(sum(after[e][t]["drops"].values()),
                                     sum(before[e][t]["drops"].values()), (e, t))
        finally:
            set_mtu(1500)

    def test_07c_partial_checksums_are_filled_in_after_encapsulation(self):
        """TCP and UDP leave the VMs with partial checksums (CHECKSUM_PARTIAL: the veths offload
        them). Over the IPv4 tunnel the bridge port keeps them partial (transmit checksum
        offload on) and they are filled in after encapsulation: by the stack before it cuts
        outer fragments, or by the WAN device as it sends. Over the IPv6 tunnel the datapath
        cuts outer fragments itself, so the bridge port has the offload off. The WAN devices
        are made to behave like NICs without checksum offload (`ethtool -K tx off`: the kernel
        fills the checksum in from csum_start as it sends), so what tshark captures on the WAN
        is what a wire carries: it reassembles the outer fragments and checks every inner
        TCP and UDP checksum. Every byte is checked at the far end too."""
        for tunnel, offload in (("dcx", "on"), ("dcx6", "off")):
            for edge in ("e1", "e2"):
                self.assertIn(f"tx-checksum-ip-generic: {offload}",
                              nsrun(edge, "ethtool", "-k", tunnel).stdout, (edge, tunnel))
        pcap = os.path.join(STATE, "wan.pcap")
        for edge, dev in (("e1", "wan1"), ("e2", "wan2")):
            nsrun(edge, "ethtool", "-K", dev, "tx", "off")
        try:
            before = {t: counters("e2", t) for t in ("dcx", "dcx6")}
            cap = tshark_started("e2", "-n", "-i", "wan2", "-a", "duration:120", "-B", "64",
                                 "-s", "0", "-f", "ip proto 97 or ip6", "-w", pcap,
                                 stdout=subprocess.DEVNULL)
            sizes = {}
            for address in ("10.0.0.2", "10.6.0.2"):
                self.tcp_echo_byte_exact(address, mib=4)
                sizes[address] = self.udp_echo_byte_exact(address)
            # The fast path (IPv4 outer) hands unfragmented outer packets straight to the WAN
            # device: its checksums are filled in there too.
            dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1", "--fast-path")
            dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2", "--fast-path")
            try:
                forwarded = wan_forwarded()
                # 25 datagrams each way, all small enough not to need outer fragments.
                self.udp_echo_byte_exact("10.0.0.2", sizes=(1, 18, 200, 1000, 1400))
                self.assertLess(wan_forwarded() - forwarded, 13, "the fast path was taken")
            finally:
                dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
                dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2")
            time.sleep(1.0)
            cap.send_signal(signal.SIGINT)
            cap.communicate(timeout=60)
        finally:
            for edge, dev in (("e1", "wan1"), ("e2", "wan2")):
                nsrun(edge, "ethtool", "-K", dev, "tx", "on")
        after = {t: counters("e2", t) for t in ("dcx", "dcx6")}
        for t in ("dcx", "dcx6"):
            # Full-size TCP frames crossed in outer fragments (no MSS clamping here).
            self.assertGreater(after[t]["reassembled"] - before[t]["reassembled"], 1000, t)

        # One pass over the capture: per packet the IP protocol numbers (outer, inner), IPv6
        # next headers, and the inner TCP/UDP checksum status (0 bad, 1 good, 2 unverified).
        r = run("tshark", "-n", "-r", pcap, "-o", "tcp.check_checksum:TRUE", "-o",
                "udp.check_checksum:TRUE", "-o", "ip.defragment:TRUE", "-o",
                "ipv6.defragment:TRUE", "-Y", "tcp or udp", "-T", "fields", "-E", "separator=|",
                "-e", "ip.proto", "-e", "ipv6.nxt", "-e", "tcp.checksum.status", "-e", "tcp.len",
                "-e", "udp.checksum.status", "-e", "udp.length", "-e", "tcp.checksum",
                "-e", "tcp.checksum_calculated", "-e", "frame.number", "-e", "ip.src",
                timeout=240)
        seen = {}  # (outer, l4) -> {"status": Counter, "sizes": set}
        bad = []
        for line in r.stdout.splitlines():
            (proto, nxt, tcp_status, tcp_len, udp_status, udp_len, tcp_sum, tcp_calc,
             *_) = line.split("|")
            if tcp_status == "0" and (tcp_sum, tcp_calc) == ("0xffff", "0x0000"):
                # A sum of zero, which the kernel writes as 0xffff (skb_checksum_help: CSUM_MANGLED_0,
                # for UDP's sake, whatever the protocol): the same number in one's complement,
                # and receivers accept it; tshark calls it illegal after RFC 1624.
                tcp_status = "1"
            if "1" not in (tcp_status, udp_status):
                bad.append(line)
            outer = "ipv4" if proto.split(",")[0] == "97" else "ipv6" if nxt else "?"
            l4, status, size = (("tcp", tcp_status, tcp_len) if tcp_status else
                                ("udp", udp_status, str(int(udp_len or 8) - 8)))
            entry = seen.setdefault((outer, l4), {"status": {}, "sizes": {}})
            entry["status"][status] = entry["status"].get(status, 0) + 1
            entry["sizes"][size] = entry["sizes"].get(size, 0) + 1
        summary = {k: v["status"] for k, v in seen.items()}
        print(f"\n  inner checksums on the WAN (status: count): {summary}", file=sys.stderr)
        self.assertEqual(set(seen), {(o, p) for o in ("ipv4", "ipv6") for p in ("tcp", "udp")},
                         summary)
        for (outer, l4), entry in seen.items():
            self.assertEqual(set(entry["status"]), {"1"}, f"{outer} {l4}: {summary}; " +
                             "\n".join(bad[:20]))
        for outer in ("ipv4", "ipv6"):
            # 4 MiB each way: thousands of full segments, in outer fragments.
            self.assertGreater(seen[(outer, "tcp")]["sizes"].get("1448", 0), 3000, outer)
            self.assertTrue({str(n) for n in sizes["10.0.0.2"]} <= set(seen[(outer, "udp")]["sizes"]),
                            (outer, seen[(outer, "udp")]["sizes"]))

    def test_08_scapy_peer(self):
        e1_mac = mac_of("e1", "wsp")
        sp_mac = mac_of("sp", "wan")

        def outer(src, inner, version=3):
            return (Ether(src=sp_mac, dst=e1_mac) / IP(src=src, dst="198.51.100.1", id=random.randint(1, 65535))
                    / EtherIP(version=version) / inner)

        def echo(seq, size):
            return (Ether(src=MAC["peer"], dst=MAC["v3"]) / IP(src="10.9.0.2", dst="10.9.0.1")
                    / ICMP(type=8, id=0x4242, seq=seq) / Raw(bytes(random.getrandbits(8) for _ in range(size))))

        def replies(frames):
            """Echo replies that the datapath sent, decoded by scapy (after IP reassembly)."""
            packets = defragment([f[IP] for f in frames if IP in f and f[IP].proto == 97])
            out = {}
            for p in packets:
                p = IP(bytes(p))
                self.assertEqual(p.src, "198.51.100.1")
                self.assertEqual(p.dst, "198.51.100.2")
                self.assertIn(EtherIP, p)
                self.assertEqual(p[EtherIP].version, 3)
                self.assertEqual(p[EtherIP].reserved, 0)
                if ICMP in p and p[ICMP].type == 0:
                    out[p[ICMP].seq] = p
            return out

        before = counters("e1", "sp0")
        unattributed = counters("e1", "-")
        small, big = echo(1, 64), echo(2, 1472)  # big: a full 1514-byte inner frame
        big_outer = outer("198.51.100.2", big)
        pieces = fragment(big_outer[IP], fragsize=640)
        self.assertGreaterEqual(len(pieces), 3)
        for p in pieces:
            self.assertEqual(p.flags.DF, 0)
        sniffer = Sniffer("sp", "wan", 30.0, "ip proto 97 and src 198.51.100.1")
        send_frames("sp", "wan", [
            outer("198.51.100.2", small),
            # Fragments with DF clear, last one first, as an independent stack would send them.
            *[Ether(src=sp_mac, dst=e1_mac) / p for p in reversed(pieces)],
            outer("198.51.100.2", echo(3, 64), version=4),   # wrong version
            outer("198.51.100.3", echo(4, 64)),              # unknown source
        ])
        got = replies(sniffer.frames())
        after = counters("e1", "sp0")
        self.assertIn(1, got, "reply to the small echo")
        self.assertIn(2, got, "reply to the fragmented full-size echo")
        self.assertEqual(bytes(got[2][ICMP].payload), bytes(big[ICMP].payload))
        self.assertEqual(got[2][Ether].src, MAC["v3"])
        self.assertNotIn(3, got)
        self.assertNotIn(4, got)
        self.assertEqual(after["reassembled"] - before["reassembled"], 1)
        self.assertEqual(after["rx_fragments"] - before["rx_fragments"], len(pieces))
        self.assertEqual(after["drops"]["bad_version"] - before["drops"]["bad_version"], 1)
        self.assertEqual(after["drops"]["unknown_peer"] - before["drops"]["unknown_peer"], 1)
        self.assertEqual(counters("e1", "-")["drops"]["wrong_local"],
                         unattributed["drops"]["wrong_local"])

    def test_08b_fast_path(self):
        dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1", "--fast-path")
        dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2", "--fast-path")
        try:
            forwarded = wan_forwarded()
            r = nsrun("v1", "ping", "-c", "50", "-i", "0.01", "-w", "10", "10.0.0.2")
            self.assertIn("50 received", r.stdout)
            # Echo requests went straight out of wan1, not through e1's forwarding path (which
            # still carries the VMs' ARP and IPv6 chatter).
            self.assertLess(wan_forwarded() - forwarded, 25)
            r = nsrun("v1", "ping", "-M", "do", "-s", "1472", "-c", "3", "-i", "0.2", "-w", "10",
                      "10.0.0.2")  # needs fragmentation: still through the stack
            self.assertIn("3 received", r.stdout)
            self.test_03_tcp_stream_both_ways_byte_exact()
        finally:
            dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
            dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2")

    def test_08b2_fast_path_at_the_tunnel_port(self):
        """The fast path's measured variant (dp_tool --port-encap, not in the site schema):
        etherip_encap_port on dcx's TC egress encapsulates whole IP frames and sends them
        straight out of the WAN device, without the dcx -> eip-dcx crossing; whatever it does
        not take (unresolved next hop, outer fragmentation, GSO skbs, non-IP frames) crosses
        to eip-dcx unchanged and takes the usual path."""
        def crossed():  # frames the bridge port handed over the veth to eip-dcx
            return int(nsrun("e1", "cat", "/sys/class/net/eip-dcx/statistics/rx_packets")
                       .stdout)

        port_program = "etherip_encap_p"  # etherip_encap_port as the kernel names it (15 bytes)

        def egress_filters(edge):
            return nsrun(edge, "tc", "filter", "show", "dev", "dcx", "egress").stdout

        for edge, local, remote, wan in (("e1", "192.0.2.1", "192.0.2.2", "wan1"),
                                         ("e2", "192.0.2.2", "192.0.2.1", "wan2")):
            dp(edge, "apply", "dcx", local, remote, wan, "--fast-path", "--port-encap")
            self.assertIn(port_program, egress_filters(edge))
        try:
            # Unresolved next hop: the first echo requests fall back to the stack, which
            # resolves the peer; the rest leave from dcx's egress.
            nsrun("e1", "ip", "neigh", "flush", "dev", "wan1")
            before, forwarded = crossed(), wan_forwarded()
            tx = counters("e1", "dcx")["tx_packets"]
            r = nsrun("v1", "ping", "-c", "50", "-i", "0.01", "-w", "10", "10.0.0.2")
            self.assertIn("50 received", r.stdout)
            self.assertGreaterEqual(counters("e1", "dcx")["tx_packets"] - tx, 50)
            self.assertLess(crossed() - before, 25, "echo requests left from dcx's egress")
            self.assertLess(wan_forwarded() - forwarded, 25)
            # Needs outer fragmentation: crosses to eip-dcx and the stack fragments it.
            before = crossed()
            r = nsrun("v1", "ping", "-M", "do", "-s", "1472", "-c", "3", "-i", "0.2", "-w", "10",
                      "10.0.0.2")
            self.assertIn("3 received", r.stdout)
            self.assertGreaterEqual(crossed() - before, 3)
            # GSO skbs from the VM's TSO cross too (segmented for the veth), byte exact.
            self.test_03_tcp_stream_both_ways_byte_exact()
            self.test_05_broadcast_tagged_and_non_ip_frames_cross()
        finally:
            dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
            dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2")
        for edge in ("e1", "e2"):
            self.assertNotIn(port_program, egress_filters(edge), "detached again")
            self.assertEqual(counters(edge, "dcx")["drops"]["helper_failed"], 0)

    def test_08c_mss_clamping_avoids_fragmentation(self):
        dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1", "--clamp-mss")
        dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2", "--clamp-mss")
        try:
            before = [counters(e, "dcx")["reassembled"] for e in ("e1", "e2")]
            self.test_03_tcp_stream_both_ways_byte_exact()
            after = [counters(e, "dcx")["reassembled"] for e in ("e1", "e2")]
            self.assertEqual(after, before, "clamped segments fit the WAN unfragmented")
        finally:
            dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
            dp("e2", "apply", "dcx", "192.0.2.2", "192.0.2.1", "wan2")

    def test_08d_gro_after_decapsulation_on_the_queue_of_each_cpu(self):
        # The links as the datapath sets them, read with ethtool.
        k = nsrun("e2", "ethtool", "-k", "dcx").stdout
        self.assertIn("generic-receive-offload: on", k)
        self.assertIn("tcp-segmentation-offload: off", k)
        self.assertIn("tcp-segmentation-offload: off", nsrun("e2", "ethtool", "-k",
                                                              "eip-dcx").stdout)

        def napi_packets():  # frames the veth handed to dcx's NAPI, per receive queue
            stats = nsrun("e2", "ethtool", "-S", "dcx").stdout
            return {int(m.group(1)): int(m.group(2)) for m in
                    re.finditer(r"rx_queue_(\d+)_xdp_packets: (\d+)", stats)}

        cpus = sorted(os.sched_getaffinity(0))
        server = subprocess.Popen(["ip", "netns", "exec", ns("v2"), "iperf3", "-s"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            # GRO coalesces the decapsulated segments: v2 receives frames beyond the MTU.
            cap = subprocess.Popen(
                ["ip", "netns", "exec", ns("v2"), "tshark", "-n", "-i", "eth0", "-a",
                 "duration:6", "-f", "tcp and greater 3000", "-T", "fields", "-e", "frame.len"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 20
            while time.time() < deadline and "Capturing on" not in cap.stderr.readline():
                pass
            nsrun("v1", "iperf3", "-c", "10.0.0.2", "-t", "2", timeout=60)
            out, _ = cap.communicate(timeout=60)
            sizes = [int(x) for x in out.split()]
            self.assertTrue(sizes, "no frame beyond the MTU reached v2: GRO did not coalesce")
            # In this lab everything a sender's packet sets off runs on the sender's CPU
            # (every veth hands over to the local backlog), decapsulation included: the frames
            # must land on that CPU's queue of dcx.
            server.kill()
            server.wait()
            for cpu in cpus[:2]:
                # Sender and receiver on that CPU: ACKs (which release the next segments) are
                # produced there too.
                server = subprocess.Popen(
                    ["ip", "netns", "exec", ns("v2"), "iperf3", "-s", "-1", "-A", str(cpu)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
                before = napi_packets()
                nsrun("v1", "iperf3", "-c", "10.0.0.2", "-t", "1", "-A", str(cpu), timeout=60)
                server.wait(timeout=30)
                after = napi_packets()
                delta = {q: after.get(q, 0) - before.get(q, 0) for q in after}
                queue = cpu % len(after)
                self.assertGreater(delta[queue], 1000, f"CPU {cpu}: {delta}")
                others = sum(n for q, n in delta.items() if q != queue)
                self.assertLess(others, delta[queue] / 10, f"CPU {cpu}: {delta}")
        finally:
            server.kill()
            server.wait()

    def test_09_lifecycle_remove_reapply_and_clean_destroy(self):
        dp("e1", "remove", "dcx")
        names = [t["name"] for t in json.loads(dp("e1", "list").stdout)]
        self.assertNotIn("dcx", names)
        self.assertEqual(run("tc", "-n", ns("e1"), "filter", "show", "dev", "eip-dcx",
                             "ingress").stdout.strip(), "")
        # wan1 still carries decap for dcx6.
        self.assertIn("etherip_decap", run("tc", "-n", ns("e1"), "filter", "show", "dev", "wan1",
                                           "ingress").stdout)
        r = nsrun("v1", "ping", "-c", "1", "-W", "1", "10.0.0.2", check=False)
        self.assertNotEqual(r.returncode, 0, "tunnel removed: no traffic")
        for _ in range(20):  # repeated apply/remove leaves nothing behind
            dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
            dp("e1", "remove", "dcx")
        dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")
        dp("e1", "apply", "dcx", "192.0.2.1", "192.0.2.2", "wan1")  # re-apply: in-place replace
        filters = run("tc", "-n", ns("e1"), "filter", "show", "dev", "eip-dcx", "ingress").stdout
        self.assertEqual(filters.count("handle 0x97"), 1, filters)
        r = nsrun("v1", "ping", "-c", "2", "-i", "0.2", "-w", "10", "10.0.0.2")
        self.assertIn("2 received", r.stdout)
        # Destroy: no filters and no pins left.
        for edge in ("e1", "e2"):
            pin_dir = dp(edge, "pin-dir").stdout.strip()
            out = nsrun(edge, "sh", "-c", f"mountpoint -q /sys/fs/bpf || mount -t bpf bpf "
                        f"/sys/fs/bpf; {DP_TOOL} remove-all && ls {pin_dir} 2>&1; true").stdout
            self.assertIn("No such file", out)
            for dev in ("wan1", "wan2", "wsp"):
                r = run("tc", "-n", ns(edge), "filter", "show", "dev", dev, "ingress", check=False)
                self.assertNotIn("etherip", r.stdout)
                r = run("tc", "-n", ns(edge), "qdisc", "show", "dev", dev, check=False)
                self.assertNotIn("clsact", r.stdout, "no empty clsact left on the underlay")
        # Programs still running after the tool exited was the premise of every test above.


# argv: the server's address; the client's also the MiB to send.
ECHO_SERVER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5001)); s.listen(1); print("listening", flush=True)
c, _ = s.accept()
while True:
    d = c.recv(1 << 16)
    if not d: break
    c.sendall(d)
c.close()
"""

ECHO_CLIENT = r"""
import hashlib, json, os, socket, sys, threading
total = int(sys.argv[2]) << 20
data = os.urandom(1 << 20)
s = socket.create_connection((sys.argv[1], 5001), timeout=60)
rx = hashlib.sha256(); got = [0]
def reader():
    while got[0] < total:
        d = s.recv(1 << 16)
        if not d: break
        rx.update(d); got[0] += len(d)
t = threading.Thread(target=reader); t.start()
tx = hashlib.sha256(); sent = 0
while sent < total:
    s.sendall(data); tx.update(data); sent += len(data)
t.join(90)
print(json.dumps({"sent": sent, "received": got[0], "sent_sha": tx.hexdigest(),
                  "received_sha": rx.hexdigest()}))
"""


# Echoes each datagram back; the client sends every size a few times, each with fresh random
# bytes, and checks each echo byte for byte (retrying a lost one: UDP).
UDP_ECHO_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 5002)); print("listening", flush=True)
while True:
    d, peer = s.recvfrom(65535)
    s.sendto(d, peer)
"""

UDP_ECHO_CLIENT = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
s.connect((sys.argv[1], 5002))
sizes = [int(n) for n in sys.argv[2].split(",")] if len(sys.argv) > 2 else \
    [1, 18, 200, 1000, 1400, 1450, 1472, 1473, 3000, 8000]
lost = []
for size in sizes:
    for _ in range(5):
        data = os.urandom(size)
        for attempt in range(5):
            s.send(data)
            try:
                if s.recv(65535) == data: break
            except socket.timeout:
                pass
        else:
            lost.append(size)
print(json.dumps({"sizes": sizes, "lost": lost}))
"""


def wan_forwarded():
    out = nsrun("e1", "nstat", "-az", "IpForwDatagrams").stdout
    for line in out.splitlines():
        if line.startswith("IpForwDatagrams"):
            return int(line.split()[1])
    return 0


def wan_frag_creates():
    out = nsrun("e1", "nstat", "-az", "IpFragCreates").stdout
    for line in out.splitlines():
        if line.startswith("IpFragCreates"):
            return int(line.split()[1])
    return 0


def main():
    global DP_TOOL, ETHERCTL
    parser = argparse.ArgumentParser()
    parser.add_argument("--dp-tool", required=True)
    parser.add_argument("--etherctl", required=True)
    args, rest = parser.parse_known_args()
    DP_TOOL = os.path.abspath(args.dp_tool)
    ETHERCTL = os.path.abspath(args.etherctl)
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 1
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        build_lab()
        prog = unittest.main(argv=[sys.argv[0], "-v", *rest], exit=False)
        return 0 if prog.result.wasSuccessful() else 1
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
