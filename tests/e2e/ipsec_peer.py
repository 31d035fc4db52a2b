#!/usr/bin/python3
"""A minimal EtherIP endpoint in Python (no scapy: it starts in 2 s under TCG, not 13).

  ipsec_peer.py ping  --source A --destination B --src-mac M --dst-mac M --src-ip I --dst-ip I
                      [--count N] [--timeout S]
      Speaks EtherIP (RFC 3378) with B through a raw protocol-97 socket, so the host's IPsec
      policies apply: answers ARP for --src-ip, sends ICMP echo requests to --dst-ip inside
      EtherIP and counts the replies ("N replies"); exit 0 when all came back.
  ipsec_peer.py forge --source A --destination B ... [--count N]
      Sends N EtherIP packets carrying ICMP echo requests in clear, with the outer source
      address A forged (IP_HDRINCL: no policy applies), as an attacker on the WAN would. Built
      by scapy (scapy.contrib.etherip: an EtherIP implementation independent of etherctl's).
"""
import argparse
import select
import socket
import struct
import sys
import time

ETHERIP = 97


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def mac(text):
    return bytes(int(b, 16) for b in text.split(":"))


def ip4(text):
    return socket.inet_aton(text)


def ethernet(dst, src, ethertype, payload):
    frame = dst + src + struct.pack("!H", ethertype) + payload
    return frame + b"\0" * max(0, 60 - len(frame))


def icmp_echo(src_ip, dst_ip, ident, seq, kind=8):
    body = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"etherctl-ipsec-test" * 3
    body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq, 0, 64, 1, 0,
                         ip4(src_ip), ip4(dst_ip))
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + body


def arp_reply(a, request):
    """The reply to an ARP request (the ARP packet, behind the Ethernet header)."""
    sender_mac, sender_ip = request[8:14], request[14:18]
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + mac(a.src_mac) + ip4(a.src_ip) + \
        sender_mac + sender_ip
    return ethernet(sender_mac, mac(a.src_mac), 0x0806, arp)


def ping(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, ETHERIP)
    s.bind((a.source, 0))
    ident, replies, seq, last_sent = 0x4543, set(), 0, 0.0
    deadline = time.time() + a.timeout
    while len(replies) < a.count and time.time() < deadline:
        if time.time() - last_sent > 0.5:
            seq += 1
            frame = ethernet(mac(a.dst_mac), mac(a.src_mac), 0x0800,
                             icmp_echo(a.src_ip, a.dst_ip, ident, seq))
            try:
                s.sendto(b"\x30\x00" + frame, (a.destination, 0))
            except OSError as e:  # no SA yet: the policy holds the packet back
                print(f"send: {e}", file=sys.stderr)
            last_sent = time.time()
        if not select.select([s], [], [], 0.2)[0]:
            continue
        packet, (peer, _) = s.recvfrom(65535)
        if peer != a.destination:
            continue
        payload = packet[(packet[0] & 15) * 4:]
        if payload[:2] != b"\x30\x00" or len(payload) < 16:
            continue
        frame = payload[2:]
        ethertype = struct.unpack("!H", frame[12:14])[0]
        if ethertype == 0x0806 and frame[20:22] == b"\x00\x01" and frame[38:42] == ip4(a.src_ip):
            s.sendto(b"\x30\x00" + arp_reply(a, frame[14:]), (a.destination, 0))
        elif ethertype == 0x0800 and frame[23] == 1:
            ip_header_len = (frame[14] & 15) * 4
            icmp = frame[14 + ip_header_len:]
            kind, _, _, rid, rseq = struct.unpack("!BBHHH", icmp[:8])
            if kind == 0 and rid == ident:
                replies.add(rseq)
    print(f"{len(replies)} replies")
    return 0 if len(replies) >= a.count else 1


def forge(a):
    # scapy only here: its start-up (about 13 s under TCG) is paid by this one case.
    from scapy.all import ICMP, IP, Ether, conf, send  # noqa: E402
    from scapy.contrib.etherip import EtherIP  # noqa: E402
    conf.verb = 0
    for seq in range(1, a.count + 1):
        send(IP(src=a.source, dst=a.destination, id=seq) / EtherIP() /
             Ether(src=a.src_mac, dst=a.dst_mac) /
             IP(src=a.src_ip, dst=a.dst_ip) / ICMP(id=0x4544, seq=seq))
        time.sleep(0.01)
    print(f"sent {a.count}")
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["ping", "forge"])
    for name in ("--source", "--destination", "--src-mac", "--dst-mac", "--src-ip", "--dst-ip"):
        p.add_argument(name, required=True)
    p.add_argument("--count", type=int, default=3)
    p.add_argument("--timeout", type=float, default=30)
    a = p.parse_args()
    return ping(a) if a.mode == "ping" else forge(a)


if __name__ == "__main__":
    sys.exit(main())
