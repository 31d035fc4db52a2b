#!/usr/bin/python3
"""Failover interruption of a failover pair on the host kernel (issue 17, "Goal").

The lab of examples/ha (two data centers, a pair of edge hosts each, `etherctl watch` on every
unit, keepalived elected by VRRP), once per set-up: the default (VRRPv3, advert_int 0.1) and,
for comparison, the plain `advert_int 1`. Both labs are up for the whole run and the set-ups
take turns failover by failover (the one that goes first alternates), so the host's load hits
both alike. For each fault on dc1's active unit (dc1-a):

  wan-down          its WAN link loses its carrier (the WAN switch's port goes down)
  kill-keepalived   every keepalived process of it is killed with SIGKILL (a crash)
  links-down        all its links lose their carrier (the host dies)

one failover is: a TCP stream from vm2 (dc2) to vm1 (dc1) across the EtherIP tunnel starts
(every byte checked by both ends, examples/two-dc/stream.py's pattern), the fault is injected,
dc1-b takes over, the stream moves on, dc1-a returns (wan-up, links-up; after the crash its
agent starts keepalived again by itself) and preempts, the stream moves on again, the stream
ends. After the crash dc1-a's new keepalived may preempt before dc1-b has joined the segments:
then there is no takeover and one interruption only. Measured per failover:

  failover interruption   the longest gap in the stream's received data (echoed bytes, while
                          data was outstanding) that overlaps the time from the fault until
                          dc1-b starts to hand the role back
  failback interruption   the longest gap that begins after that: dc1-a's return. A gap that
                          spans both ("merged": TCP still waited for its next retransmission
                          when the failback began) counts for the failover only
  agents                  from the agents' logs (wall-clock ms): the fault -> the first unit of
                          dc1 has applied the active role (segments joined); on failback
                          dc1-b leaves -> dc1-a has applied the role
  connection lost         the stream ended with an error, a bad byte or incomplete

The stream sends 4 KiB every 10 ms (--rate, --chunk), so a gap is resolved to about 10 ms; gaps
shorter than --gap-ms are not reported (an interruption without one counts as --gap-ms, an
upper bound). During each fault's block numbered broadcasts from vm3 (dc1) and vm4 (dc2), 100
a second, are counted by every VM: a count above one is a duplicate (a loop or two forwarding
units).

Output: a Markdown table on stdout, every failover in JSON (--json FILE). Needs root,
keepalived, the build (build/cmd/etherctl/etherctl). About 2 s per failover with the default
set-up and 13 s with advert_int 1 (TCP's retransmission back-off: see docs/benchmarks.md):

  /work/tools/quiet /usr/bin/python3 bench/failover.py [--reps 20]
      [--faults wan-down,kill-keepalived,links-down] [--advert-ints default,1] [--lab bnlab]
      [--json FILE] [--keep-logs DIR] [--etherctl build/cmd/etherctl/etherctl]

Each set-up's lab is "<lab>-<advert in centiseconds>" (namespaces bnlab-10-dc1-a, ...), built
at the start and removed at the end, also on Ctrl-C, SIGTERM or a failure.

--virtual-server (needs IPVS: the stock-kernel VM, tests/vm/vm-run) measures instead a client
connection through dc1's virtual server (lab.site(pools=True): IPVS NAT to vm1 and vm3, both
dc1 units running master and backup sync daemons, keepalived's preempt_delay 8 s): from the
client namespace to 198.51.100.80:8080, echoed by the member (tests/e2e/test_failover_ipvs.py's
echo server) and every echoed byte checked by the client, one connection per failover, the fault
injected only once the standby dc1-b lists the connection (IPVS sync). The same gaps, times and
attribution as the tunnel stream; no tunnel stream and no broadcasts (one emulated vCPU). The
faults take turns failover by failover, so --budget-min (stop starting rounds that would not
fit) leaves every fault with the same n:

  tests/vm/vm-run --kernel 6.1 --timeout 1800 -- /usr/bin/python3 bench/failover.py \
      --virtual-server --advert-ints default --reps 20 --budget-min 20 --lab vblab --json -
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "examples", "ha"))
sys.path.insert(0, os.path.join(ROOT, "examples", "two-dc"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import lab as halab  # noqa: E402
import stream  # noqa: E402
from test_failover_ipvs import ECHO, PORT as VS_PORT  # noqa: E402

PY = "/usr/bin/python3"
STREAM = os.path.join(ROOT, "examples", "two-dc", "stream.py")
BROADCAST = os.path.join(ROOT, "examples", "ha", "broadcast.py")
FAULTS = {"wan-down": "wan-up", "kill-keepalived": None, "links-down": "links-up"}
INITIAL = {"dc1-a": "active", "dc1-b": "standby", "dc2-a": "active", "dc2-b": "standby"}
TRANSITION = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) failover: (\w+) -> (\w+): (.*)$")
APPLIED = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) failover: (\w+) applied in ([\d.]+) ms")
WAIT = 60  # seconds: no step of a failover takes this long unless something is broken
VIP = halab.VIRTUAL_SERVER["dc1"]


# --- the stream client (run in vm2's namespace) ----------------------------------------------

class GapClient(stream.Client):
    """stream.py's client that also prints, as they happen, every gap of at least --gap-ms in
    the received data and, every 50 ms, the time data last arrived (wall clock)."""

    def __init__(self, args):
        super().__init__(args)
        self.to_wall = time.time() - time.monotonic()
        self.gap = args.gap_ms / 1000
        self.next_beat = 0.0

    def note_progress(self, now):
        last = self.last_rx
        if last is not None and now - last >= self.gap:
            print(json.dumps({"gap": [last + self.to_wall, now + self.to_wall]}), flush=True)
        if now >= self.next_beat:
            self.next_beat = now + 0.05
            print(json.dumps({"rx": now + self.to_wall}), flush=True)
        super().note_progress(now)


def stream_client(argv):
    p = argparse.ArgumentParser(prog="failover.py stream-client")
    p.add_argument("--connect", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--chunk", type=int, required=True)
    p.add_argument("--gap-ms", type=float, required=True)
    args = p.parse_args(argv)
    args.source, args.bytes, args.duration, args.progress = None, None, 3600.0, False
    args.timeout, args.connect_timeout = 30.0, 5.0
    stream.CHUNK = args.chunk  # the client's send size
    result = GapClient(args).run()
    print(json.dumps({"summary": result}), flush=True)
    return 0 if result["ok"] else 1


# --- the benchmark ---------------------------------------------------------------------------

def log(message):
    print(f"[{datetime.datetime.now(datetime.timezone.utc):%H:%M:%S}] {message}",
          file=sys.stderr, flush=True)


def wait_for(what, condition, timeout=WAIT, step=0.02):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)
    return result


class Stream:
    """One byte-checked TCP stream, its gaps read as they come: vm2 -> vm1 across the tunnel,
    or (virtual_server) the client namespace -> dc1's virtual server, echoed by a member."""

    def __init__(self, virtual_server=False):
        self.virtual_server = virtual_server
        self.gaps, self.last_rx, self.summary = [], None, None
        self.server = self.client = None

    def start(self, lab, tmp, port, args):
        self.stop = os.path.join(tmp, f"stop-stream-{port}")
        if self.virtual_server:
            node, target, port = "client", VIP, VS_PORT  # the members' echo servers run
        else:
            node, target = "vm2", halab.VMS["vm1"][1]
            self.server = lab.popen("vm1", PY, STREAM, "server", "--bind", target,
                                    "--port", str(port), stdout=subprocess.PIPE)
            self.server.stdout.readline()
        self.client = lab.popen(node, PY, os.path.abspath(__file__), "stream-client",
                                "--connect", target, "--port", str(port),
                                "--stop-file", self.stop, "--rate", str(args.rate), "--chunk",
                                str(args.chunk), "--gap-ms", str(args.gap_ms),
                                stdout=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for("the stream's first data", lambda: self.last_rx, timeout=WAIT)

    def _read(self):
        for line in self.client.stdout:
            item = json.loads(line)
            if "gap" in item:
                self.gaps.append(tuple(item["gap"]))
            elif "rx" in item:
                self.last_rx = item["rx"]
            elif "summary" in item:
                self.summary = item["summary"]

    def flowing_after(self, t):
        """Data arrived after wall-clock time t."""
        return self.last_rx is not None and self.last_rx > t

    def finish(self):
        open(self.stop, "w").close()
        self.client.wait(timeout=60)
        self.reader.join(timeout=10)
        server = {}
        if self.server:
            out, _ = self.server.communicate(timeout=30)
            server = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        return self.summary or {"ok": False, "error": "no summary"}, server

    def kill(self):
        for proc in (self.client, self.server):
            if proc and proc.poll() is None:
                proc.kill()
                proc.wait()


class Broadcasts:
    """Numbered broadcasts from vm3 and vm4 heard by every VM (as e2e.failover does)."""

    def __init__(self, lab, tmp, name):
        self.stop = os.path.join(tmp, f"stop-broadcast-{name}")
        self.listeners = {vm: lab.popen(vm, PY, BROADCAST, "listen", "--stop-file", self.stop,
                                        stdout=subprocess.PIPE) for vm in halab.VMS}
        for listener in self.listeners.values():
            listener.stdout.readline()
        self.senders = [lab.popen(vm, PY, BROADCAST, "send", "--to", "10.1.0.255", "--count",
                                  "10000000", "--rate", "100", "--id", vm,
                                  stdout=subprocess.DEVNULL) for vm in ("vm3", "vm4")]

    def finish(self):
        for sender in self.senders:
            sender.kill()
            sender.wait()
        time.sleep(0.5)
        open(self.stop, "w").close()
        received = {}
        for vm, listener in self.listeners.items():
            out, _ = listener.communicate(timeout=60)
            received[vm] = json.loads(out.strip().splitlines()[-1])["received"]
        out = {"duplicated": 0, "senders": {}}
        for vm, senders in received.items():
            for counts in senders.values():
                out["duplicated"] += sum(n - 1 for n in counts.values() if n > 1)
        for sender in ("vm3", "vm4"):
            heard = [{int(s) for s in received[vm].get(sender, {})} for vm in halab.VMS
                     if vm != sender]
            sent = max((max(h) + 1 for h in heard if h), default=0)
            out["senders"][sender] = {"sent_at_least": sent,
                                      "heard_by_every_other_vm": len(set.intersection(*heard))}
        return out

    def kill(self):
        for proc in self.senders + list(self.listeners.values()):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


class Setup:
    """One lab with its site file (an advert interval) and four agents."""

    def __init__(self, label, advert_int, lab_name, tmp, etherctl, pools=False):
        self.label, self.advert_int, self.etherctl = label, advert_int, etherctl
        self.pools = pools
        self.lab = halab.Lab(lab_name)
        self.dir = os.path.join(tmp, lab_name)  # keepalived's files: no spaces
        os.makedirs(self.dir)
        self.site = os.path.join(self.dir, "site.json")
        with open(self.site, "w") as f:
            json.dump(halab.site(advert_int=advert_int, pools=pools), f)
        self.lock_dir = os.path.join(self.dir, "run")
        self.lab.lock_dir = self.lock_dir
        self.started = False
        self.echo = []

    def up(self):
        self.down()  # what an interrupted run of the same name left
        self.started = True
        self.lab.up()
        if self.pools:  # dc1's pair directs (IPVS NAT) to the members vm1 and vm3
            for unit in ("dc1-a", "dc1-b"):
                self.lab.exec(unit, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            for vm in ("vm1", "vm3"):
                self.echo.append(self.lab.popen(vm, PY, "-c", ECHO, stdout=subprocess.PIPE,
                                                stderr=subprocess.DEVNULL))
                self.echo[-1].stdout.readline()
        self.lab.start_agents(self.etherctl, self.site, self.lock_dir, self.dir)
        self.lab.wait_roles(INITIAL, timeout=600 if self.pools else 120)

    def listed(self, unit, client_port):
        """`unit`'s IPVS table lists the client's connection from client_port as established."""
        client = f"{halab.CLIENT[2]}:{client_port}"
        for line in self.lab.exec(unit, "ipvsadm", "-L", "-n", "-c").stdout.splitlines():
            fields = line.split()
            if (len(fields) >= 6 and fields[2] == "ESTABLISHED" and fields[3] == client
                    and fields[4] == f"{VIP}:{VS_PORT}"):
                return True
        return False

    def client_port(self):
        """The source port of the client's established connection to the virtual server."""
        out = self.lab.exec("client", "ss", "-Htn", "state", "established", "dst",
                            f"{VIP}:{VS_PORT}").stdout
        local = halab.CLIENT[2] + ":"
        ports = [int(field[len(local):]) for line in out.splitlines()
                 for field in line.split() if field.startswith(local)]
        return ports[0] if len(ports) == 1 else None

    def down(self):
        for proc in self.echo:
            proc.kill()
            proc.wait()
        self.echo = []
        if self.started:
            self.lab.stop_agents(sig=signal.SIGKILL)
            env = dict(os.environ, ETHERCTL_LOCK_DIR=self.lock_dir)
            for unit in halab.UNITS:  # pins in the host's bpffs outlive namespaces
                if self.lab.exists(unit):
                    subprocess.run([self.etherctl, "--netns", self.lab.ns(unit), "--device", unit,
                                    "destroy", self.site], capture_output=True, env=env)
        self.lab.down()

    def log_offset(self, unit):
        return os.path.getsize(os.path.join(self.dir, f"{unit}.log"))

    def events(self, unit, offset, near):
        """The unit's transitions and applied roles logged after `offset`, as (wall time,
        kind, role): kind "to" (the decision) or "applied"."""
        with open(os.path.join(self.dir, f"{unit}.log")) as f:
            f.seek(offset)
            text = f.read()
        out = []
        for line in text.splitlines():
            if m := TRANSITION.search(line):
                out.append((wall_of(m, near), "to", m.group(6)))
            elif m := APPLIED.search(line):
                out.append((wall_of(m, near), "applied", m.group(5)))
        return out

    def steady(self):
        """Both pairs in their initial roles, applied, keepalived healthy, no split brain."""
        def ok():
            for unit in ("dc1-a", "dc1-b"):
                record = self.lab.record(unit)
                if record.get("role") != INITIAL[unit] or record.get("split_brain", {}).get("now"):
                    return False
                if record.get("transitions") and "applied" not in record.get("last_transition",
                                                                              {}):
                    return False
                if not record.get("keepalived", {}).get("running"):
                    return False
            return len(self.lab.keepalived_pids("dc1-a")) == 2
        self.lab.wait_roles(INITIAL, timeout=WAIT)
        wait_for(f"{self.label}: a steady pair", ok)


def wall_of(match, near):
    """A log line's local HH:MM:SS.mmm as wall-clock time, on the day nearest to `near`."""
    h, m, s, ms = (int(match.group(i)) for i in range(1, 5))
    base = datetime.datetime.fromtimestamp(near).replace(hour=h, minute=m, second=s,
                                                         microsecond=ms * 1000)
    candidates = [(base + datetime.timedelta(days=d)).timestamp() for d in (-1, 0, 1)]
    return min(candidates, key=lambda t: abs(t - near))


def first(events, kind, role, after):
    return next((t for t, k, r in events if k == kind and r == role and t >= after), None)


def last(events, kind, role):
    return next((t for t, k, r in reversed(events) if k == kind and r == role), None)


def failover(setup, fault, port, args):
    """One fault on dc1-a, the takeover by dc1-b and dc1-a's return, under a stream."""
    lab = setup.lab
    setup.steady()
    s = Stream(virtual_server=setup.pools)
    synced = None
    try:
        s.start(lab, setup.dir, port, args)
        if setup.pools:  # the fault only once the standby has the connection (IPVS sync)
            opened = time.time()
            client_port = wait_for("the client's connection", setup.client_port)
            wait_for("dc1-b to list the connection", lambda: setup.listed("dc1-b", client_port),
                     step=0.2)
            synced = time.time() - opened
        time.sleep(0.3)
        offsets = {unit: setup.log_offset(unit) for unit in ("dc1-a", "dc1-b")}
        t_fault = time.time()
        lab.fault(fault, "dc1-a")

        def restored():
            """When the first unit of dc1 applied the active role after the fault: dc1-b
            taking over, or (after the crash) dc1-a whose keepalived, started again by its
            agent, preempted before dc1-b had joined."""
            times = []
            for unit in ("dc1-a", "dc1-b"):
                events = setup.events(unit, offsets[unit], t_fault)
                decided = first(events, "to", "active", t_fault)
                applied = decided and first(events, "applied", "active", decided)
                if applied:
                    times.append(applied)
            return min(times) if times else None
        t_restored = wait_for("the takeover", restored)
        wait_for("the stream after the takeover", lambda: s.flowing_after(t_restored))
        time.sleep(args.settle)
        t_heal = time.time()
        if FAULTS[fault]:
            lab.fault(FAULTS[fault], "dc1-a")

        def returned():
            events = setup.events("dc1-a", offsets["dc1-a"], t_fault)
            decided = last(events, "to", "active")
            applied = decided and first(events, "applied", "active", decided)
            return (applied if applied and lab.role("dc1-a") == "active"
                    and lab.role("dc1-b") == "standby" else None)
        a_applied = wait_for("dc1-a's return", returned)
        wait_for("the stream after the return", lambda: s.flowing_after(a_applied))
        time.sleep(args.settle)
        client, server = s.finish()
    finally:
        s.kill()
    a = setup.events("dc1-a", offsets["dc1-a"], t_fault)
    b = setup.events("dc1-b", offsets["dc1-b"], t_fault)
    b_decided = first(b, "to", "active", t_fault)
    b_applied = b_decided and first(b, "applied", "active", b_decided)
    # the failback starts when dc1-b, having taken over, hands the role back
    b_left = b_applied and first(b, "to", "standby", b_applied)
    a_decided = last(a, "to", "active")

    def ms(t0, t1):
        return None if t0 is None or t1 is None else round(1000 * (t1 - t0), 1)
    record = {
        "fault": fault, "t_fault": round(t_fault, 3), "t_heal": round(t_heal, 3),
        "standby_listed_ms": None if synced is None else round(1000 * synced, 1),
        "takeover_decided_ms": ms(t_fault, b_decided),
        "took_over": bool(b_applied),  # else dc1-a came back before dc1-b joined
        "restored_ms": ms(t_fault, t_restored),  # the first unit of dc1 in the segments again
        # after the crash dc1-a's agent starts keepalived again at once: its return starts then
        "return_decided_ms": ms(t_heal if FAULTS[fault] else t_fault, a_decided),
        "failback_outage_ms": ms(b_left, a_applied),  # dc1-b out of the segments until dc1-a in
        "transitions": {"dc1-a": sum(1 for _, k, _ in a if k == "to"),
                        "dc1-b": sum(1 for _, k, _ in b if k == "to")},
        "stream_ok": bool(client.get("ok")) and server.get("first_bad_byte") is None
        and server.get("error") is None,
        "stream": {k: client.get(k) for k in ("sent", "echoed", "first_bad_byte", "error",
                                              "longest_stall_ms")},
        "gaps_ms": [[round(g0 - t_fault, 3), round(1000 * (g1 - g0), 1)] for g0, g1 in s.gaps],
    }
    # A gap belongs to the failover when it overlaps [fault, dc1-b leaves); to the failback when
    # it begins after that (less the stream's period: the last data through dc1-b arrives just
    # before it leaves). One that begins earlier and ends later spans both: "merged".
    # Without a takeover by dc1-b there is one interruption only, the failover's.
    boundary = b_left or float("inf")
    edge = boundary - 2 * args.chunk / args.rate
    over = [g1 - g0 for g0, g1 in s.gaps if g1 > t_fault and g0 < edge]
    back = [g1 - g0 for g0, g1 in s.gaps if g0 >= edge]
    record["merged"] = any(g0 < edge and g1 > boundary for g0, g1 in s.gaps)
    record["failover_ms"] = round(1000 * max(over), 1) if over else None
    record["failback_ms"] = round(1000 * max(back), 1) if back else None
    if not b_left or record["merged"]:
        record["failback_ms"] = None  # no failback of its own (see summarize)
    return record


def percentile(values, q):
    """Nearest-rank percentile."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, -(-len(v) * q // 100) - 1))]


def summarize(records, gap_ms):
    # A failback interruption of its own exists only after a takeover by dc1-b whose failover
    # interruption ended before the failback began (else one gap spans both: merged).
    took_over = [r for r in records if r["took_over"] and not r["merged"]]

    def stats(key, rows, floor=False):
        """median, p90, max; a stream phase without a reported gap counts as gap_ms (floor)."""
        values = [r[key] if r[key] is not None else gap_ms if floor else None for r in rows]
        values = [v for v in values if v is not None]
        if not values:
            return None
        return {"n": len(values), "median": statistics.median(values),
                "p90": percentile(values, 90), "max": max(values),
                "below_gap_ms": sum(1 for r in rows if r[key] is None) if floor else 0}
    out = {"failover_ms": stats("failover_ms", records, True),
           "failback_ms": stats("failback_ms", took_over, True),
           "takeover_decided_ms": stats("takeover_decided_ms", records),
           "restored_ms": stats("restored_ms", records),
           "standby_listed_ms": stats("standby_listed_ms", records),
           "failback_outage_ms": stats("failback_outage_ms",
                                       [r for r in records if r["took_over"]])}
    out["failovers"] = len(records)
    out["without_takeover"] = sum(1 for r in records if not r["took_over"])
    out["connections_lost"] = sum(1 for r in records if not r["stream_ok"])
    out["merged"] = sum(1 for r in records if r["merged"])
    out["failback_longer"] = sum(1 for r in took_over
                                 if (r["failback_ms"] or gap_ms) > (r["failover_ms"] or gap_ms))
    return out


def parse_advert(text):
    return None if text == "default" else float(text)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "stream-client":
        return stream_client(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--etherctl",
                    default=os.path.join(ROOT, "build", "cmd", "etherctl", "etherctl"))
    ap.add_argument("--reps", type=int, default=20, help="failovers per fault and set-up")
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--advert-ints", default="default,1",
                    help="set-ups: 'default' (the site file without advert_int) or seconds")
    ap.add_argument("--lab", default="bnlab", help="prefix of the labs' namespaces")
    ap.add_argument("--virtual-server", action="store_true",
                    help="a connection through dc1's virtual server instead of the tunnel "
                    "stream (needs IPVS: the VM)")
    ap.add_argument("--budget-min", type=float,
                    help="--virtual-server: start no round of faults that would end later than "
                    "this many minutes after the start")
    ap.add_argument("--json", help="write every failover and the summary here ('-': stdout)")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds after the stream moved on before the next step")
    ap.add_argument("--rate", type=float,
                    help="stream bytes per second (409600; --virtual-server 102400)")
    ap.add_argument("--chunk", type=int,
                    help="stream bytes per send (4096; --virtual-server 1024)")
    ap.add_argument("--gap-ms", type=float, default=20, help="shortest gap reported")
    ap.add_argument("--keep-logs", help="copy the agents' logs into this directory at the end")
    args = ap.parse_args()
    faults = args.faults.split(",")
    for fault in faults:
        if fault not in FAULTS:
            ap.error(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")
    adverts = [parse_advert(a) for a in args.advert_ints.split(",")]
    # Both send every 10 ms; the virtual server's smaller chunks spare the VM's one vCPU.
    args.rate = args.rate or (102400 if args.virtual_server else 409600)
    args.chunk = args.chunk or (1024 if args.virtual_server else 4096)
    if os.geteuid() != 0:
        ap.error("needs root (network namespaces, BPF)")
    if not os.access(args.etherctl, os.X_OK):
        ap.error(f"no etherctl binary at {args.etherctl}")

    estimate = sum(args.reps * len(faults) * (1.5 + 11.5 * (a or 0.1)) for a in adverts) + 60
    if args.virtual_server:  # TCG: the connection's sync, the 8 s preempt delay, slow processes
        estimate = args.reps * len(faults) * len(adverts) * 30 + 180
    log(f"{args.reps} failovers x {len(faults)} faults x {len(adverts)} set-ups: about "
        f"{estimate / 60:.0f} min")
    tmp = tempfile.mkdtemp(prefix="etherctl-bench-failover-")
    setups = []
    for advert in adverts:
        label = "default (advert_int 0.1)" if advert is None else f"advert_int {advert:g}"
        if args.virtual_server:
            label = "virtual server, " + label
        setups.append(Setup(label, advert, f"{args.lab}-{round(100 * (advert or 0.1))}", tmp,
                            os.path.abspath(args.etherctl), pools=args.virtual_server))

    def on_term(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "host": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
              "command": " ".join(sys.argv), "load_before": os.getloadavg(),
              "stream": {"rate": args.rate, "chunk": args.chunk, "gap_ms": args.gap_ms,
                         "virtual_server": args.virtual_server},
              "setups": {}}
    traffic = []
    started = time.monotonic()
    port = 5100

    def one(setup, fault, rep):
        nonlocal port
        port = 5100 + (port - 5099) % 500
        r = failover(setup, fault, port, args)
        log(f"{setup.label} {fault} #{rep + 1}: failover {r['failover_ms']} ms, "
            f"failback {r['failback_ms']} ms (agents: joined "
            f"{r['restored_ms']} ms after the fault"
            f"{'' if r['took_over'] else ', no takeover'}), stream "
            f"{'ok' if r['stream_ok'] else 'LOST'}")
        return r
    try:
        for setup in setups:
            log(f"{setup.label}: lab {setup.lab.name} up")
            setup.up()
            result["setups"][setup.label] = {"advert_int": setup.advert_int, "faults": {}}
        if args.virtual_server:
            # The faults take turns, so a budget that ends the run early leaves them equal n.
            records = {setup.label: {fault: [] for fault in faults} for setup in setups}
            longest = 0.0
            for rep in range(args.reps):
                spent = time.monotonic() - started
                if args.budget_min and spent + longest + 90 > 60 * args.budget_min:
                    log(f"budget: no round {rep + 1} (the longest took {longest:.0f} s)")
                    break
                t0 = time.monotonic()
                for fault in faults:
                    order = setups if rep % 2 == 0 else list(reversed(setups))
                    for setup in order:
                        records[setup.label][fault].append(one(setup, fault, rep))
                longest = max(longest, time.monotonic() - t0)
            for setup in setups:
                for fault in faults:
                    rows = records[setup.label][fault]
                    result["setups"][setup.label]["faults"][fault] = {
                        "summary": summarize(rows, args.gap_ms), "broadcasts": None,
                        "failovers": rows}
        for fault in faults if not args.virtual_server else ():
            traffic = [(setup, Broadcasts(setup.lab, setup.dir, fault)) for setup in setups]
            time.sleep(1)
            records = {setup.label: [] for setup in setups}
            for rep in range(args.reps):
                order = setups if rep % 2 == 0 else list(reversed(setups))
                for setup in order:
                    records[setup.label].append(one(setup, fault, rep))
            for setup, b in traffic:
                broadcasts = b.finish()
                result["setups"][setup.label]["faults"][fault] = {
                    "summary": summarize(records[setup.label], args.gap_ms),
                    "broadcasts": broadcasts, "failovers": records[setup.label]}
            traffic = []
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        return 130
    finally:
        # A second Ctrl-C or SIGTERM must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, b in traffic:
            b.kill()
        for setup in setups:
            setup.down()
            if args.keep_logs:
                where = os.path.join(args.keep_logs, setup.lab.name)
                os.makedirs(where, exist_ok=True)
                for unit in halab.UNITS:
                    log_file = os.path.join(setup.dir, f"{unit}.log")
                    if os.path.exists(log_file):
                        shutil.copy(log_file, where)
        subprocess.run(["rm", "-rf", tmp])
    result["load_after"] = os.getloadavg()
    result["minutes"] = round((time.monotonic() - started) / 60, 1)
    report(result)
    if args.json == "-":  # in the VM: its files are gone with it
        print("\n" + json.dumps(result), flush=True)
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


def report(result):
    def cell(s):
        if not s:
            return "–"
        return f"{s['median']:.0f} / {s['p90']:.0f} / {s['max']:.0f}"
    print(f"## Failover interruption ({result['date']}, {result['host']}, {result['cpus']} CPUs, "
          f"kernel {result['kernel']}; load average {result['load_before'][0]:.2f} before, "
          f"{result['load_after'][0]:.2f} after, {result['minutes']} min)\n")
    print("| set-up | fault | failovers | failover interruption ms | failback interruption ms "
          "| failback longer | agents: fault → segments joined ms | agents: failback outage ms "
          "| connections lost | broadcasts duplicated |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, setup in result["setups"].items():
        for fault, f in setup["faults"].items():
            s = f["summary"]
            n = f"{s['failovers']}"
            if s["without_takeover"]:
                n += f" ({s['without_takeover']} without takeover)"
            if s["merged"]:
                n += f" ({s['merged']} merged)"
            print(f"| {label} | {fault} | {n} | {cell(s['failover_ms'])} | "
                  f"{cell(s['failback_ms'])} | {s['failback_longer']} | "
                  f"{cell(s['restored_ms'])} | {cell(s['failback_outage_ms'])} | "
                  f"{s['connections_lost']} | "
                  f"{f['broadcasts']['duplicated'] if f['broadcasts'] else '–'} |")
    labels = list(result["setups"])
    if len(labels) == 2:
        a, b = (result["setups"][label]["faults"] for label in labels)
        for key, what in (("failover_ms", "failover interruption"),
                          ("restored_ms", "fault → segments joined")):
            ratios = []
            for fault in a:
                if fault in b and a[fault]["summary"][key] and b[fault]["summary"][key]:
                    x, y = a[fault]["summary"][key], b[fault]["summary"][key]
                    ratios.append(f"{fault} {x['median'] / y['median']:.2f}")
            print(f"\nMedian {what}, {labels[0]} / {labels[1]}: {', '.join(ratios)}")
    st = result["stream"]
    what = ("the client's connection through dc1's virtual server" if st["virtual_server"]
            else "the tunnel stream")
    print(f"\nStream ({what}): {st['chunk']} B every {1000 * st['chunk'] / st['rate']:.0f} ms; a phase "
          f"without a gap of {st['gap_ms']:g} ms or more counts as {st['gap_ms']:g} ms "
          f"(below_gap_ms in the JSON). Times: median / p90 / max.")


if __name__ == "__main__":
    sys.exit(main())
