#!/usr/bin/python3
"""Numbered UDP broadcasts, to find loops (duplicates) and losses on a stretched segment.

    broadcast.py send --to 10.1.0.255 [--port P] [--count N] [--rate PER_S] [--id NAME]
    broadcast.py listen [--port P] [--stop-file F] [--duration S]

`send` sends N datagrams "<id> <seq>" (seq 0..N-1) at a steady rate and prints a JSON summary
with the monotonic and wall-clock time of each send. `listen` counts every datagram it
receives by (id, seq) until the stop file exists (or the duration ends) and prints
{"received": {id: {seq: count}}}: a count above 1 is a duplicate (a loop or two forwarding
paths), a missing seq a loss.
"""
import argparse
import json
import os
import socket
import sys
import time


def send(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    start = time.monotonic()
    sent = []
    for seq in range(args.count):
        due = start + seq / args.rate
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        sock.sendto(f"{args.id} {seq}".encode(), (args.to, args.port))
        sent.append(round(time.time(), 6))
    print(json.dumps({"id": args.id, "sent": args.count, "at": sent}), flush=True)
    return 0


def listen(args):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("", args.port))
    sock.settimeout(0.05)
    print(json.dumps({"listening": args.port}), flush=True)
    received = {}
    end = time.monotonic() + args.duration
    while time.monotonic() < end and not (args.stop_file and os.path.exists(args.stop_file)):
        try:
            data, _ = sock.recvfrom(2048)
        except socket.timeout:
            continue
        try:
            sender, seq = data.decode().split()
        except ValueError:
            continue
        counts = received.setdefault(sender, {})
        counts[seq] = counts.get(seq, 0) + 1
    print(json.dumps({"received": received}), flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send")
    s.add_argument("--to", required=True)
    s.add_argument("--port", type=int, default=9999)
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--rate", type=float, default=100.0)
    s.add_argument("--id", default=socket.gethostname())
    l = sub.add_parser("listen")
    l.add_argument("--port", type=int, default=9999)
    l.add_argument("--stop-file")
    l.add_argument("--duration", type=float, default=3600.0)
    args = parser.parse_args()
    return send(args) if args.command == "send" else listen(args)


if __name__ == "__main__":
    sys.exit(main())
