#!/usr/bin/python3
"""From an FDB move to new IPVS weights, with `etherctl watch` running (issue 5, "Performance").

IPVS is not in this machine's kernel, so the measurement runs in the stock-kernel VM
(tests/vm/vm-run, qemu TCG: an emulated CPU several times slower than the host, so these are
upper bounds). Inside, in a throwaway namespace with the shape of an edge (a VLAN group bridging
a server port and an EtherIP tunnel, a pool of three members whose neighbour entries are known),
the agent runs; then, --moves times, one member's MAC is moved between the server port and the
tunnel port (`bridge fdb replace ... static`, as learning does when a VM migrates), and the
benchmark times:

  * latency: from just before the `bridge` command until /proc/net/ip_vs (read in a tight loop,
    ~0.1 ms a read) shows the member's new weight (0 when it went remote, its configured weight
    when it came back);
  * the agent's own reconcile time for that move (from its log);
  * for comparison, in the same run, the cron path: the same move followed by one
    `etherctl apply` (what a timer would run, without the timer's wait).

Run as root:  /usr/bin/python3 bench/location_latency.py [--kernel 6.12] [--moves 40]
(--inner is the part that runs in the guest.)
"""
import argparse
import ctypes
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
VM_RUN = os.path.join(ROOT, "tests", "vm", "vm-run")
CLONE_NEWNET = 0x40000000

MACS = {"10.1.0.21": "02:00:00:00:00:21", "10.1.0.22": "02:00:00:00:00:22",
        "10.1.0.23": "02:00:00:00:00:23"}
SITE = {
    "etherctl": 1,
    "devices": {
        "dc1": {
            "vlans": {"wan": {"interface": "wan0"}, "servers": {"interface": "servers"}},
            "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
            "self_ips": {"wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                         "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"}},
            "pools": {"web": {
                "virtual": {"address": "192.0.2.10", "port": 80, "vlan": "wan"},
                "members": {"10.1.0.21:80": {}, "10.1.0.22:80": {"weight": 2},
                            "10.1.0.23:80": {"weight": 3}},
                "monitor": {"type": "virtual_location", "interval": 5,
                            "min_active_members": 1}}},
        },
        "dc2": {"vlans": {"wan": {"interface": "wan0"}},
                "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}},
    },
    "tunnels": {"dcx": {"profile": "etherip",
                        "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}},
}


def sh(*args):
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def ipvs_weight(member_hex):
    """The weight of the real server `member_hex` (ADDR:PORT as /proc/net/ip_vs prints it)."""
    with open("/proc/net/ip_vs") as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 4 and fields[0] == "->" and fields[1] == member_hex:
                return int(fields[3])
    return None


def hex_endpoint(address, port):
    a = bytes(int(x) for x in address.split("."))
    return f"{a.hex().upper()}:{port:04X}"


def inner(args):
    ns = f"eclat-{os.getpid()}"
    tmp = tempfile.mkdtemp()
    site_path = os.path.join(tmp, "site.json")
    with open(site_path, "w") as f:
        json.dump(SITE, f)
    env = dict(os.environ, ETHERCTL_LOCK_DIR=os.path.join(tmp, "run"))
    sh("ip", "netns", "add", ns)
    # This process moves into the namespace, so that /proc/net/ip_vs is the namespace's.
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)  # os.setns needs Python 3.12; Debian 12 has 3.11
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    agent = None
    try:
        sh("ip", "link", "set", "lo", "up")
        for a, b in (("wan0", "wan0-peer"), ("servers", "servers-peer")):
            sh("ip", "link", "add", a, "type", "veth", "peer", "name", b)
        etherctl = [args.etherctl, "--device", "dc1"]
        subprocess.run(etherctl + ["apply", site_path], check=True, capture_output=True, env=env)
        for address, mac in MACS.items():
            sh("ip", "neigh", "replace", address, "lladdr", mac, "dev", "vmotion", "nud",
               "permanent")
            sh("bridge", "fdb", "replace", mac, "dev", "servers", "master", "static")
        subprocess.run(etherctl + ["apply", site_path], check=True, capture_output=True, env=env)

        member = hex_endpoint("10.1.0.22", 80)
        mac = MACS["10.1.0.22"]
        configured = 2

        def move(port):
            t0 = time.monotonic()
            sh("bridge", "fdb", "replace", mac, "dev", port, "master", "static")
            return t0, time.monotonic()

        def wait_weight(weight, since, limit=30.0):
            reads = 0
            while True:
                reads += 1
                if ipvs_weight(member) == weight:
                    return time.monotonic() - since, reads
                if time.monotonic() - since > limit:
                    raise RuntimeError(f"weight {weight} not seen after {limit} s")

        # The cron path first, without the agent: move, then one apply.
        cron = []
        for i in range(args.moves // 2):
            port, weight = ("dcx", 0) if i % 2 == 0 else ("servers", configured)
            t0, _ = move(port)
            subprocess.run(etherctl + ["apply", site_path], check=True, capture_output=True,
                           env=env)
            cron.append(wait_weight(weight, t0)[0])
        if ipvs_weight(member) != configured:
            move("servers")
            subprocess.run(etherctl + ["apply", site_path], check=True, capture_output=True,
                           env=env)

        log = []
        agent = subprocess.Popen(etherctl + ["watch", "--listen", "none", site_path],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 env=env)
        threading.Thread(target=lambda: log.extend(agent.stderr), daemon=True).start()
        deadline = time.monotonic() + 60
        while not any("watching device" in line for line in log):
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError("agent did not start:\n" + "".join(log))
            time.sleep(0.05)
        time.sleep(2)

        watch, command, reconcile = [], [], []
        for i in range(args.moves):
            port, weight = ("dcx", 0) if i % 2 == 0 else ("servers", configured)
            before = len(log)
            t0, t1 = move(port)
            latency, _ = wait_weight(weight, t0)
            watch.append(latency)
            command.append(t1 - t0)
            time.sleep(0.3)  # let the agent's log line arrive and the system settle
            for line in log[before:]:
                m = re.search(r"reconcile \(kernel event\): \d+ changes? in (\d+) ms", line)
                if m:
                    reconcile.append(int(m.group(1)) / 1000)
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
        print(json.dumps({"kernel": platform.release(), "moves": args.moves, "watch": watch,
                          "bridge_command": command, "reconcile": reconcile, "cron": cron}))
    finally:
        if agent and agent.poll() is None:
            agent.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def ms(values, q=None):
    v = sorted(values)
    if q is None:
        return f"{1000 * statistics.median(v):.0f}"
    return f"{1000 * v[min(len(v) - 1, int(q * len(v)))]:.0f}"


def outer(args):
    cmd = [VM_RUN, "--kernel", args.kernel, "--timeout", "900", "--", "/usr/bin/python3",
           os.path.abspath(__file__), "--inner", "--etherctl", os.path.abspath(args.etherctl),
           "--moves", str(args.moves)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    result = None
    for line in r.stdout.splitlines():
        if line.startswith("{") and '"watch"' in line:
            result = json.loads(line)
    if r.returncode != 0 or result is None:
        sys.stderr.write(r.stdout[-4000:] + r.stderr[-4000:])
        return 1
    print(f"## FDB move -> IPVS weight ({result['kernel']} in qemu TCG on {platform.node()}, "
          f"{os.cpu_count()} host CPUs; {result['moves']} moves)\n")
    print("| path | n | median ms | p90 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    result["after_command"] = [w - c for w, c in zip(result["watch"], result["bridge_command"])]
    for name, key in (("watch: `bridge fdb replace` starts -> weight in /proc/net/ip_vs", "watch"),
                      ("  the `bridge fdb replace` command itself", "bridge_command"),
                      ("  from the command's end -> weight (upper bound of the agent's part)",
                       "after_command"),
                      ("  agent's reconcile (its log)", "reconcile"),
                      ("cron path: move, then one `etherctl apply`", "cron")):
        v = result[key]
        if v:
            print(f"| {name} | {len(v)} | {ms(v)} | {ms(v, 0.9)} | {1000 * max(v):.0f} |")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--etherctl", default=os.path.join(ROOT, "build", "cmd", "etherctl", "etherctl"))
    ap.add_argument("--kernel", default="6.12")
    ap.add_argument("--moves", type=int, default=40)
    ap.add_argument("--inner", action="store_true")
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return 0
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
