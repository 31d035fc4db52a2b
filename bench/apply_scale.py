#!/usr/bin/python3
"""Apply at scale (issue 2, section "Performance").

For each N (default 100, 1000, 4000) this benchmark, inside a throwaway network namespace
`ecbench-<pid>` that it creates and always deletes:

  * makes N veth pairs p<i>a/p<i>b with `ip -batch` (the "adopted" interfaces);
  * writes a site.json with one device holding N untagged VLANs (adopting p<i>a), N VLAN groups
    (one member each), 2N self IPs (IPv4 /24 + IPv6 /64 on each group) and N routes
    (198.18.0.0/15 host routes out of each group);
  * measures, in the same run and alternating which goes first:
      (a) `etherctl --netns NS --json apply site.json` from empty,
      (b) a no-change re-apply (asserts "changed": false and netlink.writes == 0),
      (c) `etherctl --netns NS --json destroy site.json`,
      (d) the same kernel work with `ip -n NS -batch FILE` (bridges with the same options and
          ownership alias, enslave, link up, 2N addresses, N routes with etherctl's route
          protocol) and its teardown (`link del` of the bridges);
    after (d) it checks with `etherctl plan` that the ip-built state is what the site file wants,
    so both sides really did the same work.

Output: a Markdown report on stdout (medians, min-max spread, ratios, per-object cost).
Run as root:  /usr/bin/python3 bench/apply_scale.py [--quick] [--sizes 100,1000,4000]
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

DEVICE = "bench"
OWN_ALIAS = "etherctl:" + DEVICE  # lib/kernel/kind.hpp: Ownership::link_alias()
OWN_PROTO = 231  # lib/kernel/kind.hpp: kEtherctlProtocol
VETH_GROUP = 77  # link group of the benchmark's veths (for one batched delete at the end)


class BenchError(Exception):
    pass


def run(cmd, check=True, capture=True, input_text=None):
    proc = subprocess.run(cmd, input=input_text, capture_output=capture, text=True)
    if check and proc.returncode != 0:
        raise BenchError("command failed (exit %d): %s\nstdout: %s\nstderr: %s" % (
            proc.returncode, " ".join(cmd), (proc.stdout or "")[-2000:],
            (proc.stderr or "")[-2000:]))
    return proc


def timed(cmd):
    """Runs cmd, returns (seconds, CompletedProcess). Wall time includes process start."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - start, proc


# ----------------------------------------------------------------------------- generators

def v4_subnet(i):
    return "10.%d.%d" % (i // 256, i % 256)


def v6_prefix(i):
    return "fd00:0:%x" % i


def route_dst(i):
    return "198.%d.%d.%d/32" % (18 + i // 65536, (i // 256) % 256, i % 256)


def site_for(n):
    vlans, groups, self_ips, routes = {}, {}, {}, {}
    for i in range(n):
        vlans["v%d" % i] = {"interface": "p%da" % i}
        groups["g%d" % i] = {"members": ["v%d" % i], "mode": "transparent"}
        self_ips["s%d-4" % i] = {"address": v4_subnet(i) + ".1/24", "vlan": "g%d" % i}
        self_ips["s%d-6" % i] = {"address": v6_prefix(i) + "::1/64", "vlan": "g%d" % i}
        routes["r%d" % i] = {"destination": route_dst(i), "vlan": "g%d" % i}
    return {"etherctl": 1, "devices": {DEVICE: {
        "vlans": vlans, "vlan_groups": groups, "self_ips": self_ips, "routes": routes}}}


def batch_veths(n):
    return "".join("link add p%da group %d type veth peer name p%db group %d\nlink set p%db up\n"
                   % (i, VETH_GROUP, i, VETH_GROUP, i) for i in range(n))


def batch_veths_down(n):
    return "".join("link set p%da down\n" % i for i in range(n))


def batch_apply(n):
    """The kernel objects etherctl creates for site_for(n), in etherctl's order (by kind)."""
    lines = []
    lines += ["link set p%da up" % i for i in range(n)]  # adopted VLANs: etherctl brings them up
    for i in range(n):  # bridges: created up, no STP, forward delay 0, then the ownership alias
        lines.append("link add name g%d up type bridge stp_state 0 forward_delay 0" % i)
        lines.append("link set g%d alias %s" % (i, OWN_ALIAS))
    lines += ["link set p%da master g%d" % (i, i) for i in range(n)]
    for i in range(n):
        lines.append("address add %s.1/24 dev g%d" % (v4_subnet(i), i))
        lines.append("address add %s::1/64 dev g%d" % (v6_prefix(i), i))
    lines += ["route add %s dev g%d proto %d scope link" % (route_dst(i), i, OWN_PROTO)
              for i in range(n)]
    return "\n".join(lines) + "\n"


def batch_teardown(n):
    # Deleting a bridge releases its port and takes its addresses and routes with it.
    return "".join("link del g%d\n" % i for i in range(n))


# ----------------------------------------------------------------------------- namespace

class Namespace:
    def __init__(self, name):
        self.name = name
        self.created = False

    def __enter__(self):
        if os.path.exists("/run/netns/" + self.name):
            raise BenchError("namespace %s already exists; refusing to reuse it" % self.name)
        run(["ip", "netns", "add", self.name])
        self.created = True
        return self

    def __exit__(self, *exc):
        self.delete()
        return False

    def delete(self):
        if self.created:
            self.created = False
            subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def batch(self, text, tmpdir, tag):
        path = os.path.join(tmpdir, tag + ".batch")
        with open(path, "w") as f:
            f.write(text)
        return path

    def ip_batch(self, path, check=True):
        return run(["ip", "-n", self.name, "-batch", path], check=check)

    def bridges(self):
        out = run(["ip", "-n", self.name, "-j", "link", "show", "type", "bridge"]).stdout
        return json.loads(out or "[]")

    def owned_routes(self):
        out = run(["ip", "-n", self.name, "-j", "route", "show", "proto", str(OWN_PROTO)]).stdout
        return json.loads(out or "[]")

    def global_addresses(self):
        out = run(["ip", "-n", self.name, "-j", "address", "show", "scope", "global"]).stdout
        return sum(len(link.get("addr_info", [])) for link in json.loads(out or "[]"))


# ----------------------------------------------------------------------------- one size

def etherctl_json(etherctl, ns, command, site):
    """Runs one etherctl command; returns (seconds, report or None, exit code, stderr)."""
    seconds, proc = timed([etherctl, "--netns", ns.name, "--json", command, site])
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = None
    return seconds, report, proc.returncode, proc.stderr


def describe_failure(step, command, report, rc, stderr):
    if report is None:
        return "%s: etherctl %s exit %d, no JSON; stderr: %s" % (step, command, rc,
                                                                stderr.strip()[-1000:])
    errors = "; ".join("%s%s" % (e.get("path") + ": " if e.get("path") else "", e.get("message"))
                       for e in report.get("errors", []))
    return ("%s: etherctl %s exit %d (changed=%s, summary=%s, rolled_back=%s): %s" % (
        step, command, rc, report.get("changed"), json.dumps(report.get("summary")),
        report.get("rolled_back", False), errors[:3000]))


def assert_clean(ns, step):
    bridges, routes, addrs = ns.bridges(), ns.owned_routes(), ns.global_addresses()
    if bridges or routes or addrs:
        raise BenchError("%s: namespace not clean: %d bridges, %d proto-%d routes, %d global "
                         "addresses left" % (step, len(bridges), len(routes), OWN_PROTO, addrs))


def force_clean(ns, files):
    """After a failed etherctl run: remove what is left with ip, so the next run starts empty."""
    subprocess.run(["ip", "-n", ns.name, "-force", "-batch", files["teardown"]],
                   capture_output=True)


def run_etherctl(etherctl, ns, site, n, rep, args, files, res, log):
    step = "N=%d rep %d" % (n, rep)
    # (a) apply from empty. A run that executed every change but then failed (for example in
    # its verify step) did the whole work: its time is kept, and the failure is reported.
    t, r, rc, err = etherctl_json(etherctl, ns, "apply", site)
    if rc != 0 or r is None:
        res["failures"].append(describe_failure(step + " (a) apply from empty", "apply", r, rc,
                                                err))
        log("FAILURE " + res["failures"][-1])
    if r is not None and r.get("changed"):
        summary = r["summary"]
        if summary["create"] != 5 * n or summary["modify"] != n:
            raise BenchError("%s: apply from empty did not plan 5N creates and N modifies: %s" %
                             (step, summary))
        res["apply"].append(t)
        res["apply_ms_json"].append(r["duration_ms"])
        if rc == 0:
            res["apply_requests"].append(r["netlink"]["requests"])
            res["apply_writes"].append(r["netlink"]["writes"])
        else:
            res["apply_failed_runs"] += 1
    time.sleep(args.settle)  # let IPv6 DAD and link-watch events of (a) finish
    # (b) no-change re-apply: must report no change and send no netlink write.
    for _ in range(args.noop_runs):
        t, r, rc, err = etherctl_json(etherctl, ns, "apply", site)
        if rc != 0 or r is None:
            res["failures"].append(describe_failure(step + " (b) no-change apply", "apply", r, rc,
                                                    err))
            log("FAILURE " + res["failures"][-1])
            continue
        if r["changed"] or r["netlink"]["writes"] != 0:
            raise BenchError("%s: no-change apply changed something: changed=%s writes=%s "
                             "summary=%s" % (step, r["changed"], r["netlink"]["writes"],
                                             r["summary"]))
        res["noop"].append(t)
        res["noop_ms_json"].append(r["duration_ms"])
        res["noop_requests"].append(r["netlink"]["requests"])
    # (c) destroy.
    t, r, rc, err = etherctl_json(etherctl, ns, "destroy", site)
    if rc != 0 or r is None:
        res["failures"].append(describe_failure(step + " (c) destroy", "destroy", r, rc, err))
        log("FAILURE " + res["failures"][-1])
        force_clean(ns, files)
    else:
        res["destroy"].append(t)
        res["destroy_ms_json"].append(r["duration_ms"])
        res["destroy_requests"].append(r["netlink"]["requests"])
    assert_clean(ns, step + " (c) after destroy")


def run_ip(etherctl, ns, site, n, rep, args, files, res, log):
    step = "N=%d rep %d" % (n, rep)
    t, proc = timed(["ip", "-n", ns.name, "-batch", files["apply"]])
    if proc.returncode != 0:
        raise BenchError("%s: ip -batch apply failed: %s" % (step, proc.stderr[-2000:]))
    res["ip_apply"].append(t)
    time.sleep(args.settle)
    # Same work? etherctl must find the ip-built kernel state in sync with the site file.
    _, r, rc, err = etherctl_json(etherctl, ns, "plan", site)
    if rc != 0 or r is None:
        res["failures"].append(describe_failure(step + " (d) plan after ip -batch", "plan", r, rc,
                                                err))
        log("FAILURE " + res["failures"][-1])
    elif r["summary"]["create"] or r["summary"]["modify"] or r["summary"]["delete"]:
        raise BenchError("%s: the ip -batch state differs from the site file: %s" % (
            step, r["summary"]))
    t, proc = timed(["ip", "-n", ns.name, "-batch", files["teardown"]])
    if proc.returncode != 0:
        raise BenchError("%s: ip -batch teardown failed: %s" % (step, proc.stderr[-2000:]))
    res["ip_teardown"].append(t)
    assert_clean(ns, step + " (d) after ip teardown")


def new_results():
    res = {k: [] for k in ("apply", "apply_ms_json", "apply_requests", "apply_writes", "noop",
                           "noop_ms_json", "noop_requests", "destroy", "destroy_ms_json",
                           "destroy_requests", "ip_apply", "ip_teardown", "failures")}
    res["apply_failed_runs"] = 0
    return res


def bench_size(etherctl, ns, n, reps, args, tmpdir, log, res):
    """Runs the repetitions for one N, adding samples to res as they come."""
    site = os.path.join(tmpdir, "site-%d.json" % n)
    with open(site, "w") as f:
        json.dump(site_for(n), f, indent=1)
    files = {
        "veths": ns.batch(batch_veths(n), tmpdir, "veths-%d" % n),
        "down": ns.batch(batch_veths_down(n), tmpdir, "down-%d" % n),
        "apply": ns.batch(batch_apply(n), tmpdir, "apply-%d" % n),
        "teardown": ns.batch(batch_teardown(n), tmpdir, "teardown-%d" % n),
    }
    ns.ip_batch(files["veths"])
    try:
        for rep in range(reps):
            order = ("etherctl", "ip") if rep % 2 == 0 else ("ip", "etherctl")
            for who in order:
                ns.ip_batch(files["down"])  # both start from down, unenslaved veths
                time.sleep(args.settle)
                if who == "etherctl":
                    run_etherctl(etherctl, ns, site, n, rep, args, files, res, log)
                else:
                    run_ip(etherctl, ns, site, n, rep, args, files, res, log)

            def last(key):
                return "%.3fs" % res[key][-1] if res[key] else "-"
            log("N=%d rep %d: etherctl apply %s noop %s destroy %s | ip apply %s teardown %s" % (
                n, rep, last("apply"), last("noop"), last("destroy"), last("ip_apply"),
                last("ip_teardown")))
    except KeyboardInterrupt:
        raise  # deleting the namespace cleans up; the slow per-link teardown is skipped
    finally:
        # Leave the namespace empty for the next size. The veths are in their own link group,
        # so one RTM_DELLINK removes them all (batched unregister, unlike N single deletes).
        if sys.exc_info()[0] is not KeyboardInterrupt:
            force_clean(ns, files)
            subprocess.run(["ip", "-n", ns.name, "link", "del", "group", str(VETH_GROUP)],
                           capture_output=True)


# ----------------------------------------------------------------------------- report

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def ms(x):
    if x != x:  # NaN: no successful sample
        return "–"
    return "%.0f" % (x * 1000) if x >= 0.1 else "%.1f" % (x * 1000)


def cell(xs):
    """median [min–max] in ms, or a dash when there is no sample."""
    if not xs:
        return "no data"
    return "%s [%s–%s]" % (ms(med(xs)), ms(min(xs)), ms(max(xs)))


def ratio(a, b):
    return "%.2f×" % (med(a) / med(b)) if a and b else "–"


def num(xs, fmt="%d"):
    return fmt % med(xs) if xs else "–"


def report(results, reps_of, args):
    lines = []
    sizes = sorted(results)
    lines.append("| N | reps | etherctl apply (a) | ip -batch apply (d) | ratio a/d | no-change apply "
                 "(b) | etherctl destroy (c) | ip -batch teardown (d) | ratio c/d | etherctl "
                 "failures |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        r = results[n]
        lines.append("| %d | %d | %s%s | %s | %s | %s | %s | %s | %s | %d |" % (
            n, reps_of(n), cell(r["apply"]), " †" if r["apply_failed_runs"] else "",
            cell(r["ip_apply"]), ratio(r["apply"], r["ip_apply"]), cell(r["noop"]),
            cell(r["destroy"]), cell(r["ip_teardown"]), ratio(r["destroy"], r["ip_teardown"]),
            len(r["failures"])))
    lines.append("")
    lines.append("Wall times in ms, median [min–max] over the repetitions (no-change: %d runs per "
                 "repetition); process start included on both sides; the order etherctl/ip "
                 "alternates between repetitions; %.1f s pause before each timed step so that "
                 "IPv6 DAD and link-watch work of one step does not land in the next." % (
                     args.noop_runs, args.settle))
    if any(results[n]["apply_failed_runs"] for n in sizes):
        lines.append("† includes runs that executed every change and then exited 1 (see the "
                     "failures below); their wall time still measures the whole apply.")
    lines.append("")
    lines.append("| N | apply `duration_ms` | apply netlink requests (writes) | no-change "
                 "`duration_ms` | no-change requests | destroy `duration_ms` | destroy requests "
                 "| ip -batch commands | µs/object: etherctl apply | µs/object: ip apply "
                 "| µs/object: no-change |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        r = results[n]
        objects = 6 * n  # N adopted VLANs + N groups + N ports + 2N self IPs + N routes
        lines.append("| %d | %s | %s (%s) | %s | %s | %s | %s | %d | %s | %s | %s |" % (
            n, num(r["apply_ms_json"]), num(r["apply_requests"]), num(r["apply_writes"]),
            num(r["noop_ms_json"]), num(r["noop_requests"]), num(r["destroy_ms_json"]),
            num(r["destroy_requests"]), 7 * n,  # 7 commands per group
            num([x / objects * 1e6 for x in r["apply"]], "%.0f"),
            num([x / objects * 1e6 for x in r["ip_apply"]], "%.0f"),
            num([x / objects * 1e6 for x in r["noop"]], "%.1f")))
    lines.append("")
    if len(sizes) > 1:
        lines.append("Growth: exponent k of time ∝ N^k between consecutive sizes (1.0 = linear, "
                     "2.0 = quadratic):")
        lines.append("")
        lines.append("| N range | etherctl apply | ip -batch apply | no-change apply | "
                     "etherctl destroy | ip -batch teardown |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for a, b in zip(sizes, sizes[1:]):
            def k(key):
                if not results[a][key] or not results[b][key]:
                    return "–"
                return "%.2f" % (math.log(med(results[b][key]) / med(results[a][key])) /
                                 math.log(b / a))
            lines.append("| %d → %d | %s | %s | %s | %s | %s |" % (
                a, b, k("apply"), k("ip_apply"), k("noop"), k("destroy"), k("ip_teardown")))
        lines.append("")
    lines.append("Targets (issue 2): apply from empty ≤ 1.5× ip -batch; no-change apply at "
                 "N = 1000 < 150 ms; linear growth.")
    lines.append("")
    for n in sizes:
        r = results[n]
        if r["apply"] and r["ip_apply"]:
            q = med(r["apply"]) / med(r["ip_apply"])
            text = "apply ratio %.2f× (%s)" % (q, "met" if q <= 1.5 else "NOT met")
        else:
            text = "apply ratio: no data"
        if n == 1000 and r["noop"]:
            text += "; no-change %s ms (%s)" % (ms(med(r["noop"])),
                                                "met" if med(r["noop"]) < 0.150 else "NOT met")
        lines.append("- N = %d: %s" % (n, text))
    failures = [f for n in sizes for f in results[n]["failures"]]
    if failures:
        lines.append("")
        lines.append("etherctl failures (%d):" % len(failures))
        lines.append("")
        for f in failures:
            lines.append("- `%s`" % f.replace("`", "'"))
    return "\n".join(lines)


def machine():
    kernel = platform.release()
    cpus = os.cpu_count()
    try:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
    except OSError:
        load = ["?"]
    return "nproc %d, kernel %s, load average at start %s" % (cpus, kernel, " ".join(load))


def find_etherctl(path):
    candidates = [path] if path else [
        "/tmp/build-bench/cmd/etherctl/etherctl", shutil.which("etherctl") or ""]
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    raise BenchError("no etherctl binary found (tried %s); build it or pass --etherctl" %
                     ", ".join(c for c in candidates if c))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,4000", help="comma-separated N values")
    ap.add_argument("--reps", default="3",
                    help="repetitions of (a)-(d) per N: a number, or N:reps pairs such as "
                         "100:3,1000:3,4000:2 (sizes not listed get 3)")
    ap.add_argument("--settle", type=float, default=3.0,
                    help="seconds to wait before each timed step (IPv6 DAD, link watch)")
    ap.add_argument("--noop-runs", type=int, default=3,
                    help="no-change applies per repetition")
    ap.add_argument("--quick", action="store_true", help="small run: N=10,100, 2 repetitions")
    ap.add_argument("--etherctl", help="etherctl binary (default: /tmp/build-bench/... or PATH)")
    ap.add_argument("--json-out", help="also write the raw samples as JSON to this file")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.reps, args.noop_runs, args.settle = "10,100", "2", 2, 1.0
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if ":" in args.reps:
        table = dict((int(a), int(b)) for a, b in (p.split(":") for p in args.reps.split(",")))

        def reps_of(n):
            return table.get(n, 3)
    else:
        def reps_of(n):
            return int(args.reps)
    if os.geteuid() != 0:
        sys.exit("apply_scale.py: must run as root (it creates a network namespace)")
    etherctl = find_etherctl(args.etherctl)

    def log(text):
        print("[%s] %s" % (datetime.datetime.utcnow().strftime("%H:%M:%S"), text),
              file=sys.stderr, flush=True)

    # SIGTERM/SIGHUP unwind like Ctrl-C, so the namespace is deleted on the way out.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    started = datetime.datetime.utcnow()
    machine_text = machine()
    results, failures = {}, []
    ns = Namespace("ecbench-%d" % os.getpid())
    try:
        with tempfile.TemporaryDirectory(prefix="ecbench-") as tmpdir, ns:
            log("namespace %s, etherctl %s" % (ns.name, etherctl))
            for n in sizes:
                results[n] = new_results()
                try:
                    bench_size(etherctl, ns, n, reps_of(n), args, tmpdir, log, results[n])
                except BenchError as e:
                    failures.append("N=%d: %s" % (n, e))
                    log("FAILED " + failures[-1])
    except KeyboardInterrupt as e:  # Ctrl-C, SIGTERM: report what was measured so far
        failures.append("interrupted (%s); the tables hold the samples taken until then" %
                        (e or "Ctrl-C"))
        log("INTERRUPTED")
    results = {n: r for n, r in results.items() if r["apply"] or r["ip_apply"]}
    print("## Apply at scale (issue 2)\n")
    print("- Machine: %s" % machine_text)
    print("- Date: %s UTC" % started.strftime("%Y-%m-%d %H:%M"))
    print("- etherctl: %s" % etherctl)
    shown, skip = [], False
    for a in sys.argv[1:]:  # the command minus where the raw samples went
        if skip or a.startswith("--json-out"):
            skip = a == "--json-out" and not skip
            continue
        shown.append(a)
    print("- Command: `/usr/bin/python3 bench/apply_scale.py %s`\n" % " ".join(shown))
    if results:
        print(report(results, reps_of, args))
    for failure in failures:
        print("\n**Benchmark problem:** %s" % failure)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"machine": machine_text, "date": started.isoformat(), "results": results,
                       "failures": failures}, f, indent=1)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
