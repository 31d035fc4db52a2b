#!/usr/bin/python3
"""Two data centers, each with a pair of edge hosts, in network namespaces (see README.md).

    lab.py up | down | status            build (idempotent), remove, show the lab
    lab.py ns NODE                       the namespace of NODE (dc1-a, dc1-wan, vm1, ...)
    lab.py fault KIND UNIT               wan-down | wan-up | kill-keepalived | links-down |
                                         links-up  (UNIT: dc1-a, dc1-b, dc2-a, dc2-b)
    lab.py migrate VM [--to dcN]         move a VM's vNIC to the other hypervisor (+ gratuitous ARP)
    lab.py site [--advert-int S]         print the site file of the lab (the failover model)

Environment: LAB (namespace prefix, default "halab"; give each parallel run its own).

Topology (every name is a namespace "<LAB>-<name>"):

    vm1, vm3 ─ dc1-hv ─ dc1-srv ─┬─ eth1 [dc1-a] eth0 ─┬─ dc1-wan ─ [wan] ─ dc2-wan ─┬─ eth0 [dc2-a] eth1 ─┬─ dc2-srv ─ dc2-hv ─ vm2, vm4
                                 └─ eth1 [dc1-b] eth0 ─┘        router   │           └─ eth0 [dc2-b] eth1 ─┘
                                                                       client

dcN-wan and dcN-srv are switches (a bridge in a namespace of their own): both units of a data
center share the WAN segment (198.51.100.0/24 in dc1, 203.0.113.0/24 in dc2) and the server
segment (10.1.0.0/24, stretched across the tunnel). The router forwards between the two WANs
and the client network (100.64.0.0/24) with MTU 1500. The units' eth0/eth1 are left
unconfigured: etherctl configures them from the site file. Every VM's default gateway is the
floating server address of its data center (10.1.0.1 in dc1, 10.1.0.2 in dc2).

The module is also the scaffolding of the failover tests and benchmark (tests/e2e,
bench/failover.py): `Lab(name).up()`, `.fault(kind, unit)`, `.keepalived_pids(unit)`, ...
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time

UNITS = ("dc1-a", "dc1-b", "dc2-a", "dc2-b")
DCS = ("dc1", "dc2")
VMS = {  # name: (data center it starts in, address, MAC)
    "vm1": ("dc1", "10.1.0.21", "02:ec:00:00:00:21"),
    "vm2": ("dc2", "10.1.0.22", "02:ec:00:00:00:22"),
    "vm3": ("dc1", "10.1.0.23", "02:ec:00:00:00:23"),
    "vm4": ("dc2", "10.1.0.24", "02:ec:00:00:00:24"),
}
WAN = {  # data center: (network, router address, unit a, unit b, floating address)
    "dc1": ("198.51.100.0/24", "198.51.100.254", "198.51.100.11", "198.51.100.12",
            "198.51.100.1"),
    "dc2": ("203.0.113.0/24", "203.0.113.254", "203.0.113.11", "203.0.113.12", "203.0.113.1"),
}
SERVER_SELF = {"dc1-a": "10.1.0.11", "dc1-b": "10.1.0.12", "dc2-a": "10.1.0.13",
               "dc2-b": "10.1.0.14"}
SERVER_GATEWAY = {"dc1": "10.1.0.1", "dc2": "10.1.0.2"}  # floating
CLIENT = ("100.64.0.0/24", "100.64.0.254", "100.64.0.10")
VIRTUAL_SERVER = {"dc1": "198.51.100.80"}  # a pool's virtual address, floating with dc1's pair
VRID = {"dc1": 51, "dc2": 52}


def sh(*args, check=True, timeout=60, capture=True):
    result = subprocess.run(args, capture_output=capture, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): "
                           f"{(result.stderr or '').strip()}")
    return result


def dc_of(unit):
    return unit.split("-")[0]


class Lab:
    def __init__(self, name=None):
        self.name = name or os.environ.get("LAB", "halab")
        if not (0 < len(self.name) <= 24 and self.name.replace("-", "").isalnum()):
            raise ValueError(f"lab name {self.name!r}: 1..24 letters, digits or '-'")

    # --- namespaces -------------------------------------------------------------------------

    def ns(self, node):
        return f"{self.name}-{node}"

    def nodes(self):
        return (list(UNITS) + [f"{dc}-{kind}" for dc in DCS for kind in ("wan", "srv", "hv")] +
                ["wan", "client"] + list(VMS))

    def exists(self, node):
        return os.path.exists(f"/run/netns/{self.ns(node)}")

    def exec(self, node, *args, check=True, timeout=60):
        if not self.exists(node):
            raise RuntimeError(f"no namespace {self.ns(node)}")
        return sh("ip", "netns", "exec", self.ns(node), *args, check=check, timeout=timeout)

    def popen(self, node, *args, **kwargs):
        if not self.exists(node):
            raise RuntimeError(f"no namespace {self.ns(node)}")
        kwargs.setdefault("text", True)
        return subprocess.Popen(["ip", "netns", "exec", self.ns(node), *args], **kwargs)

    def ip(self, node, *args, check=True):
        return sh("ip", "-n", self.ns(node), *args, check=check)

    def links(self, node):
        return {l["ifname"]: l for l in json.loads(self.ip(node, "-j", "-d", "link", "show").stdout)}

    def addresses(self, node):
        """Every address of the node as "addr/prefix" by interface name."""
        out = {}
        for link in json.loads(self.ip(node, "-j", "addr", "show").stdout):
            out[link["ifname"]] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])]
        return out

    # --- building ---------------------------------------------------------------------------

    def _link_exists(self, node, ifname):
        return sh("ip", "-n", self.ns(node), "link", "show", "dev", ifname,
                  check=False).returncode == 0

    def _veth(self, node_a, if_a, node_b, if_b):
        if self._link_exists(node_a, if_a) and self._link_exists(node_b, if_b):
            return
        self.ip(node_a, "link", "del", if_a, check=False)  # half a pair of an interrupted run
        self.ip(node_b, "link", "del", if_b, check=False)
        sh("ip", "link", "add", if_a, "netns", self.ns(node_a), "type", "veth", "peer", "name", if_b,
           "netns", self.ns(node_b))

    def _switch(self, node, ports):
        """A bridge br0 in `node` with `ports` (links already there) as its ports."""
        if not self._link_exists(node, "br0"):
            self.ip(node, "link", "add", "br0", "type", "bridge", "stp_state", "0",
                    "forward_delay", "0")
        self.ip(node, "link", "set", "br0", "up")
        for port in ports:
            self.ip(node, "link", "set", "dev", port, "master", "br0", "up")

    def _sysctl(self, node, key, value):
        self.exec(node, "sysctl", "-qw", f"{key}={value}")

    def up(self):
        for node in self.nodes():
            if not self.exists(node):
                sh("ip", "netns", "add", self.ns(node))
            self.ip(node, "link", "set", "lo", "up")
        # the router and the client network
        self._veth("client", "eth0", "wan", "cl")
        self.ip("wan", "addr", "replace", f"{CLIENT[1]}/24", "dev", "cl")
        self.ip("wan", "link", "set", "cl", "mtu", "1500", "up")
        self.ip("client", "addr", "replace", f"{CLIENT[2]}/24", "dev", "eth0")
        self.ip("client", "link", "set", "eth0", "up")
        self.ip("client", "route", "replace", "default", "via", CLIENT[1])
        self._sysctl("wan", "net.ipv4.ip_forward", 1)
        for dc in DCS:
            network, router, *_ = WAN[dc]
            # WAN switch: the router's port and both units' eth0
            self._veth("wan", dc, f"{dc}-wan", "port-rtr")
            self.ip("wan", "addr", "replace", f"{router}/24", "dev", dc)
            self.ip("wan", "link", "set", dc, "mtu", "1500", "up")
            ports_wan, ports_srv = ["port-rtr"], ["port-hv"]
            for unit in (f"{dc}-a", f"{dc}-b"):
                side = "port-" + unit[-1]
                self._veth(unit, "eth0", f"{dc}-wan", side)
                self._veth(unit, "eth1", f"{dc}-srv", side)
                self.ip(unit, "link", "set", "eth0", "mtu", "1500")
                ports_wan.append(side)
                ports_srv.append(side)
            self._switch(f"{dc}-wan", ports_wan)
            # server switch <-> the hypervisor's uplink
            self._veth(f"{dc}-srv", "port-hv", f"{dc}-hv", "uplink")
            self._switch(f"{dc}-srv", ports_srv)
            self._switch(f"{dc}-hv", ["uplink"])
        for vm in VMS:
            self._vm(vm)

    def vm_location(self, vm):
        for dc in DCS:
            if self.exists(f"{dc}-hv") and self._link_exists(f"{dc}-hv", vm):
                return dc
        return None

    def _vm(self, vm):
        home, address, mac = VMS[vm]
        if not self._link_exists(vm, "eth0") or not self.vm_location(vm):
            self.ip(vm, "link", "del", "eth0", check=False)
            for dc in DCS:
                self.ip(f"{dc}-hv", "link", "del", vm, check=False)
            self._veth(vm, "eth0", f"{home}-hv", vm)
        where = self.vm_location(vm)
        self.ip(f"{where}-hv", "link", "set", vm, "master", "br0", "up")
        self.ip(vm, "link", "set", "eth0", "address", mac)
        self.ip(vm, "link", "set", "eth0", "up")
        self.ip(vm, "addr", "replace", f"{address}/24", "dev", "eth0")
        self.ip(vm, "route", "replace", "default", "via", SERVER_GATEWAY[home])

    def down(self):
        for unit in UNITS:  # daemons that live in the namespaces go first
            for pid in self.keepalived_pids(unit):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for node in self.nodes():
            if self.exists(node):
                sh("ip", "netns", "del", self.ns(node), check=False)

    # --- processes in a namespace -----------------------------------------------------------

    def pids_in(self, node, command):
        """Processes whose network namespace is `node`'s and whose comm is `command`."""
        target = os.stat(f"/run/netns/{self.ns(node)}")
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() != command:
                        continue
                st = os.stat(f"/proc/{entry}/ns/net")
            except OSError:
                continue
            if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                found.append(int(entry))
        return sorted(found)

    def keepalived_pids(self, unit):
        return self.pids_in(unit, "keepalived") if self.exists(unit) else []

    # --- faults -----------------------------------------------------------------------------

    def fault(self, kind, unit):
        """Injects a fault into (or heals) a unit; returns time.monotonic() of the injection."""
        if unit not in UNITS:
            raise ValueError(f"unknown unit {unit!r}")
        # A link fails where a cable or a switch would fail it: the switch's port goes down and
        # the unit's interface loses its carrier. Set down inside the unit instead, the unit's
        # own agent brought it up again at once (an administrative `down` of an interface the
        # site file wants up is drift it repairs), often before VRRP noticed anything: the peer
        # then never took over.
        wan_port = ("wan", "port-" + unit[-1])
        server_port = ("srv", "port-" + unit[-1])
        if kind in ("wan-down", "wan-up"):
            started = time.monotonic()
            self.ip(f"{dc_of(unit)}-{wan_port[0]}", "link", "set", wan_port[1],
                    "down" if kind == "wan-down" else "up")
        elif kind == "kill-keepalived":
            pids = self.keepalived_pids(unit)
            if not pids:
                raise RuntimeError(f"no keepalived process in {self.ns(unit)}")
            # Stop them all first, so that no parent sees its child die and reacts (respawns,
            # or resigns with priority 0) before the SIGKILLs land: a crash, not a shutdown.
            started = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
        elif kind in ("links-down", "links-up"):
            # the host dies: every link of it loses its carrier at once (both switch ports)
            state = "down" if kind == "links-down" else "up"
            started = time.monotonic()
            for switch, port in (wan_port, server_port):
                self.ip(f"{dc_of(unit)}-{switch}", "link", "set", port, state)
        else:
            raise ValueError(f"unknown fault {kind!r}")
        return started

    # --- VMs --------------------------------------------------------------------------------

    def migrate(self, vm, to=None):
        """Moves vm's vNIC to the other (or the given) hypervisor and announces it (GARP)."""
        where = self.vm_location(vm)
        to = to or ("dc2" if where == "dc1" else "dc1")
        if where != to:
            self.ip(f"{where}-hv", "link", "set", vm, "netns", self.ns(f"{to}-hv"))
            self.ip(f"{to}-hv", "link", "set", vm, "master", "br0", "up")
        deadline = time.monotonic() + 2
        while "UP" not in self.ip(vm, "-br", "link", "show", "dev", "eth0").stdout:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
        self.exec(vm, "arping", "-q", "-U", "-c", "2", "-w", "1", "-I", "eth0", VMS[vm][1],
                  check=False)

    # --- etherctl watch on every unit -------------------------------------------------------

    def start_agents(self, etherctl, site_file, lock_dir, log_dir, units=UNITS, extra=()):
        """`etherctl watch` in every unit's namespace, logs in log_dir/<unit>.log."""
        self.lock_dir = lock_dir
        self.agents = getattr(self, "agents", {})
        env = dict(os.environ, ETHERCTL_LOCK_DIR=lock_dir)
        for unit in units:
            log = open(os.path.join(log_dir, f"{unit}.log"), "a")
            self.agents[unit] = subprocess.Popen(
                [etherctl, "--netns", self.ns(unit), "--device", unit, "watch", "--listen", "none",
                 *extra, site_file],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            log.close()
        return self.agents

    def stop_agents(self, units=UNITS, sig=signal.SIGTERM, timeout=30):
        for unit in units:
            agent = getattr(self, "agents", {}).get(unit)
            if agent and agent.poll() is None:
                agent.send_signal(sig)
        for unit in units:
            agent = getattr(self, "agents", {}).get(unit)
            if agent:
                try:
                    agent.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait()

    def failover_dir(self, unit):
        """The unit's failover files (etherctl's state directory for its namespace)."""
        inode = os.stat(f"/run/netns/{self.ns(unit)}").st_ino
        return os.path.join(self.lock_dir, f"netns-{inode}.failover")

    def record(self, unit):
        """The role record the unit's agent writes (role, cause, peer, split brain, ...)."""
        try:
            with open(os.path.join(self.failover_dir(unit), "role.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def role(self, unit):
        return self.record(unit).get("role")

    def wait_roles(self, roles, timeout=30):
        """Waits until every unit of `roles` ({unit: "active"/"standby"}) has that role and its
        kernel state matches it (floating WAN address held by the active units only)."""
        deadline = time.monotonic() + timeout
        while True:
            now = {unit: self.role(unit) for unit in roles}
            held = {unit: self.holds_floating(unit) for unit in roles}
            if now == roles and all(held[u] == (r == "active") for u, r in roles.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"roles {now} (floating held: {held}), wanted {roles}")
            time.sleep(0.05)

    def holds_floating(self, unit):
        floating = WAN[dc_of(unit)][4]
        return any(a.startswith(floating + "/") for a in self.addresses(unit).get("eth0", []))

    # --- the site file ----------------------------------------------------------------------

    def site(self, advert_int=None, preempt=None, pools=False):
        return site(advert_int=advert_int, preempt=preempt, pools=pools)

    def status(self):
        for node in self.nodes():
            if not self.exists(node):
                print(f"== {self.ns(node)} (absent)")
                continue
            print(f"== {self.ns(node)}")
            for ifname, addrs in self.addresses(node).items():
                if ifname != "lo" and addrs:
                    print(f"   {ifname}: {' '.join(addrs)}")
            if node in UNITS:
                pids = self.keepalived_pids(node)
                if pids:
                    print(f"   keepalived: {' '.join(map(str, pids))}")
        for vm in VMS:
            print(f"{vm}: on {self.vm_location(vm)}-hv")


def site(advert_int=None, preempt=None, pools=False):
    """The lab's site file: each data center's pair is a failover group; the tunnel's endpoints
    and the servers' gateways are floating addresses of the groups."""
    devices, groups = {}, {}
    for dc in DCS:
        network, router, addr_a, addr_b, floating = WAN[dc]
        other = "dc2" if dc == "dc1" else "dc1"
        group = {"devices": [f"{dc}-a", f"{dc}-b"], "vlan": "wan", "virtual_router_id": VRID[dc]}
        if advert_int is not None:
            group["advert_int"] = advert_int
        if preempt is not None:
            group["preempt"] = preempt
        groups[dc] = group
        for unit, fixed, priority in ((f"{dc}-a", addr_a, 200), (f"{dc}-b", addr_b, 100)):
            device = {
                "failover": {"group": dc, "priority": priority},
                "vlans": {"wan": {"interface": "eth0"}, "servers": {"interface": "eth1"}},
                "vlan_groups": {"vmotion": {"members": ["servers", "dcx"]}},
                "self_ips": {
                    "wan-self": {"address": f"{fixed}/24", "vlan": "wan"},
                    "wan-floating": {"address": f"{floating}/24", "vlan": "wan", "floating": True},
                    "server-self": {"address": f"{SERVER_SELF[unit]}/24", "vlan": "vmotion"},
                    "server-gateway": {"address": f"{SERVER_GATEWAY[dc]}/24", "vlan": "vmotion",
                                       "floating": True},
                },
                "routes": {
                    f"to-{other}": {"destination": WAN[other][0], "gateway": router},
                    "to-clients": {"destination": CLIENT[0], "gateway": router},
                },
            }
            if pools and dc in VIRTUAL_SERVER:
                device["self_ips"]["virtual-server"] = {
                    "address": f"{VIRTUAL_SERVER[dc]}/24", "vlan": "wan", "floating": True}
                device["pools"] = {"web": {
                    "virtual": {"address": VIRTUAL_SERVER[dc], "port": 8080},
                    "members": {f"{VMS['vm1'][1]}:8080": {}, f"{VMS['vm3'][1]}:8080": {}}}}
            devices[unit] = device
    return {
        "etherctl": 1,
        "failover_groups": groups,
        "devices": devices,
        "tunnels": {"dcx": {"profile": "etherip",
                            "endpoints": {dc: WAN[dc][4] for dc in DCS}}},
    }


def without_groups(site):
    """`site` with its failover groups removed: each data center's unit a becomes its single
    edge host (keeping the floating addresses, now fixed, and the pools), unit b keeps only its
    fixed self IPs and its server port (the failover tests' removal case)."""
    site = json.loads(json.dumps(site))
    for dc in DCS:
        a = site["devices"][f"{dc}-a"]
        del a["failover"]
        for self_ip in a["self_ips"].values():
            self_ip.pop("floating", None)
        b = site["devices"][f"{dc}-b"]
        del b["failover"]
        b["self_ips"] = {k: v for k, v in b["self_ips"].items() if not v.get("floating")}
        b.pop("pools", None)
        b["vlan_groups"]["vmotion"]["members"] = ["servers"]
    site["tunnels"]["dcx"]["endpoints"] = {f"{dc}-a": WAN[dc][4] for dc in DCS}
    del site["failover_groups"]
    return site


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up")
    sub.add_parser("down")
    sub.add_parser("status")
    p = sub.add_parser("ns")
    p.add_argument("node")
    p = sub.add_parser("fault")
    p.add_argument("kind", choices=["wan-down", "wan-up", "kill-keepalived", "links-down",
                                    "links-up"])
    p.add_argument("unit", choices=UNITS)
    p = sub.add_parser("migrate")
    p.add_argument("vm", choices=sorted(VMS))
    p.add_argument("--to", choices=DCS)
    p = sub.add_parser("site")
    p.add_argument("--advert-int", type=float)
    p.add_argument("--pools", action="store_true")
    args = parser.parse_args()
    lab = Lab()
    if args.command == "up":
        lab.up()
    elif args.command == "down":
        lab.down()
    elif args.command == "status":
        lab.status()
    elif args.command == "ns":
        print(lab.ns(args.node))
    elif args.command == "fault":
        lab.fault(args.kind, args.unit)
    elif args.command == "migrate":
        lab.migrate(args.vm, args.to)
    elif args.command == "site":
        print(json.dumps(site(advert_int=args.advert_int, pools=args.pools), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
