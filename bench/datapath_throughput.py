#!/usr/bin/python3
"""Throughput of the EtherIP datapath against the per-packet limit and in-kernel VXLAN (issue 18).

The lab (namespaces "ecb<pid>-<node>", always deleted):

    vm1 ─ eth1 [edge1: bridge vmotion ─ dcx] eth0 ─ dc1 [router] dc2 ─ eth0 [edge2: ...] eth1 ─ vm2
    vx1 ─ eth2 [edge1: bridge brx ─ vx0 (VXLAN)]  (same WAN)         [edge2: ...] eth2 ─ vx2

VM and WAN MTU 1500; the router forwards, so GSO packets cannot cross the WAN whole unless
their segments fit (a lone veth lets them through, NOTES §4). The EtherIP tunnel is set up by
`etherctl apply` of a site file in each edge namespace, so what is measured is what users get
by default (MSS clamping included). Paths:

  etherip       VM to VM through etherctl's tunnel, default settings
  etherip+T...  the same with tweaks T for its turn (see tweak() below: the datapath before
                issue 18, the issue's GRO hand test, fast path, RPS, threaded NAPI, checksum
                offload, a WAN receive concentrated on one CPU as a NIC's RSS does, NAPI on
                the WAN receive, one stream pipelined across both CPUs)
  limit         plain TCP from edge host to edge host through the same router, TSO and GSO off
                at the sender, GRO on at the receiver (its veth peer on the router with TSO off,
                or a veth does not use NAPI): MTU-sized packets across the WAN, GRO after it,
                the most a design without GSO for IP protocol 97 can push through this lab
  vxlan         VM to VM through in-kernel VXLAN (a second bridge and VM pair; both VMs
                advertise MSS 1410 so that its 1550-byte frames are never fragmented, as
                etherctl's MSS clamping does for EtherIP)

After each path's turn its settings are undone and `etherctl plan` must find nothing to change
on either edge (a tweak's undo that leaves an offload, a queue count or the programs other than
etherctl sets them stops the run), so that every path starts from what users get.

Every path runs with 1, 2 and 4 streams in each direction (dc1→dc2, dc2→dc1), interleaved
round by round; the figures are medians over the rounds. N streams are N iperf3 client/server
processes on different ports: Debian 12's iperf3 (3.12) is single-threaded, so `-P N` would run
every stream in one thread on one CPU. CPU seconds per gigabit come from /proc/stat over each run
(all CPUs, busy = everything but idle and iowait), with the busy share of each CPU beside.

Usage (root):
  /work/tools/quiet /usr/bin/python3 bench/datapath_throughput.py \
      --etherctl build/cmd/etherctl/etherctl [--seconds 5] [--rounds 3] [--streams 1,2,4]
      [--paths etherip,limit,vxlan] [--json FILE] [--old-dp-tool OLD/dp_tool]
  ... --profile etherip:1:dc1-dc2 --perf-out DIR   one run under `perf record -a -g`, report in DIR
  ... --steps etherip:1:dc1-dc2                    kernel tracepoint counts per packet of one run
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

PREFIX = f"ecb{os.getpid()}"
NODES = ("vm1", "vm2", "vx1", "vx2", "edge1", "edge2", "router")
DIRECTIONS = ("dc1-dc2", "dc2-dc1")
WAN = {"edge1": "198.51.100.1", "edge2": "203.0.113.1"}
ROUTER = {"edge1": ("dc1", "198.51.100.254"), "edge2": ("dc2", "203.0.113.254")}
VM_IP = {"vm1": "10.1.0.21", "vm2": "10.1.0.22", "vx1": "10.2.0.21", "vx2": "10.2.0.22"}
BASE_PORT = 5201


def site(fast_path=False):
    """The site file: one edge per data center, the VM port and the tunnel in one VLAN group."""
    devices = {}
    for edge, other in (("edge1", "edge2"), ("edge2", "edge1")):
        router_ip = ROUTER[edge][1]
        devices[edge] = {
            "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
            "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
            "self_ips": {"wan-self": {"address": f"{WAN[edge]}/24", "vlan": "wan"}},
            "routes": {"to-peer": {"destination": f"{WAN[other].rsplit('.', 1)[0]}.0/24",
                                   "gateway": router_ip}},
        }
    tunnel = {"profile": "etherip", "endpoints": {"edge1": WAN["edge1"], "edge2": WAN["edge2"]}}
    if fast_path:
        tunnel["fast_path"] = True
    return {"etherctl": 1, "devices": devices, "tunnels": {"dcx": tunnel}}


def sh(*args, check=True, timeout=120):
    r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode:
        raise SystemExit(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def ns(node):
    return f"{PREFIX}-{node}"


def ip(node, *args):
    return sh("ip", "-n", ns(node), *args)


def nsexec(node, *args, check=True):
    return sh("ip", "netns", "exec", ns(node), *args, check=check)


def ethtool(node, dev, *settings):
    nsexec(node, "ethtool", "-K", dev, *settings)


def veth(node_a, name_a, node_b, name_b):
    sh("ip", "link", "add", name_a, "netns", ns(node_a), "type", "veth", "peer", "name", name_b,
       "netns", ns(node_b))


class Lab:
    def __init__(self, etherctl, dp_tool, old_dp_tool):
        self.etherctl = etherctl
        self.dp_tool = dp_tool          # the same build's dp_tool (tweaks' undo)
        self.old_dp_tool = old_dp_tool  # tweak "old"
        self.tmp = tempfile.mkdtemp(prefix="ecbench-")
        self.site = os.path.join(self.tmp, "site.json")
        self.site_fast = os.path.join(self.tmp, "site-fast.json")
        with open(self.site, "w") as f:
            json.dump(site(), f)
        with open(self.site_fast, "w") as f:
            json.dump(site(fast_path=True), f)
        self.env = dict(os.environ, ETHERCTL_LOCK_DIR=os.path.join(self.tmp, "run"))

    def run_etherctl(self, edge, *args, check=True):
        r = subprocess.run([self.etherctl, "--netns", ns(edge), "--device", edge, *args],
                           capture_output=True, text=True, env=self.env, timeout=120)
        if check and r.returncode not in (0, 2):
            raise SystemExit(f"etherctl {' '.join(args)} on {edge}: {r.stderr.strip()}")
        return r

    def apply_all(self, site_file):
        for edge in ("edge1", "edge2"):
            self.run_etherctl(edge, "apply", site_file)

    def check_no_drift(self, after):
        """Every path starts from etherctl's own settings: a tweak's undo that leaves anything
        etherctl manages changed (an offload, a queue count, the programs) stops the run."""
        for edge in ("edge1", "edge2"):
            r = self.run_etherctl(edge, "--detailed-exitcodes", "plan", self.site, check=False)
            if r.returncode != 0:
                raise SystemExit(f"after {after}, etherctl plan on {edge} wants changes "
                                 f"(exit {r.returncode}):\n{r.stdout}{r.stderr}")

    def up(self):
        for node in NODES:
            sh("ip", "netns", "add", ns(node))
            ip(node, "link", "set", "lo", "up")
        nsexec("router", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for edge in ("edge1", "edge2"):
            port, addr = ROUTER[edge]
            veth(edge, "eth0", "router", port)
            ip("router", "addr", "add", f"{addr}/24", "dev", port)
            ip("router", "link", "set", port, "mtu", "1500", "up")
            ip(edge, "link", "set", "eth0", "mtu", "1500")
        for vm, edge in (("vm1", "edge1"), ("vm2", "edge2")):
            veth(vm, "eth0", edge, "eth1")
            ip(vm, "addr", "add", f"{VM_IP[vm]}/24", "dev", "eth0")
            ip(vm, "link", "set", "eth0", "up")
        for edge in ("edge1", "edge2"):
            self.run_etherctl(edge, "apply", self.site)
        # The VXLAN twin, by hand (etherctl has no VXLAN kind): its own bridge and VM pair.
        for vm, edge, other in (("vx1", "edge1", "edge2"), ("vx2", "edge2", "edge1")):
            veth(vm, "eth0", edge, "eth2")
            ip(vm, "addr", "add", f"{VM_IP[vm]}/24", "dev", "eth0")
            ip(vm, "link", "set", "eth0", "up")
            # Frames of 1514 bytes become 1550-byte datagrams: advertised MSS 1410 keeps them
            # within the 1500-byte WAN, like etherctl's MSS clamping for EtherIP.
            ip(vm, "route", "change", "10.2.0.0/24", "dev", "eth0", "advmss", "1410")
            ip(edge, "link", "add", "vx0", "type", "vxlan", "id", "42", "local", WAN[edge],
               "remote", WAN[other], "dstport", "4789")
            ip(edge, "link", "set", "vx0", "mtu", "1500")
            ip(edge, "link", "add", "brx", "type", "bridge", "stp_state", "0", "forward_delay", "0")
            for dev in ("vx0", "eth2"):
                ip(edge, "link", "set", dev, "master", "brx", "up")
            ip(edge, "link", "set", "brx", "up")
        for a, b in (("vm1", "vm2"), ("vx1", "vx2")):
            self.wait_ping(a, VM_IP[b])
        self.wait_ping("edge1", WAN["edge2"])
        self.check_no_drift("setup")

    def wait_ping(self, node, addr):
        for _ in range(50):
            r = subprocess.run(["ip", "netns", "exec", ns(node), "ping", "-c1", "-W1", addr],
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise SystemExit(f"{node} cannot reach {addr}")

    def down(self):
        for edge in ("edge1", "edge2"):
            if os.path.exists(f"/run/netns/{ns(edge)}"):
                self.run_etherctl(edge, "destroy", self.site, check=False)
        for node in NODES:
            subprocess.run(["ip", "netns", "del", ns(node)], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def counters(self, edge):
        r = self.run_etherctl(edge, "--json", "status", self.site, check=False)
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError:
            return {}


class Path:
    """Who talks to whom, and what is set for the path's turn (and undone after it); client_cpu:
    the CPU that the iperf3 clients are pinned to (tweak pin), None for the scheduler's choice."""

    def __init__(self, name, ends, setup=None, teardown=None, client_cpu=None):
        self.name, self.ends, self.setup, self.teardown = name, ends, setup, teardown
        self.client_cpu = client_cpu


def limit_settings(on):
    """TSO/GSO off on both edges' WAN ends (either may send), GRO on both (either may receive);
    the router's ends without TSO, so that the veth hands frames to the edge's NAPI (GRO)."""
    def apply(_lab):
        for edge in ("edge1", "edge2"):
            ethtool(edge, "eth0", "tso", "off" if on else "on", "gso", "off" if on else "on",
                    "gro", "on" if on else "off")
            ethtool("router", ROUTER[edge][0], "tso", "off" if on else "on")
    return apply


def both_edges(*args):
    for edge in ("edge1", "edge2"):
        nsexec(edge, *args)


def sysfs(path, value):
    """Writes /sys/class/net/<path> in both edges (`ip netns exec` mounts their own sysfs)."""
    both_edges("sh", "-c", f"for f in /sys/class/net/{path}; do echo {value} > $f; done")


def dp_tool_apply(tool, *flags):
    for edge, other in (("edge1", "edge2"), ("edge2", "edge1")):
        nsexec(edge, tool, "apply", "dcx", WAN[edge], WAN[other], "eth0", "--clamp-mss", *flags)


# Tweaks on top of the etherip path, for finding what each piece of the design gives; a path
# "etherip+a+b" applies a then b for its turn, and undoes them in reverse order.
#   old      the datapath before issue 18 (--old-dp-tool: its dp_tool loads the old programs)
#            with the old link settings: no GRO on dcx, TSO on eip-dcx, one queue each
#   gro      GRO on dcx and TSO off on eip-dcx (the issue's hand test, for "old")
#   xps      one transmit queue per CPU on eip-dcx, CPU i's frames to queue i (by hand, for
#            "old"; the new decap program picks the queue itself)
#   rps      RPS on dcx over every CPU (the bridge and beyond run where the inner flow hashes)
#   threaded threaded NAPI on dcx (GRO and what follows run in a kernel thread per queue)
#   nocsum   transmit checksum offload off on dcx (checksums filled in before encapsulation,
#            the default before it was on for IPv4 outers)
#   port     the fast path with encapsulation at dcx's own TC egress (etherip_encap_port: straight
#            to the WAN device, no dcx -> eip-dcx crossing), set by dp_tool (not in the site schema)
#   vmseg    TSO and GSO off in both VMs, so that the bridge gets MTU-sized frames, not GSO skbs
#            (the port program can take only those: TC egress runs before segmentation)
#   wannapi  the WAN veths hand received packets to NAPI instead of the backlog (GRO on the edges'
#            ends, TSO off on the router's), as the limit path's settings do and as a NIC
#            receives; GRO itself has nothing to coalesce in protocol 97
#   rss1     the WAN ends of both edges hand every received packet to CPU 0 (RPS), as a NIC's
#            RSS does with all of a tunnel's packets (no ports in protocol 97)
#   pin      the iperf3 clients (the sending VM's process) pinned to CPU 0
#   vmrps    with pin: the edges' VM ports hand what they receive to CPU 1 (RPS), so that one
#            stream is handed over once per GSO skb (64 KB from the VM's TSO) and everything
#            after the VM's own transmit (bridge, segmentation, tunnel, WAN, router, receiving
#            edge) runs on the CPU that the sender does not use: the pipelining across both CPUs
#            that a hand-over per GSO skb inside the datapath could at best give
def tweak(name, lab):
    cpus = os.cpu_count() or 1
    all_cpus = format((1 << cpus) - 1, "x")
    if name == "old":
        def on():
            dp_tool_apply(lab.old_dp_tool)
            both_edges("ethtool", "-K", "dcx", "gro", "off")
            both_edges("ethtool", "-K", "eip-dcx", "tso", "on")
            for dev in ("dcx", "eip-dcx"):
                both_edges("ethtool", "-L", dev, "rx", "1", "tx", "1")

        def off():
            dp_tool_apply(lab.dp_tool)
        return on, off
    if name == "gro":
        return (lambda: (both_edges("ethtool", "-K", "dcx", "gro", "on"),
                         both_edges("ethtool", "-K", "eip-dcx", "tso", "off")),
                lambda: None)
    if name == "xps":
        def on():
            for dev in ("dcx", "eip-dcx"):
                both_edges("ethtool", "-L", dev, "rx", str(cpus), "tx", str(cpus))
            for q in range(cpus):
                sysfs(f"eip-dcx/queues/tx-{q}/xps_cpus", format(1 << q, "x"))

        def off():
            for q in range(cpus):
                sysfs(f"eip-dcx/queues/tx-{q}/xps_cpus", "0")
        return on, off
    if name == "rps":
        return (lambda: sysfs("dcx/queues/rx-*/rps_cpus", all_cpus),
                lambda: sysfs("dcx/queues/rx-*/rps_cpus", "0"))
    if name == "threaded":
        return lambda: sysfs("dcx/threaded", "1"), lambda: sysfs("dcx/threaded", "0")
    if name == "nocsum":
        # Undone by etherctl itself: `ethtool -K dcx tx on` would turn on every transmit
        # checksum offload (tx-checksum-sctp too), which etherctl rightly reports as drift.
        return (lambda: both_edges("ethtool", "-K", "dcx", "tx", "off"),
                lambda: lab.apply_all(lab.site))
    if name == "rss1":
        return (lambda: sysfs("eth0/queues/rx-0/rps_cpus", "1"),
                lambda: sysfs("eth0/queues/rx-0/rps_cpus", "0"))
    if name == "fast":
        return lambda: lab.apply_all(lab.site_fast), lambda: lab.apply_all(lab.site)
    if name == "port":
        def port_on():
            dp_tool_apply(lab.dp_tool, "--fast-path", "--port-encap")
        return port_on, lambda: lab.apply_all(lab.site)
    if name == "wannapi":
        def wan_napi(on):
            for edge in ("edge1", "edge2"):
                ethtool(edge, "eth0", "gro", "on" if on else "off")
                ethtool("router", ROUTER[edge][0], "tso", "off" if on else "on")
        return lambda: wan_napi(True), lambda: wan_napi(False)
    if name == "pin":
        return lambda: None, lambda: None
    if name == "vmrps":
        other = format(1 << (1 % cpus), "x")
        return (lambda: sysfs("eth1/queues/rx-*/rps_cpus", other),
                lambda: sysfs("eth1/queues/rx-*/rps_cpus", "0"))
    if name == "vmseg":
        def vm_offloads(state):
            for vm in ("vm1", "vm2"):
                ethtool(vm, "eth0", "tso", state, "gso", state)
        return lambda: vm_offloads("off"), lambda: vm_offloads("on")
    raise SystemExit(f"unknown tweak {name}")


VM_ENDS = {"dc1": ("vm1", VM_IP["vm1"]), "dc2": ("vm2", VM_IP["vm2"])}


def make_path(name, lab):
    if name == "limit":
        return Path("limit", {"dc1": ("edge1", WAN["edge1"]), "dc2": ("edge2", WAN["edge2"])},
                    limit_settings(True), limit_settings(False))
    if name == "vxlan":
        return Path("vxlan", {"dc1": ("vx1", VM_IP["vx1"]), "dc2": ("vx2", VM_IP["vx2"])})
    base, *tweaks = name.split("+")
    if base != "etherip":
        raise SystemExit(f"unknown path {name}: etherip[+tweak...], limit or vxlan")
    steps = [tweak(t, lab) for t in tweaks]

    def setup(_lab):
        for on, _ in steps:
            on()

    def teardown(_lab):
        for _, off in reversed(steps):
            off()
    return Path(name, VM_ENDS, setup, teardown, client_cpu="0" if "pin" in tweaks else None)


def finish(path, lab):
    """Undoes the path's settings and checks that the tunnel is back to etherctl's own."""
    if path.teardown:
        path.teardown(lab)
    lab.check_no_drift(path.name)


def cpu_times():
    """Per CPU (busy, total) jiffies from /proc/stat; index 0 is the sum."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            out.append((sum(v) - idle, sum(v)))
    return out


def iperf(path, streams, direction, seconds, wrap=None):
    """N client/server pairs at once; returns (bits/s, busy CPU s, per-CPU busy shares)."""
    src, dst = direction.split("-")
    snode, _ = path.ends[src]
    dnode, daddr = path.ends[dst]
    servers = [subprocess.Popen(["ip", "netns", "exec", ns(dnode), "iperf3", "-s", "-1", "-p",
                                 str(BASE_PORT + i)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(streams)]
    time.sleep(0.4)
    wrapper = wrap.start() if wrap else None
    before, t0 = cpu_times(), time.monotonic()
    pin = ["taskset", "-c", path.client_cpu] if path.client_cpu else []
    clients = [subprocess.Popen(pin + ["ip", "netns", "exec", ns(snode), "iperf3", "-c", daddr,
                                       "-p", str(BASE_PORT + i), "-t", str(seconds), "-J"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i in range(streams)]
    outs = [c.communicate(timeout=seconds + 60) for c in clients]
    after, t1 = cpu_times(), time.monotonic()
    if wrapper:
        wrap.stop(wrapper)
    for s in servers:
        try:
            s.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.kill()
    bits = 0.0
    for out, err in outs:
        try:
            bits += json.loads(out)["end"]["sum_received"]["bits_per_second"]
        except (json.JSONDecodeError, KeyError):
            raise SystemExit(f"iperf3 {path.name} {direction}: {err or out[-500:]}")
    hz = os.sysconf("SC_CLK_TCK")
    busy = (after[0][0] - before[0][0]) / hz
    shares = [(a[0] - b[0]) / max(1, a[1] - b[1]) for a, b in zip(after[1:], before[1:])]
    gbit = bits * (t1 - t0) / 1e9
    return bits, busy / gbit if gbit else float("nan"), shares


class Perf:
    def __init__(self, out):
        self.out = out

    def start(self):
        return subprocess.Popen(["perf", "record", "-a", "-g", "-o", self.out],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, proc):
        proc.send_signal(2)
        proc.wait(timeout=120)


# Per-packet steps: every pass through a backlog or NAPI, every device transmit, every IP
# receive and forward, every segmentation.
STEP_EVENTS = ["net:netif_rx", "net:napi_gro_receive_entry", "net:netif_receive_skb",
               "net:net_dev_xmit", "skb:skb_copy_datagram_iovec", "fib:fib_table_lookup"]


class Steps:
    def __init__(self, out):
        self.out = out

    def start(self):
        args = ["perf", "stat", "-a", "-x", ",", "-o", self.out]
        for e in STEP_EVENTS:
            args += ["-e", e]
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self, proc):
        proc.send_signal(2)
        proc.wait(timeout=60)


def parse_case(text, lab):
    path, streams, direction = text.split(":")
    if direction not in DIRECTIONS:
        raise SystemExit(f"bad case {text}: PATH:STREAMS:{'|'.join(DIRECTIONS)}")
    return make_path(path, lab), int(streams), direction


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--etherctl", default="build/cmd/etherctl/etherctl")
    parser.add_argument("--dp-tool", default="build/tests/datapath/dp_tool",
                        help="the same build's dp_tool (tweaks of the etherip path)")
    parser.add_argument("--old-dp-tool", help="dp_tool of the datapath to compare with (tweak old)")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", default="1,2,4")
    parser.add_argument("--paths", default="etherip,limit,vxlan")
    parser.add_argument("--directions", default=",".join(DIRECTIONS))
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--profile", help="PATH:STREAMS:DIRECTION under perf record -a -g")
    parser.add_argument("--perf-out", default=".", help="directory for --profile's files")
    parser.add_argument("--steps", help="PATH:STREAMS:DIRECTION: tracepoint counts per packet")
    parser.add_argument("--hold", action="store_true",
                        help="only build the lab and keep it until SIGTERM or SIGINT")
    args = parser.parse_args()
    if args.hold:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    lab = Lab(os.path.abspath(args.etherctl), os.path.abspath(args.dp_tool),
              os.path.abspath(args.old_dp_tool) if args.old_dp_tool else None)
    try:
        lab.up()
        if args.hold:
            print(f"lab up: namespaces {PREFIX}-*; SIGTERM (kill {os.getpid()}) tears it down",
                  flush=True)
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
            return 0
        if args.profile:
            path, streams, direction = parse_case(args.profile, lab)
            os.makedirs(args.perf_out, exist_ok=True)
            data = os.path.join(args.perf_out, f"{path.name}-{streams}-{direction}.data")
            if path.setup:
                path.setup(lab)
            bits, cpu, shares = iperf(path, streams, direction, args.seconds, Perf(data))
            finish(path, lab)
            report = sh("perf", "report", "-i", data, "--no-children", "--sort", "sym",
                        "--stdio", "-g", "none", "--percent-limit", "0.7", timeout=600)
            with open(data[:-5] + ".txt", "w") as f:
                f.write(report)
            print(f"{path.name} {streams} {direction}: {bits / 1e9:.2f} Gbit/s under perf; "
                  f"report {data[:-5]}.txt")
            return 0
        if args.steps:
            path, streams, direction = parse_case(args.steps, lab)
            out = os.path.join(lab.tmp, "steps.csv")
            if path.setup:
                path.setup(lab)
            bits, cpu, shares = iperf(path, streams, direction, args.seconds, Steps(out))
            finish(path, lab)
            # Full segments delivered: MSS less 12 bytes of TCP timestamps (EtherIP: 1424).
            payload = {"limit": 1448, "vxlan": 1398}
            packets = bits * args.seconds / 8 / payload.get(path.name, 1412)
            print(f"{path.name} {streams} {direction}: {bits / 1e9:.2f} Gbit/s, about "
                  f"{packets / 1e6:.2f} M full segments")
            with open(out) as f:
                for line in f:
                    parts = line.strip().split(",")
                    if len(parts) > 2 and parts[0].replace(".", "").isdigit():
                        print(f"  {parts[2]:<32} {int(float(parts[0])):>12}  "
                              f"{float(parts[0]) / packets:6.2f} per segment")
            return 0

        paths = [make_path(p, lab) for p in args.paths.split(",")]
        streams = [int(s) for s in args.streams.split(",")]
        directions = args.directions.split(",")
        runs = []
        for rnd in range(args.rounds):
            for path in paths:
                if path.setup:
                    path.setup(lab)
                for n in streams:
                    for d in directions:
                        bits, cpu, shares = iperf(path, n, d, args.seconds)
                        runs.append({"round": rnd, "path": path.name, "streams": n,
                                     "direction": d, "bits": bits, "cpu_s_per_gbit": cpu,
                                     "cpu_shares": shares})
                        print(f"round {rnd + 1} {path.name:<13} {n} {d}: {bits / 1e9:6.2f} "
                              f"Gbit/s {cpu:5.2f} CPU s/Gbit  CPUs busy "
                              + " ".join(f"{s * 100:3.0f}%" for s in shares), flush=True)
                finish(path, lab)
        for edge in ("edge1", "edge2"):
            status = lab.counters(edge)
            print(f"{edge} status: {json.dumps(status)[:600]}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(runs, f, indent=1)
        summarize(runs, paths, streams, directions)
    finally:
        lab.down()
    return 0


def summarize(runs, paths, streams, directions):
    def median(path, n, d, key):
        return statistics.median(r[key] for r in runs
                                 if r["path"] == path and r["streams"] == n and r["direction"] == d)

    names = [p.name for p in paths]
    print()
    print("| path | streams | direction | Gbit/s | vs limit | vs VXLAN | vs 1 stream | "
          "CPU s/Gbit | CPUs busy |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for name in names:
        for n in streams:
            for d in directions:
                g = median(name, n, d, "bits") / 1e9
                lim = median("limit", n, d, "bits") / 1e9 if "limit" in names else None
                vx = median("vxlan", n, d, "bits") / 1e9 if "vxlan" in names else None
                one = median(name, 1, d, "bits") / 1e9 if 1 in streams else None
                shares = [statistics.median(r["cpu_shares"][i] for r in runs
                                            if r["path"] == name and r["streams"] == n
                                            and r["direction"] == d)
                          for i in range(len(runs[0]["cpu_shares"]))]
                print(f"| {name} | {n} | {d} | {g:.2f} | "
                      f"{f'{g / lim:.2f}×' if lim else '–'} | {f'{g / vx:.2f}×' if vx else '–'} | "
                      f"{f'{g / one:.2f}×' if one else '–'} | "
                      f"{median(name, n, d, 'cpu_s_per_gbit'):.2f} | "
                      + " / ".join(f"{s * 100:.0f}%" for s in shares) + " |")


if __name__ == "__main__":
    sys.exit(main())
