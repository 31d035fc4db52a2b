#!/usr/bin/python3
"""TCP throughput of the EtherIP tunnel with IPsec, without it, and of in-kernel VXLAN over the
same IPsec, in one run (issue 12).

Needs ESP in the kernel, so it runs in the stock-kernel VM (this machine's kernel has none):

  ETHERCTL_VM_CACHE=/var/cache/etherctl-vm-ipsec /work/tools/quiet tests/vm/vm-run \
      --kernel 6.12 --timeout 1200 -- /usr/bin/python3 bench/ipsec_throughput.py \
      --etherctl build/cmd/etherctl/etherctl [--seconds 4] [--rounds 3] [--json FILE]

The lab is the one of tests/e2e/test_ipsec.py: examples/two-dc (edge hosts behind a 1500-byte
WAN router, a VM on each side's hypervisor bridge), etherctl applied on both edges, each edge
with its own charon (tests/support/charon.py). Beside it, as in bench/datapath_throughput.py, a
VXLAN twin: a VM namespace vxN on each edge's eth2, a bridge with a VXLAN device between the same
two WAN addresses (UDP 4789, source port 4789 too), and a transport-mode ESP SA for UDP 4789
between the edges, configured by hand in the same charons with the same proposals as etherctl's
default (IKE aes256gcm16-prfsha384-ecp384, ESP aes256gcm16-ecp384). Paths:

  etherip              VM to VM through etherctl's tunnel without "ipsec" (default settings)
  etherip+ipsec        the same tunnel with "ipsec": {"psk_file": ...}, etherctl's defaults
                       (transport mode, AES-256-GCM); etherctl clamps the MSS to 1424 as without
                       IPsec, so every full segment's ESP packet (1536 bytes) is fragmented
  etherip+ipsec+fit    the same with both VMs advertising MSS 1390 (their route's advmss): every
                       ESP packet fits the 1500-byte WAN
  vxlan+ipsec          VM to VM through in-kernel VXLAN with its ESP SA, MSS 1376 (fits, like
                       +fit), TSO and GSO off on the VXLAN device: with them on, the kernel
                       drops GSO VXLAN packets on their way into transport-mode ESP
                       (SKB_BAD_GSO, 6.12 with esp4_offload loaded) and TCP crawls at 1-3 Mbit/s.
                       Measured while etherctl's tunnel has no "ipsec", because with "ipsec"
                       etherctl's decap program takes every ESP packet from the peer address
                       through its own receive path (lib/datapath/README.md, "IPsec")
  vxlan                a second VXLAN pair without ESP (the SA covers UDP 4789 only; this one
                       uses port 4790), MSS 1410 (fits), offloads as the kernel sets them

The tunnel is switched between with and without "ipsec" by `etherctl apply` of the two site
files (charon negotiates anew each time); each round runs the paths of one state, switches, then
the other's, the order alternating between rounds, so a three-round run switches three times.
Each run is one iperf3 TCP stream for --seconds, in each direction (dc1-dc2: the dc1 VM sends);
the figures are medians over the rounds. Per run: CPU seconds per gigabit from the guest's
/proc/stat (busy = all but idle and iowait), the bytes the sender edge's outbound ESP SAs
carried per TCP payload byte (0 for the clear paths: the traffic was really encrypted or not),
the share of the sending VM's TCP segments that the sender edge fragmented on the WAN, and
iperf3's retransmits.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", "tests", "e2e"),
                os.path.join(HERE, "..", "tests", "support")]
import charon as charon_mod  # noqa: E402
import test_two_dc as two_dc  # noqa: E402
from datapath_throughput import cpu_times  # noqa: E402
from test_ipsec import xfrm_available  # noqa: E402
from test_two_dc import VM_IP, run  # noqa: E402

DCS = ("dc1", "dc2")
DIRECTIONS = ("dc1-dc2", "dc2-dc1")
WAN = {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}
VX_IP = {"dc1": "10.2.0.21", "dc2": "10.2.0.22"}
PORT = 5201
IKE_PROPOSAL = "aes256gcm16-prfsha384-ecp384"  # etherctl's defaults (lib/model/ipsec.hpp)
ESP_PROPOSAL = "aes256gcm16-ecp384"


class Path:
    """ends: {dc: (namespace node, address)}; state: the tunnel's ("clear" or "ipsec");
    advmss: the MSS both VMs advertise (None: the route's default, etherctl clamps)."""

    def __init__(self, name, ends, state, advmss=None):
        self.name, self.ends, self.state, self.advmss = name, ends, state, advmss


VMS = {"dc1": ("vm1", VM_IP["vm1"]), "dc2": ("vm2", VM_IP["vm2"])}
VXS = {"dc1": ("vx1", VX_IP["dc1"]), "dc2": ("vx2", VX_IP["dc2"])}
VXS_CLEAR = {"dc1": ("vy1", "10.3.0.21"), "dc2": ("vy2", "10.3.0.22")}
PATHS = {
    "etherip": Path("etherip", VMS, "clear"),
    "etherip+ipsec": Path("etherip+ipsec", VMS, "ipsec"),
    "etherip+ipsec+fit": Path("etherip+ipsec+fit", VMS, "ipsec", advmss=1390),
    "vxlan+ipsec": Path("vxlan+ipsec", VXS, "clear", advmss=1376),
    "vxlan": Path("vxlan", VXS_CLEAR, "clear", advmss=1410),
}


def site(psk_file=None):
    with open(two_dc.SITE) as f:
        s = json.load(f)
    if psk_file:
        s["tunnels"]["dcx"]["ipsec"] = {"psk_file": psk_file}
    return s


class Bench:
    def __init__(self):
        self.lab = two_dc.Lab()
        self.charons = {}
        self.extra_ns = []
        self.sites = {}
        self.state = None

    def up(self):
        lab = self.lab
        lab.up()
        psk = os.path.join(lab.tmp, "dcx.psk")
        with open(os.open(psk, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(os.urandom(36).hex() + "\n")
        for state, key in (("clear", None), ("ipsec", psk)):
            self.sites[state] = os.path.join(lab.tmp, f"site-{state}.json")
            with open(self.sites[state], "w") as f:
                json.dump(site(key), f, indent=1)
        for dc in DCS:
            c = charon_mod.Charon(lab.ns(f"{dc}-edge"), os.path.join(lab.tmp, f"{dc}-ipsec"))
            c.start()
            self.charons[dc] = c
            lab.dc_env[dc] = c.env()
        self.switch("clear")
        self.add_vxlan("vx", VXS, "4789", 42, gso_off=True)
        self.add_vxlan("vy", VXS_CLEAR, "4790", 43, gso_off=False)
        self.add_vxlan_sa()
        for ends in (VMS, VXS, VXS_CLEAR):
            self.wait_ping(ends["dc1"][0], ends["dc2"][1])

    def down(self):
        for c in self.charons.values():
            c.stop()
        self.lab.down()
        for name in self.extra_ns:
            run("ip", "netns", "del", name, check=False)

    def switch(self, state):
        """Apply the site file with or without "ipsec" on both edges; with it, dc2's apply
        waits until the SAs are up (dc1's cannot: its peer is not configured yet)."""
        self.lab.site = self.sites[state]
        t0 = time.monotonic()
        for dc in DCS:
            extra = ["--ipsec-wait", "0" if dc == "dc1" else "60s"] if state == "ipsec" else []
            r = self.lab.etherctl(dc, *extra, "apply", check=False, timeout=180)
            if r.returncode not in (0, 4 if state == "ipsec" and dc == "dc1" else 0):
                raise SystemExit(f"apply ({state}) on {dc}-edge exited {r.returncode}:\n"
                                 f"{r.stdout}{r.stderr}\n{self.charons[dc].log_text()[-2000:]}")
        self.wait_ping("vm1", VM_IP["vm2"])
        print(f"tunnel {state}: applied on both edges and pinging in {time.monotonic() - t0:.1f} s",
              flush=True)
        self.state = state

    def add_vxlan(self, prefix, ends, port, vni, gso_off):
        """A VM namespace on each edge, its port and a VXLAN device in one bridge."""
        lab = self.lab
        for dc, other in (("dc1", "dc2"), ("dc2", "dc1")):
            node, addr = ends[dc]
            vm, edge = lab.ns(node), lab.ns(f"{dc}-edge")
            run("ip", "netns", "add", vm)
            self.extra_ns.append(vm)
            run("ip", "-n", vm, "link", "set", "lo", "up")
            run("ip", "link", "add", f"{prefix}port", "netns", edge, "type", "veth", "peer",
                "name", "eth0", "netns", vm)
            run("ip", "-n", vm, "addr", "add", f"{addr}/24", "dev", "eth0")
            run("ip", "-n", vm, "link", "set", "eth0", "up")
            # Source port = destination port: the ESP SA's selectors name UDP 4789 both ways.
            run("ip", "-n", edge, "link", "add", f"{prefix}0", "type", "vxlan", "id", str(vni),
                "local", WAN[dc], "remote", WAN[other], "dstport", port, "srcport", port,
                str(int(port) + 1))
            run("ip", "-n", edge, "link", "add", f"{prefix}br", "type", "bridge", "stp_state", "0",
                "forward_delay", "0")
            for dev in (f"{prefix}0", f"{prefix}port"):
                run("ip", "-n", edge, "link", "set", dev, "master", f"{prefix}br", "up")
            run("ip", "-n", edge, "link", "set", f"{prefix}br", "up")
            if gso_off:
                # GSO VXLAN packets over transport-mode ESP are dropped (SKB_BAD_GSO at
                # __dev_queue_xmit, seen on 6.12 with esp4_offload loaded, which etherctl's
                # IPsec needs): segment before the VXLAN device, as a user must.
                run("ip", "netns", "exec", edge, "ethtool", "-K", f"{prefix}0", "tso", "off",
                    "gso", "off")

    def add_vxlan_sa(self):
        """A transport-mode ESP SA for UDP 4789 between the edges, by hand, in the same charons
        (its own IKE identities, so that charon never confuses it with etherctl's connection),
        initiated once from dc1 (no trap policies: two acquires racing from both ends would
        leave duplicate SAs). Loaded while etherctl has no connection loaded: `swanctl
        --load-all` unloads what its files do not name."""
        secret = os.urandom(32).hex()
        for dc, other in (("dc1", "dc2"), ("dc2", "dc1")):
            c = self.charons[dc]
            with open(os.path.join(c.dir, "conf.d", "bench-vxlan.conf"), "w") as f:
                f.write(f"""connections {{
  bench-vxlan {{
    version = 2
    local_addrs = {WAN[dc]}
    remote_addrs = {WAN[other]}
    proposals = {IKE_PROPOSAL}
    local {{ auth = psk
             id = vxlan@{dc} }}
    remote {{ auth = psk
              id = vxlan@{other} }}
    children {{
      vxlan {{
        mode = transport
        local_ts = {WAN[dc]}/32[udp/4789]
        remote_ts = {WAN[other]}/32[udp/4789]
        esp_proposals = {ESP_PROPOSAL}
      }}
    }}
  }}
}}
secrets {{ ike-vxlan {{ id-a = vxlan@dc1
                       id-b = vxlan@dc2
                       secret = 0x{secret} }} }}
""")
            c.load_all()
        self.charons["dc1"].swanctl("--initiate", "--child", "vxlan", "--timeout", "60")

    def wait_ping(self, node, addr):
        for _ in range(60):
            if self.lab.exec(node, "ping", "-c1", "-W1", addr, check=False).returncode == 0:
                return
            time.sleep(0.5)
        raise SystemExit(f"{node} cannot reach {addr}")

    def set_advmss(self, path):
        for node, addr in path.ends.values():
            net = addr.rsplit(".", 1)[0] + ".0/24"
            extra = ["advmss", str(path.advmss)] if path.advmss else []
            run("ip", "-n", self.lab.ns(node), "route", "change", net, "dev", "eth0", "proto",
                "kernel", "scope", "link", "src", addr, *extra)

    def snmp(self, node):
        """{(section, field): value} of /proc/net/snmp in node's namespace."""
        lines = self.lab.exec(node, "cat", "/proc/net/snmp").stdout.splitlines()
        out = {}
        for names, values in zip(lines[::2], lines[1::2]):
            section = names.split(":")[0]
            for k, v in zip(names.split()[1:], values.split()[1:]):
                out[(section, k)] = int(v)
        return out

    def esp_out_bytes(self, dc):
        """Bytes the edge's outbound ESP SAs have carried (`ip -s xfrm state`, parsed here and
        never printed: it holds the keys)."""
        text = run("ip", "-n", self.lab.ns(f"{dc}-edge"), "-s", "xfrm", "state").stdout
        total = 0
        for block in re.split(r"^(?=src )", text, flags=re.M):
            if block.startswith(f"src {WAN[dc]} ") and "proto esp" in block:
                m = re.search(r"lifetime current:\s*\n\s*(\d+)\(bytes\)", block)
                total += int(m.group(1)) if m else 0
        return total

    def iperf(self, path, direction, seconds):
        src, dst = direction.split("-")
        snode, sedge = path.ends[src][0], f"{src}-edge"
        dnode, daddr = path.ends[dst]
        server = self.lab.popen(dnode, "iperf3", "-s", "-1", "-p", str(PORT),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):  # Python and iperf3 start slowly under TCG
                if self.lab.exec(dnode, "ss", "-Hltn", f"sport = :{PORT}").stdout.strip():
                    break
                time.sleep(0.1)
            snmp_vm, snmp_edge, esp = self.snmp(snode), self.snmp(sedge), self.esp_out_bytes(src)
            before, t0 = cpu_times(), time.monotonic()
            r = self.lab.exec(snode, "iperf3", "-c", daddr, "-p", str(PORT), "-t", str(seconds),
                              "-J", check=False, timeout=seconds + 60)
            after, t1 = cpu_times(), time.monotonic()
            esp = self.esp_out_bytes(src) - esp
            segs = self.snmp(snode)[("Tcp", "OutSegs")] - snmp_vm[("Tcp", "OutSegs")]
            frags = self.snmp(sedge)[("Ip", "FragOKs")] - snmp_edge[("Ip", "FragOKs")]
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        try:
            end = json.loads(r.stdout)["end"]
            bits, sent = end["sum_received"]["bits_per_second"], end["sum_sent"]["bytes"]
            retransmits = end["sum_sent"].get("retransmits", 0)
        except (json.JSONDecodeError, KeyError):
            raise SystemExit(f"iperf3 {path.name} {direction}: {r.stderr or r.stdout[-500:]}")
        hz = os.sysconf("SC_CLK_TCK")
        busy = (after[0][0] - before[0][0]) / hz
        gbit = bits * (t1 - t0) / 1e9
        return {"bits": bits, "cpu_s_per_gbit": busy / gbit if gbit else float("nan"),
                "busy": busy / (t1 - t0) / max(1, len(after) - 1),
                "esp_per_byte": esp / sent if sent else 0.0,
                "fragmented": frags / segs if segs else 0.0, "retransmits": retransmits}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--etherctl", default=two_dc.ETHERCTL)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--directions", default=",".join(DIRECTIONS))
    parser.add_argument("--json", help="write every run's figures here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces, BPF, xfrm)")
    why = charon_mod.available() or xfrm_available()
    if why:
        raise SystemExit(why + ": run it in the stock-kernel VM (tests/vm/vm-run)")
    two_dc.ETHERCTL = os.path.abspath(args.etherctl)
    paths = [PATHS[p] for p in args.paths.split(",")]
    directions = args.directions.split(",")
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPU(s), etherctl {two_dc.ETHERCTL}",
          flush=True)
    bench = Bench()
    runs = []
    try:
        bench.up()
        for rnd in range(args.rounds):
            states = ("clear", "ipsec") if rnd % 2 == 0 else ("ipsec", "clear")
            for state in states:
                if bench.state != state:
                    bench.switch(state)
                for path in (p for p in paths if p.state == state):
                    bench.set_advmss(path)
                    for d in directions:
                        m = bench.iperf(path, d, args.seconds)
                        runs.append(dict(m, round=rnd, path=path.name, direction=d))
                        print(f"round {rnd + 1} {path.name:<18} {d}: "
                              f"{m['bits'] / 1e6:7.1f} Mbit/s "
                              f"{m['cpu_s_per_gbit']:6.1f} CPU s/Gbit  "
                              f"busy {m['busy'] * 100:3.0f}%  "
                              f"ESP bytes/byte {m['esp_per_byte']:.3f}  "
                              f"fragmented {m['fragmented'] * 100:3.0f}%  "
                              f"retransmits {m['retransmits']}", flush=True)
    finally:
        bench.down()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    summarize(runs, paths, directions)
    return 0


def summarize(runs, paths, directions):
    def values(name, d, key):
        return [r[key] for r in runs if r["path"] == name and r["direction"] == d]

    def median(name, d, key):
        return statistics.median(values(name, d, key))

    names = [p.name for p in paths]
    print()
    print("| path | direction | Mbit/s [min–max] | vs etherip | vs vxlan+ipsec | CPU s/Gbit | "
          "CPU busy | ESP bytes per TCP byte | segments fragmented | retransmits |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        for d in directions:
            mbit = median(name, d, "bits") / 1e6
            ratios = []
            for base in ("etherip", "vxlan+ipsec"):
                ratios.append(f"{mbit / (median(base, d, 'bits') / 1e6):.2f}×"
                              if base in names else "–")
            lo, hi = (min(values(name, d, "bits")) / 1e6, max(values(name, d, "bits")) / 1e6)
            print(f"| {name} | {d} | {mbit:.1f} [{lo:.1f}–{hi:.1f}] | {ratios[0]} | "
                  f"{ratios[1]} | {median(name, d, 'cpu_s_per_gbit'):.1f} | "
                  f"{median(name, d, 'busy') * 100:.0f}% | "
                  f"{median(name, d, 'esp_per_byte'):.3f} | "
                  f"{median(name, d, 'fragmented') * 100:.0f}% | "
                  f"{median(name, d, 'retransmits'):.0f} |")


if __name__ == "__main__":
    sys.exit(main())
