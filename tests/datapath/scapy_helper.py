#!/usr/bin/python3
"""Runs inside a test namespace (via `ip netns exec`): raw frame capture and injection.

  scapy_helper.py sniff IFACE SECONDS [BPF-FILTER]   prints "ready"; on a line on stdin (or after
                                                     SECONDS) one JSON list of hex frames
  scapy_helper.py send IFACE HEX...                  sends the frames in the given order
"""
import json
import sys

from scapy.all import AsyncSniffer, conf, sendp  # noqa: E402

conf.verb = 0


def main():
    cmd, iface = sys.argv[1], sys.argv[2]
    if cmd == "sniff":
        seconds = float(sys.argv[3])
        bpf = sys.argv[4] if len(sys.argv) > 4 else None
        sniffer = AsyncSniffer(iface=iface, filter=bpf, store=True)
        sniffer.start()
        import time

        # start() returns before the capture thread has opened its socket; it sets
        # continue_sniff once it has.
        deadline = time.time() + 20
        while not getattr(sniffer, "continue_sniff", False) and time.time() < deadline:
            time.sleep(0.02)
        print("ready", flush=True)
        # Until the test says it has sent everything (a line or EOF on stdin), at most SECONDS;
        # then a grace period for frames still crossing the tunnel.
        import select

        select.select([sys.stdin], [], [], seconds)
        time.sleep(2.0)
        packets = sniffer.stop() or []
        print(json.dumps([bytes(p).hex() for p in packets]), flush=True)
    elif cmd == "send":
        for frame in sys.argv[3:]:
            sendp(bytes.fromhex(frame), iface=iface)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
