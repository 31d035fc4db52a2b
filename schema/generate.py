#!/usr/bin/python3
"""Writes schema/site.schema.json, the JSON Schema (draft 2020-12) of etherctl's site file.

The schema is generated because JSON Schema cannot compose regular expressions: the address
patterns below are built from parts, and writing them out by hand is how mistakes creep in.
Edit this script, run it (`schema/generate.py`), commit both files; tests/schema/test_schema.py
fails when the committed schema is not what this script writes.

The rules mirror lib/model/site.cpp, fields.cpp, pools.cpp and ip.cpp (glibc inet_pton).
What only the semantic validator (lib/model/validate.cpp) can check — references between
objects, duplicates across objects, host bits — is described in the field descriptions and
left to `etherctl validate`.
"""

import json
import pathlib
import sys

# --- Patterns ----------------------------------------------------------------------------------
#
# Patterns are written for both ECMA-262 (editors) and Python's re (jsonschema): no \d, \s, \w
# (their Unicode meaning differs from the C locale etherctl uses), and every pattern ends with
# END: Python's "$" also matches before a final newline, "(?!\n)" rules that out (in ECMA-262
# "$" is already the end of the string).
END = r"$(?!\n)"

# An IPv4 octet as glibc's inet_pton reads it: 0..255, no leading zeros.
OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"(?:{OCTET}\.){{3}}{OCTET}"
H16 = r"[0-9A-Fa-f]{1,4}"


def _ipv6() -> str:
    """IPv6 text as inet_pton reads it: eight groups, or fewer around one "::" that stands for
    at least one zero group; the last two groups may be written as a dotted IPv4 address."""
    alternatives = [rf"(?:{H16}:){{7}}{H16}", rf"(?:{H16}:){{6}}{IPV4}"]
    for left in range(0, 8):  # groups before "::"
        head = "" if left == 0 else rf"(?:{H16}:){{{left - 1}}}{H16}" if left > 1 else H16
        right_max = 7 - left  # "::" stands for at least one group
        if right_max > 0:
            tail = rf"(?:{H16}(?::{H16}){{0,{right_max - 1}}})?"
        else:
            tail = ""
        alternatives.append(rf"{head}::{tail}")
        if right_max >= 2:  # room for a dotted IPv4 tail (two groups)
            hex_before = right_max - 2
            v4_tail = rf"(?:{H16}:){{0,{hex_before}}}{IPV4}" if hex_before else IPV4
            alternatives.append(rf"{head}::{v4_tail}")
    return "(?:" + "|".join(alternatives) + ")"


IPV6 = _ipv6()
# Prefix lengths: 1..3 decimal digits (leading zeros allowed, as etherctl reads them).
V4_LENGTH = r"(?:0{0,2}[0-9]|0?[12][0-9]|0?3[0-2])"
V6_LENGTH = r"(?:0{0,2}[0-9]|0?[1-9][0-9]|1[01][0-9]|12[0-8])"
# TCP/UDP ports 1..65535 in at most five digits (leading zeros allowed).
PORT = (r"(?:0{0,4}[1-9]|0{0,3}[1-9][0-9]|0{0,2}[1-9][0-9]{2}|0?[1-9][0-9]{3}"
        r"|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])")

IPV4_ADDRESS = rf"^{IPV4}{END}"
IPV6_ADDRESS = rf"^{IPV6}{END}"
ADDRESS = rf"^(?:{IPV4}|{IPV6}){END}"
IPV4_PREFIX = rf"^{IPV4}/{V4_LENGTH}{END}"
IPV6_PREFIX = rf"^{IPV6}/{V6_LENGTH}{END}"
PREFIX = rf"^(?:{IPV4}/{V4_LENGTH}|{IPV6}/{V6_LENGTH}){END}"
IPV4_MEMBER = rf"^{IPV4}:{PORT}{END}"
IPV6_MEMBER = rf"^\[{IPV6}\]:{PORT}{END}"


def interface_name(max_bytes: int) -> str:
    """Linux interface names (dev_valid_name): not "." or "..", no '/', ':', space or control
    character. JSON Schema counts characters, the kernel bytes: a name with non-ASCII letters
    may pass the schema and still be too long for etherctl (it counts UTF-8 bytes)."""
    return rf"^(?!\.\.?{END})[^/:\x00-\x20\x7f]{{1,{max_bytes}}}{END}"


IFNAME = interface_name(15)
TUNNEL_NAME = interface_name(11)
DEVICE_NAME = rf"^[A-Za-z0-9._-]{{1,63}}{END}"

SCHEDULERS = ["rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf",
              "mh", "twos"]


# --- Building blocks ---------------------------------------------------------------------------

def endpoint_of_family(pattern: str) -> dict:
    """A tunnel endpoint (string or object) whose address matches `pattern`."""
    return {"anyOf": [{"type": "string", "pattern": pattern},
                      {"type": "object", "properties": {"address": {"pattern": pattern}}}]}


def ref(name: str) -> dict:
    return {"$ref": f"#/$defs/{name}"}


def mtu(what: str, maximum: int = 65535, why: str = "") -> dict:
    return {
        "description": f"MTU of {what}, 68..{maximum} bytes{why}. Absent: etherctl leaves the "
                       "MTU alone (the kernel's default on creation).",
        "type": "integer", "minimum": 68, "maximum": maximum, "examples": [1500, 9000],
    }


def named_map(description: str, item: dict, names: dict | None = None,
              default: bool = True) -> dict:
    out = {"description": description, "type": "object"}
    if default:
        out["default"] = {}
    out.update({"propertyNames": names or {"minLength": 1}, "additionalProperties": item})
    return out


def family_rule(parent_key: str | None, key: str, v4: str, v6: str, dependent: dict) -> list:
    """if/then pairs: when `key` (inside `parent_key`, if given) is IPv4 (IPv6), `dependent`
    (a function of the family's pattern) must hold too."""
    rules = []
    for pattern, dep in ((v4, dependent["4"]), (v6, dependent["6"])):
        condition = {"properties": {key: {"type": "string", "pattern": pattern}}, "required": [key]}
        if parent_key:
            condition = {"properties": {parent_key: condition}, "required": [parent_key]}
        rules.append({"if": condition, "then": dep})
    return rules


def build() -> dict:
    defs = {}

    defs["interfaceName"] = {
        "description": "A Linux interface name: 1..15 bytes, not \".\" or \"..\", no '/', ':', "
                       "whitespace or control characters.",
        "type": "string", "pattern": IFNAME,
    }
    defs["tunnelName"] = {
        "description": "A tunnel name, which is also its bridge port's interface name: 1..11 "
                       "bytes (its datapath peer is \"eip-<name>\", 15 bytes at most), not \".\" "
                       "or \"..\", no '/', ':', whitespace or control characters.",
        "type": "string", "pattern": TUNNEL_NAME,
    }
    defs["deviceName"] = {
        "description": "A device name: 1..63 letters, digits, '.', '_' or '-'. By default a host "
                       "applies the device named like its host name.",
        "type": "string", "pattern": DEVICE_NAME,
    }
    defs["address"] = {
        "description": "An IPv4 or IPv6 address, without prefix length.",
        "type": "string", "pattern": ADDRESS,
        "examples": ["198.51.100.1", "2001:db8::1"],
    }

    vlan_properties = {
        "interface": {
            "description": "With a tag: the parent interface the 802.1Q device is created on, "
                           "an existing one (not a tagged VLAN, VLAN group or tunnel of the "
                           "file). Without a tag: the interface that is the VLAN; etherctl adopts it "
                           "(sets its MTU, brings it up) and never deletes it. One interface can "
                           "be adopted by one VLAN only.",
            "allOf": [ref("interfaceName")], "examples": ["eth1"],
        },
        "tag": {
            "description": "802.1Q VLAN id 1..4094. With a tag etherctl creates an 802.1Q device "
                           "named after the VLAN (so the VLAN name must be a valid interface "
                           "name). Absent: the VLAN is `interface` itself (untagged). A tag is "
                           "used once per parent interface.",
            "type": "integer", "minimum": 1, "maximum": 4094, "examples": [100],
        },
        "mtu": mtu("the VLAN's interface"),
    }
    defs["vlan"] = {
        "description": "A server VLAN.",
        "type": "object", "required": ["interface"], "additionalProperties": False,
        "properties": vlan_properties,
    }
    defs["untaggedVlan"] = {
        "description": "A VLAN whose name is not a valid interface name: allowed only without "
                       "a tag (a tagged VLAN becomes an interface named after the VLAN).",
        "allOf": [ref("vlan"), {"not": {"required": ["tag"]}}],
    }

    defs["vlanGroup"] = {
        "description": "A VLAN group: a Linux bridge named after the group, whose ports are the "
                       "member VLANs and tunnels.",
        "type": "object", "required": ["members"], "additionalProperties": False,
        "properties": {
            "members": {
                "description": "Names of this device's VLANs and of tunnels with an endpoint on "
                               "this device, each listed once. A VLAN belongs to one group at "
                               "most.",
                "type": "array", "uniqueItems": True,
                "items": {"type": "string", "minLength": 1},
                "examples": [["servers", "dcx"]],
            },
            "mode": {
                "description": "How the group bridges frames. Only \"transparent\" (frames "
                             "bridged unchanged) is implemented; BIG-IP's \"translucent\", "
                             "\"opaque\" and \"virtual-wire\" are refused by etherctl with a clear "
                             "message.",
                "type": "string", "enum": ["transparent"], "default": "transparent",
            },
            "mtu": mtu("the bridge"),
        },
    }

    defs["selfIp"] = {
        "description": "A self IP: an address on a VLAN or a VLAN group. Addresses are unique "
                       "per device; an IPv4 address must not be its subnet's network or broadcast "
                       "address (for prefixes up to /30).",
        "type": "object", "required": ["address", "vlan"], "additionalProperties": False,
        "properties": {
            "address": {
                "description": "Address and prefix length, \"address/length\" (length 0..32 "
                               "for IPv4, 0..128 for IPv6).",
                "type": "string", "pattern": PREFIX,
                "examples": ["10.1.0.1/24", "2001:db8:1::1/64"],
            },
            "vlan": {
                "description": "The VLAN or VLAN group that carries the address; not a VLAN that "
                               "is a member of a group (a bridge port carries no addresses: use "
                               "the group).",
                "type": "string", "minLength": 1, "examples": ["vmotion"],
            },
            "floating": {
                "description": "The address moves with the active unit of the device's failover "
                               "group: the standby does not hold it. Only on a unit of a group; "
                               "the unit needs a fixed (not floating) self IP in the same subnet "
                               "on the same VLAN, and both units declare the same floating self "
                               "IPs.",
                "type": "boolean", "default": False,
            },
        },
    }

    defs["route"] = {
        "description": "A static route. It needs a gateway, a VLAN, or both. Destinations are "
                       "unique per device.",
        "type": "object", "required": ["destination"], "additionalProperties": False,
        "anyOf": [{"required": ["gateway"]}, {"required": ["vlan"]}],
        "allOf": family_rule(None, "destination", IPV4_PREFIX, IPV6_PREFIX, {
            "4": {"properties": {"gateway": {"pattern": IPV4_ADDRESS}}},
            "6": {"properties": {"gateway": {"pattern": IPV6_ADDRESS}}},
        }),
        "properties": {
            "destination": {
                "description": "The destination network, \"address/length\", without host bits "
                               "(\"0.0.0.0/0\" or \"::/0\" for a default route).",
                "type": "string", "pattern": PREFIX,
                "examples": ["203.0.113.0/24", "0.0.0.0/0"],
            },
            "gateway": {
                "description": "The next hop, an address of the destination's family. Absent: "
                               "the destination is directly on `vlan`.",
                "allOf": [ref("address")], "examples": ["198.51.100.254"],
            },
            "vlan": {
                "description": "The VLAN or VLAN group the route goes out of (not a member of a "
                               "group). Absent: the kernel picks the interface from the gateway.",
                "type": "string", "minLength": 1, "examples": ["wan"],
            },
        },
    }

    defs["poolMember"] = {
        "description": "A pool member (an IPVS real server).",
        "type": "object", "additionalProperties": False,
        "properties": {
            "weight": {
                "description": "Relative weight 0..65535; 0 quiesces the member (existing "
                               "connections only).",
                "type": "integer", "minimum": 0, "maximum": 65535, "default": 1,
            },
        },
    }
    defs["pool"] = {
        "description": "A pool: one IPVS virtual service and its members. One pool per virtual "
                       "(address, port, protocol) on a device; members and the virtual address "
                       "are of one address family.",
        "type": "object", "required": ["virtual", "members"], "additionalProperties": False,
        "allOf": family_rule("virtual", "address", IPV4_ADDRESS, IPV6_ADDRESS, {
            "4": {"properties": {"members": {"propertyNames": {"pattern": IPV4_MEMBER}}}},
            "6": {"properties": {"members": {"propertyNames": {"pattern": IPV6_MEMBER}}}},
        }),
        "properties": {
            "virtual": {
                "description": "The virtual server clients connect to.",
                "type": "object", "required": ["address", "port"], "additionalProperties": False,
                "properties": {
                    "address": {"description": "The virtual address. When it is no self IP, "
                                               "etherctl adds it as a host address (/32, /128) "
                                               "on the VLAN that faces the clients.",
                                "allOf": [ref("address")], "examples": ["10.1.0.100"]},
                    "port": {"description": "The virtual port, 1..65535.",
                             "type": "integer", "minimum": 1, "maximum": 65535,
                             "examples": [80]},
                    "protocol": {"description": "\"tcp\" or \"udp\".",
                                 "type": "string", "enum": ["tcp", "udp"], "default": "tcp"},
                    "scheduler": {"description": "The IPVS scheduler (the kernel's ip_vs_<name> "
                                                 "module).",
                                  "type": "string", "enum": SCHEDULERS, "default": "wlc"},
                    "vlan": {"description": "The VLAN or VLAN group that faces the clients, "
                                            "where etherctl adds the virtual address when it is "
                                            "no self IP (default: the one of the self IP whose "
                                            "subnet holds it).",
                             "type": "string", "minLength": 1, "examples": ["wan"]},
                },
            },
            "members": {
                "description": "The real servers, keyed \"address:port\" (IPv6 as "
                               "\"[address]:port\"); each server once.",
                "type": "object",
                "propertyNames": {"pattern": rf"^(?:{IPV4}:{PORT}|\[{IPV6}\]:{PORT}){END}"},
                "additionalProperties": ref("poolMember"),
                "examples": [{"10.1.0.21:80": {}, "10.1.0.22:80": {"weight": 2}}],
            },
            "monitor": {
                "description": "Health monitor of the pool. Absent: no monitor.",
                "type": "object", "required": ["type"], "additionalProperties": False,
                "properties": {
                    "type": {"description": "\"virtual_location\": members on this site are "
                                            "preferred; others are used when fewer than "
                                            "min_active_members local members remain.",
                             "type": "string", "enum": ["virtual_location"]},
                    "interval": {"description": "Seconds between checks, 1..86400.",
                                 "type": "integer", "minimum": 1, "maximum": 86400,
                                 "default": 5},
                    "min_active_members": {"description": "Members that must be active, "
                                                          "0..65535 (at most the member count).",
                                           "type": "integer", "minimum": 0, "maximum": 65535,
                                           "default": 1},
                },
            },
        },
    }

    defs["device"] = {
        "description": "One edge host's part of the site.",
        "type": "object", "additionalProperties": False,
        "properties": {
            "vlans": {
                "description": "Server VLANs by name. A tagged VLAN's name is its interface "
                               "name (1..15 bytes); an untagged VLAN may have any non-empty "
                               "name.",
                "type": "object", "default": {}, "propertyNames": {"minLength": 1},
                "patternProperties": {IFNAME: ref("vlan")},
                "additionalProperties": ref("untaggedVlan"),
            },
            "vlan_groups": named_map("VLAN groups (bridges) by name; the name is the bridge's "
                                     "interface name.", ref("vlanGroup"),
                                     {"$ref": "#/$defs/interfaceName"}),
            "self_ips": named_map("Self IPs by name.", ref("selfIp")),
            "routes": named_map("Static routes by name.", ref("route")),
            "pools": named_map("Load-balanced pools (IPVS virtual services) by name.",
                               ref("pool")),
            "failover": {
                "description": "The device is a unit of a failover group: "
                               "{\"group\": NAME, \"priority\": 1..254}. The unit with the "
                               "higher priority is active when both can be.",
                "type": "object", "required": ["group", "priority"],
                "additionalProperties": False,
                "properties": {
                    "group": {"description": "The failover group (a key of "
                                             "\"failover_groups\") that lists this device.",
                              "type": "string", "minLength": 1, "examples": ["dc1"]},
                    "priority": {"description": "VRRP priority (255, the address owner's, is "
                                                "not allowed); the two units' differ.",
                                 "type": "integer", "minimum": 1, "maximum": 254,
                                 "examples": [200, 100]},
                },
            },
        },
    }

    defs["failoverGroup"] = {
        "description": "Two devices of one data center that share a configuration: keepalived "
                       "(VRRPv3) elects the active one, which holds the floating self IPs and "
                       "forwards; the other is standby. Both declare the same VLANs, VLAN "
                       "groups, floating self IPs and pools.",
        "type": "object", "required": ["devices", "vlan", "virtual_router_id"],
        "additionalProperties": False,
        "properties": {
            "devices": {"description": "The two units (device names); each has \"failover\" "
                                       "naming this group.",
                        "type": "array", "items": ref("deviceName"), "minItems": 2,
                        "maxItems": 2, "examples": [["dc1-a", "dc1-b"]]},
            "vlan": {"description": "The VLAN (or VLAN group) the units elect on; each unit has "
                                    "a fixed IPv4 self IP on it (VRRP sends from it).",
                     "type": "string", "minLength": 1, "examples": ["wan"]},
            "virtual_router_id": {"description": "VRRP virtual router id, unique among the "
                                                 "file's groups; also the IPVS connection sync "
                                                 "id.",
                                  "type": "integer", "minimum": 1, "maximum": 255,
                                  "examples": [51]},
            "advert_int": {"description": "VRRP advertisement interval in seconds, in steps of "
                                          "0.01 (VRRPv3 centiseconds). The master is declared "
                                          "dead after 3 intervals plus skew: 0.1 fails over in "
                                          "about a third of a second.",
                           "type": "number", "minimum": 0.01, "maximum": 40.95, "default": 0.1},
            "preempt": {"description": "The unit with the higher priority takes over again "
                                       "when it returns.",
                        "type": "boolean", "default": True},
            "preempt_delay": {"description": "Seconds a returning unit waits before it takes "
                                             "over (with preempt).",
                              "type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
            "unicast": {"description": "Send VRRP advertisements to the peer's fixed self IP "
                                       "instead of the multicast group 224.0.0.18 (for networks "
                                       "that filter multicast).",
                        "type": "boolean", "default": False},
        },
    }

    defs["tunnelEndpoint"] = {
        "description": "A tunnel endpoint written as an object: a peer that etherctl does not "
                       "manage (\"managed\": false), or a device's self IP (\"managed\": true, "
                       "the same as the plain string).",
        "type": "object", "required": ["address"], "additionalProperties": False,
        "properties": {
            "address": {**ref("address"), "description": "The endpoint's IPv4 or IPv6 address "
                                                         "(outer source or destination)."},
            "managed": {"description": "false: the peer is not a device of this file; etherctl "
                                       "configures only its own end (the datapath accepts this "
                                       "peer's packets).",
                        "type": "boolean", "default": True},
        },
        "examples": [{"address": "203.0.113.7", "managed": False}],
    }
    defs["tunnel"] = {
        "description": "An EtherIP tunnel between two devices; a VLAN group on each device "
                       "lists it as a member.",
        "type": "object", "required": ["profile", "endpoints"], "additionalProperties": False,
        "properties": {
            "profile": {
                "description": "The tunnel protocol: \"etherip\" (RFC 3378).",
                "const": "etherip", "examples": ["etherip"],
            },
            "endpoints": {
                "description": "Exactly two endpoints, by name. A device of the file: its "
                               "endpoint address, which must be one of its self IPs (a string). "
                               "A failover group: one of its floating self IPs (a string). "
                               "A peer that etherctl does not manage (a BIG-IP, an OpenBSD "
                               "etherip(4), a FreeBSD gif(4)): {\"address\": ..., \"managed\": "
                               "false}, named anything but a device or failover group of the "
                               "file. One managed and one unmanaged endpoint, or two managed. "
                               "Both of one address family, distinct.",
                "type": "object", "minProperties": 2, "maxProperties": 2,
                "propertyNames": ref("deviceName"),
                "additionalProperties": {"oneOf": [ref("address"), ref("tunnelEndpoint")]},
                "anyOf": [{"additionalProperties": endpoint_of_family(IPV4_ADDRESS)},
                          {"additionalProperties": endpoint_of_family(IPV6_ADDRESS)}],
                "not": {"additionalProperties": {"type": "object", "required": ["managed"],
                                                 "properties": {"managed": {"const": False}}}},
                "examples": [{"dc1-edge": "198.51.100.1", "dc2-edge": "203.0.113.1"},
                             {"dc1-edge": "198.51.100.1",
                              "bigip-dc2": {"address": "203.0.113.7", "managed": False}}],
            },
            "mtu": mtu("the tunnel's bridge port", 9216,
                       " (the EtherIP datapath reassembles outer datagrams of up to 9240 bytes: "
                       "a 9216-byte packet in a double-tagged Ethernet frame plus the EtherIP "
                       "header)"),
            "accept_reversed_header": {
                "description": "Also accept EtherIP headers written as 0x0300 (old FreeBSD and "
                               "NetBSD peers) besides RFC 3378's 0x3000.",
                "type": "boolean", "default": False,
            },
            "fast_path": {
                "description": "Route outer packets that fit the underlay MTU in BPF "
                               "(bpf_fib_lookup, then redirect out of the underlay) instead of "
                               "handing them to the IP stack; larger ones still take the stack "
                               "and are fragmented there.",
                "type": "boolean", "default": False,
            },
            "clamp_tcp_mss": {
                "description": "Lower the MSS of TCP SYNs entering the tunnel so that new "
                               "connections across the WAN need no fragmentation (existing "
                               "connections of a migrated VM still work, fragmented).",
                "type": "boolean", "default": True,
            },
            "ipsec": dict(ref("ipsec"), description="IPsec for the tunnel (see the ipsec "
                                                    "object); default: none, EtherIP in clear."),
        },
    }

    secret_file = ("An absolute path to a file readable by its owner only (no group or other "
                   "permission bits), on each device.")
    proposal = {"type": "string", "minLength": 1,
                "pattern": rf"^[a-z0-9_]+(?:-[a-z0-9_]+)*(?:,[a-z0-9_]+(?:-[a-z0-9_]+)*)*{END}"}
    defs["ipsec"] = {
        "description": "Encrypt and authenticate the tunnel with IPsec ESP, keys negotiated by "
                       "strongSwan (IKEv2). etherctl renders and loads one swanctl connection "
                       "per tunnel and owns the kernel side (policies, the ESP veth pair). "
                       "Clear EtherIP from the peer is then dropped (drop reason "
                       "\"plaintext\"), and nothing leaves in clear. Authenticate with "
                       "psk_file, or with certificate + key + ca. Not with fast_path.",
        "type": "object", "additionalProperties": False,
        "oneOf": [{"required": ["psk_file"]}, {"required": ["certificate", "key", "ca"]}],
        "properties": {
            "psk_file": {
                "description": "The pre-shared key: a file of at least 32 bytes (one trailing "
                               "newline is not part of the key), the same on both devices. "
                               + secret_file,
                "type": "string", "pattern": rf"^/.*{END}",
                "examples": ["/etc/etherctl/dcx.psk"],
            },
            "certificate": {"description": "This device's X.509 certificate (PEM), at the same "
                                           "path on each device.",
                            "type": "string", "pattern": rf"^/.*{END}"},
            "key": {"description": "The certificate's private key (PEM). " + secret_file,
                    "type": "string", "pattern": rf"^/.*{END}"},
            "ca": {"description": "The CA certificate (PEM) that signed the peer's certificate.",
                   "type": "string", "pattern": rf"^/.*{END}"},
            "identities": {
                "description": "IKE identity of each device (default: its endpoint address; "
                               "with certificates, a subject or subjectAltName of its "
                               "certificate).",
                "type": "object", "propertyNames": ref("deviceName"),
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 255,
                                         "pattern": rf"^[ !$-\[\]-z|~]+{END}"},
            },
            "mode": {
                "description": "ESP mode: \"transport\" (default; protects the EtherIP "
                               "packet itself, 20 bytes less per packet, what OpenBSD etherip(4) "
                               "and NEC IX routers speak) or \"tunnel\".",
                "enum": ["transport", "tunnel"], "default": "transport",
            },
            "proposals": {
                "description": "strongSwan proposals (algorithms joined by '-', alternatives "
                               "by ','). null, DES, 3DES, MD5, Blowfish, CAST and MODP "
                               "groups below 2048 bits are refused.",
                "type": "object", "additionalProperties": False,
                "properties": {
                    "ike": dict(proposal, default="aes256gcm16-prfsha384-ecp384",
                                description="IKE SA proposals."),
                    "esp": dict(proposal, default="aes256gcm16-ecp384",
                                description="ESP (CHILD_SA) proposals; a DH group gives "
                                            "perfect forward secrecy at each rekey."),
                },
            },
            "lifetimes": {
                "description": "Seconds between rekeyings (strongSwan adds 10% hard lifetime "
                               "and a random jitter).",
                "type": "object", "additionalProperties": False,
                "properties": {
                    "ike_rekey": {"description": "Seconds between IKE SA rekeyings.",
                                  "type": "integer", "minimum": 10, "maximum": 604800,
                                  "default": 14400},
                    "child_rekey": {"description": "Seconds between ESP (CHILD_SA) rekeyings.",
                                    "type": "integer", "minimum": 10, "maximum": 604800,
                                    "default": 3600},
                },
            },
            "dpd_delay": {"description": "Seconds without traffic from the peer before a "
                                         "dead-peer-detection check.",
                          "type": "integer", "minimum": 1, "maximum": 3600, "default": 10},
        },
    }

    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$comment": "Generated by schema/generate.py from etherctl's parser rules; do not edit. "
                    "Patterns end in \"$(?!\\n)\" so that Python's re agrees with ECMA-262.",
        "title": "etherctl site file",
        "description": "The site file of etherctl (schema version 1): server VLANs, VLAN groups, "
                       "self IPs, routes and pools of each edge device, and the EtherIP tunnels "
                       "between them. `etherctl validate` checks everything this schema checks "
                       "and also the references between objects. See etherctl-site.json(5).",
        "type": "object",
        "required": ["etherctl", "devices"],
        "additionalProperties": False,
        "properties": {
            "$schema": {"description": "The schema the file follows, for editors "
                                       "(e.g. \"file:///usr/share/etherctl/site.schema.json\"); "
                                       "ignored by etherctl.",
                        "type": "string"},
            "etherctl": {"description": "The site file schema version; this etherctl reads "
                                        "version 1.",
                         "type": "integer", "const": 1, "default": 1},
            "description": {"description": "Free text; ignored by etherctl.", "type": "string"},
            "devices": named_map("The edge devices by name; each host applies its own.",
                                 ref("device"), ref("deviceName"), default=False),
            "tunnels": named_map("EtherIP tunnels by name; the name is the tunnel's bridge port "
                                 "interface name (1..11 bytes).", ref("tunnel"),
                                 ref("tunnelName")),
            "failover_groups": named_map("Failover groups by name: pairs of devices of which "
                                         "one is active (see docs/failover.md).",
                                         ref("failoverGroup"), ref("deviceName")),
        },
        "$defs": defs,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=True) + "\n"


def main() -> int:
    target = pathlib.Path(__file__).resolve().parent / "site.schema.json"
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        return 0 if target.read_text() == render() else 1
    target.write_text(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
