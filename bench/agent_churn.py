#!/usr/bin/python3
"""`etherctl watch` under churn and at rest (issue 5, section "Performance").

In a throwaway network namespace `ecchurn-<pid>` (always deleted) with the shape of one edge
(an adopted WAN and server port, a VLAN group bridging the server port with an EtherIP tunnel,
self IPs, a route), this benchmark starts `etherctl watch` and measures:

  * idle: the agent's CPU time (utime + stime from /proc/PID/stat) and wake-ups over --idle
    seconds with nothing happening, and its resident memory;
  * churn: for --minutes, once every --period seconds one change behind etherctl's back, in
    turn: delete an owned address, change the bridge MTU, take the server port out of the
    bridge, delete the owned route, delete the tunnel, plus FDB entries learned and moved on the
    bridge and foreign links added and removed; each change is timed until `ip -j` reads the
    namespace as before (repair latency);
  * memory: RSS and the agent's open file descriptors sampled every --sample seconds during the
    churn: first, last, max, and the slope of a least-squares line (KiB per hour).

Output: a Markdown report on stdout. Run as root:
  /usr/bin/python3 bench/agent_churn.py [--etherctl build/cmd/etherctl/etherctl]
                                        [--minutes 60] [--period 1] [--idle 60]
"""
import argparse
import datetime
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

SITE = {
    "etherctl": 1,
    "devices": {
        "dc1": {
            "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
            "vlan_groups": {"vmotion": {"members": ["servers", "dcx"], "mtu": 1500}},
            "self_ips": {"wan-self": {"address": "198.51.100.1/24", "vlan": "wan"},
                         "server-self": {"address": "10.1.0.1/24", "vlan": "vmotion"}},
            "routes": {"to-dc2": {"destination": "203.0.113.0/24", "gateway": "198.51.100.254"}},
        },
        "dc2": {"vlans": {"wan": {"interface": "eth0"}},
                "self_ips": {"wan-self": {"address": "203.0.113.1/24", "vlan": "wan"}}},
    },
    "tunnels": {"dcx": {"profile": "etherip",
                        "endpoints": {"dc1": "198.51.100.1", "dc2": "203.0.113.1"}}},
}


def sh(*args, check=True):
    r = subprocess.run(args, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def proc_stat(pid):
    """(utime + stime in seconds, RSS in KiB, voluntary context switches, fds)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = vcs = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("voluntary_ctxt_switches:"):
                vcs = int(line.split()[1])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return cpu, rss, vcs, fds


def slope_per_hour(samples):
    """Least-squares slope of (t seconds, value) in value per hour."""
    if len(samples) < 2:
        return 0.0
    ts = [t for t, _ in samples]
    vs = [v for _, v in samples]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    return 3600 * sum((t - mt) * (v - mv) for t, v in samples) / den if den else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--etherctl", default=os.path.join(ROOT, "build", "cmd", "etherctl", "etherctl"))
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--period", type=float, default=1.0)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--sample", type=float, default=10)
    args = ap.parse_args()

    ns = f"ecchurn-{os.getpid()}"
    tmp = tempfile.mkdtemp(prefix="etherctl-churn-")
    site_path = os.path.join(tmp, "site.json")
    with open(site_path, "w") as f:
        json.dump(SITE, f)
    env = dict(os.environ, ETHERCTL_LOCK_DIR=os.path.join(tmp, "run"))
    sh("ip", "netns", "add", ns)
    agent = None
    try:
        for a, b in (("eth0", "wan-peer"), ("eth1", "srv-peer")):
            sh("ip", "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        agent = subprocess.Popen([args.etherctl, "--netns", ns, "--device", "dc1", "watch",
                                  "--listen", "none", "--interval", "30s", site_path],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                 env=env)
        log = []
        threading.Thread(target=lambda: log.extend(agent.stderr), daemon=True).start()

        def observed():
            """What the changes below touch, read with `ip` (not etherctl: polling through
            etherctl's lock would compete with the agent for it)."""
            links = json.loads(sh("ip", "-n", ns, "-j", "-d", "link", "show"))
            by_name = {l["ifname"]: l for l in links}
            addrs = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "dev", "vmotion"))
            routes = json.loads(sh("ip", "-n", ns, "-j", "route", "show", "proto", "231"))
            return (sorted(a["local"] for x in addrs for a in x["addr_info"]
                           if a.get("scope") == "global"),
                    sorted(r["dst"] for r in routes),
                    by_name.get("vmotion", {}).get("mtu"),
                    by_name.get("eth1", {}).get("master"),
                    by_name.get("dcx", {}).get("master"),
                    by_name.get("dcx", {}).get("operstate"))

        def in_sync():
            r = subprocess.run([args.etherctl, "--netns", ns, "--device", "dc1", "--wait",
                                "--detailed-exitcodes", "plan", site_path],
                               capture_output=True, env=env)
            return r.returncode == 0

        deadline = time.monotonic() + 30
        while not in_sync():
            if time.monotonic() > deadline or agent.poll() is not None:
                raise RuntimeError("agent did not converge:\n" + "".join(log))
            time.sleep(0.1)
        time.sleep(3)  # IPv6 link-local addresses settle
        baseline = observed()

        cpu0, rss0, vcs0, _ = proc_stat(agent.pid)
        time.sleep(args.idle)
        cpu1, rss1, vcs1, fds1 = proc_stat(agent.pid)
        idle = {"seconds": args.idle, "cpu_seconds": cpu1 - cpu0,
                "cpu_percent": 100 * (cpu1 - cpu0) / args.idle,
                "wakeups": vcs1 - vcs0, "rss_kib": rss1, "fds": fds1}

        damages = [
            ("address deleted", ["addr", "del", "10.1.0.1/24", "dev", "vmotion"]),
            ("bridge MTU changed", ["link", "set", "vmotion", "mtu", "1400"]),
            ("port taken out", ["link", "set", "eth1", "nomaster"]),
            ("route deleted", ["route", "del", "203.0.113.0/24"]),
            ("tunnel deleted", ["link", "del", "dcx"]),
        ]
        repairs = {name: [] for name, _ in damages}
        samples, fd_samples = [], []
        start = time.monotonic()
        end = start + args.minutes * 60
        next_sample = start
        i = 0
        while time.monotonic() < end:
            name, cmd = damages[i % len(damages)]
            # background noise that must not cost a repair: FDB learning and a foreign link
            mac = f"02:00:00:00:{(i >> 8) & 255:02x}:{i & 255:02x}"
            sh("bridge", "-n", ns, "fdb", "replace", mac, "dev", "eth1" if i % 2 else "dcx",
               "master", "static", check=False)
            sh("ip", "-n", ns, "link", "add", f"f{i % 4}", "type", "veth", "peer", "name",
               f"g{i % 4}", check=False)
            t0 = time.monotonic()
            sh("ip", "-n", ns, *cmd)
            while observed() != baseline:
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"no repair after {name}:\n" + "".join(log[-20:]))
            repairs[name].append(time.monotonic() - t0)
            sh("ip", "-n", ns, "link", "del", f"f{i % 4}", check=False)
            sh("bridge", "-n", ns, "fdb", "del", mac, "dev", "eth1" if i % 2 else "dcx",
               "master", check=False)
            now = time.monotonic()
            if now >= next_sample:
                _, rss, _, fds = proc_stat(agent.pid)
                samples.append((now - start, rss))
                fd_samples.append(fds)
                next_sample += args.sample
            i += 1
            time.sleep(max(0.0, args.period - (time.monotonic() - t0)))
        if agent.poll() is not None:
            raise RuntimeError("the agent died:\n" + "".join(log))
        cpu2, rss2, _, fds2 = proc_stat(agent.pid)
        agent.send_signal(signal.SIGTERM)
        rc = agent.wait(timeout=30)

        print(f"## etherctl watch: idle and churn ({datetime.date.today()}, "
              f"{platform.node()}, {os.cpu_count()} CPUs, kernel {platform.release()})\n")
        print(f"Idle {idle['seconds']:.0f} s: CPU {idle['cpu_seconds']:.3f} s "
              f"({idle['cpu_percent']:.3f} %), {idle['wakeups']} wake-ups, "
              f"RSS {idle['rss_kib']} KiB, {idle['fds']} fds.\n")
        print(f"Churn {args.minutes:g} min, {i} changes behind etherctl's back (one every "
              f"{args.period:g} s, each with an FDB entry and a foreign link as noise); "
              f"exit status after SIGTERM {rc}.\n")
        print("| change | repairs | median ms | p95 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        for name, values in repairs.items():
            if not values:
                continue
            v = sorted(values)
            p95 = v[min(len(v) - 1, int(0.95 * len(v)))]
            print(f"| {name} | {len(v)} | {1000 * statistics.median(v):.0f} | {1000 * p95:.0f} "
                  f"| {1000 * v[-1]:.0f} |")
        print("\n(repair latency = from the damaging `ip` command's start until `ip -j` reads "
              "the namespace as before; includes the command itself and ~5-10 ms polling)\n")
        rss_values = [v for _, v in samples]
        print(f"Memory: RSS first {rss_values[0]} KiB, last {rss_values[-1]} KiB, max "
              f"{max(rss_values)} KiB over {len(samples)} samples; least-squares slope "
              f"{slope_per_hour(samples):+.0f} KiB/hour. File descriptors: {min(fd_samples)}-"
              f"{max(fd_samples)}. CPU during churn: {cpu2 - cpu1:.1f} s.")
    finally:
        if agent and agent.poll() is None:
            agent.kill()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
