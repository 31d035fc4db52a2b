#!/usr/bin/python3
"""Throughput of the EtherIP datapath next to the bare underlay and in-kernel VXLAN, in one run.

Two namespaces joined by one veth "WAN" (MTU 1500). Over it, one after the other:
  bare      iperf3 between the WAN addresses, with offloads and without (the per-packet
            ceiling EtherIP lives under)
  vxlan     in-kernel VXLAN (MTU 1450), iperf3 between overlay addresses
  etherip   each namespace has a bridge holding the EtherIP tunnel port (etherctl's veth pair
            with the BPF programs, loaded by dp_tool); iperf3 between self IPs on the bridges.
            Bridge MTU 1500 (full frames, every full segment fragmented and reassembled in
            BPF) and MTU 1464 (segments fit the WAN unfragmented); stack path and fast path.
Each: TCP bulk (iperf3 -t SECONDS) and UDP 64-byte packet rate. Needs root.
Usage: bench/datapath_throughput.py --dp-tool build/tests/datapath/dp_tool [--seconds 5]
"""
import argparse
import json
import os
import subprocess
import sys
import time

PREFIX = f"ecbench-{os.getpid()}"


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode:
        raise SystemExit(f"{' '.join(args)}: {r.stderr}")
    return r.stdout


def ns(n):
    return f"{PREFIX}-{n}"


def ip(n, *args):
    return sh("ip", "-n", ns(n), *args)


def setup_underlay():
    for n in ("a", "b"):
        sh("ip", "netns", "add", ns(n))
        ip(n, "link", "set", "lo", "up")
    sh("ip", "link", "add", "wan", "netns", ns("a"), "type", "veth", "peer", "name", "wan",
       "netns", ns("b"))
    for n, last in (("a", 1), ("b", 2)):
        ip(n, "addr", "add", f"192.0.2.{last}/24", "dev", "wan")
        ip(n, "link", "set", "wan", "mtu", "1500", "up")


def cleanup():
    for n in ("a", "b"):
        subprocess.run(["ip", "netns", "del", ns(n)], capture_output=True)


def iperf(server_addr, seconds, udp=False):
    server = subprocess.Popen(["ip", "netns", "exec", ns("b"), "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    args = ["ip", "netns", "exec", ns("a"), "iperf3", "-c", server_addr, "-t", str(seconds), "-J"]
    if udp:
        args += ["-u", "-b", "0", "-l", "64"]
    out = json.loads(sh(*args))
    server.wait(timeout=30)
    if udp:
        s = out["end"]["sum"]
        received = s["packets"] - s["lost_packets"]
        return received / s["seconds"]
    return out["end"]["sum_received"]["bits_per_second"]


def measure(name, addr, seconds, results):
    tcp = iperf(addr, seconds)
    pps = iperf(addr, seconds, udp=True)
    results.append((name, tcp, pps))
    print(f"{name:<24} TCP {tcp / 1e9:6.2f} Gbit/s   UDP 64 B {pps / 1e3:8.0f} kpps", flush=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dp-tool", required=True)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()
    dp_tool = os.path.abspath(args.dp_tool)
    results = []
    try:
        cleanup()
        setup_underlay()
        measure("bare veth", "192.0.2.2", args.seconds, results)
        # The per-packet ceiling EtherIP lives under: no GSO/checksum offload (there is no GSO
        # handler for protocol 97), every 1500-byte packet handled on its own.
        for n in ("a", "b"):
            sh("ip", "netns", "exec", ns(n), "ethtool", "-K", "wan", "tso", "off", "gso", "off",
               "tx", "off")
        measure("bare veth, no offloads", "192.0.2.2", args.seconds, results)
        for n in ("a", "b"):
            sh("ip", "netns", "exec", ns(n), "ethtool", "-K", "wan", "tso", "on", "gso", "on",
               "tx", "on")

        for n, local, remote, addr in (("a", "192.0.2.1", "192.0.2.2", "10.42.0.1/24"),
                                       ("b", "192.0.2.2", "192.0.2.1", "10.42.0.2/24")):
            ip(n, "link", "add", "vx", "type", "vxlan", "id", "42", "local", local, "remote",
               remote, "dstport", "4789", "dev", "wan")
            ip(n, "addr", "add", addr, "dev", "vx")
            ip(n, "link", "set", "vx", "up")
        measure("vxlan (mtu 1450)", "10.42.0.2", args.seconds, results)
        for n in ("a", "b"):
            ip(n, "link", "del", "vx")

        for n, local, remote, addr in (("a", "192.0.2.1", "192.0.2.2", "10.0.0.1/24"),
                                       ("b", "192.0.2.2", "192.0.2.1", "10.0.0.2/24")):
            ip(n, "link", "add", "br0", "type", "bridge")
            ip(n, "link", "add", "dcx", "type", "veth", "peer", "name", "eip-dcx")
            ip(n, "link", "set", "dcx", "master", "br0")
            for dev in ("dcx", "eip-dcx", "br0"):
                ip(n, "link", "set", dev, "up")
            ip(n, "addr", "add", addr, "dev", "br0")
            sh("ip", "netns", "exec", ns(n), dp_tool, "apply", "dcx", local, remote, "wan")
        time.sleep(1)
        measure("etherip (mtu 1500, frag)", "10.0.0.2", args.seconds, results)
        for n in ("a", "b"):
            ip(n, "link", "set", "dcx", "mtu", "1464")
            ip(n, "link", "set", "br0", "mtu", "1464")
        measure("etherip (mtu 1464)", "10.0.0.2", args.seconds, results)
        for n, local, remote in (("a", "192.0.2.1", "192.0.2.2"), ("b", "192.0.2.2", "192.0.2.1")):
            sh("ip", "netns", "exec", ns(n), dp_tool, "apply", "dcx", local, remote, "wan",
               "--fast-path")
        measure("etherip fast (mtu 1464)", "10.0.0.2", args.seconds, results)
        for n in ("a", "b"):
            ip(n, "link", "set", "dcx", "mtu", "1500")
            ip(n, "link", "set", "br0", "mtu", "1500")
        measure("etherip fast (mtu 1500)", "10.0.0.2", args.seconds, results)
        for n, local, remote in (("a", "192.0.2.1", "192.0.2.2"), ("b", "192.0.2.2", "192.0.2.1")):
            sh("ip", "netns", "exec", ns(n), dp_tool, "apply", "dcx", local, remote, "wan",
               "--fast-path", "--clamp-mss")
        measure("etherip fast+mss (1500)", "10.0.0.2", args.seconds, results)
        for n in ("a", "b"):
            counters = json.loads(sh("ip", "netns", "exec", ns(n), dp_tool, "counters", "dcx"))
            drops = {k: v for k, v in counters["drops"].items() if v}
            print(f"  {n}: reassembled {counters['reassembled']} drops {drops}")
            sh("ip", "netns", "exec", ns(n), dp_tool, "remove-all")
    finally:
        cleanup()
    vx = next(r for r in results if r[0].startswith("vxlan"))
    for name, tcp, _ in results:
        if name.startswith("etherip"):
            print(f"{name}: {tcp / vx[1]:.2f}x VXLAN TCP")
    return 0


if __name__ == "__main__":
    sys.exit(main())
