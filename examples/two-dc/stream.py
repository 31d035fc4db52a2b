#!/usr/bin/python3
"""A long-lived TCP stream that checks every byte both ways and measures stalls.

    stream.py server --bind ADDR [--port P]          echo server (run it in the VM); verifies
                                                     what it receives, prints a JSON summary
    stream.py client --connect ADDR [--source ADDR] [--port P]
                     [--duration S [--stop-file F] | --bytes N] [--rate BYTES_PER_S]
                     [--chunk BYTES]

The client sends a counter pattern (byte i of the stream = byte i mod len(PATTERN) of the big-
endian 32-bit counters 0, 1, 2, ...; a lost, duplicated or reordered byte shifts everything
after it), the server checks it and echoes it, and the client checks every echoed byte. The
client reports the longest stall: the longest time without any echoed byte arriving while data
was outstanding. Exit status 0 only when every byte came back intact and the connection ended
cleanly (no reset, no timeout).
"""
import argparse
import json
import os
import socket
import struct
import sys
import threading
import time

PERIOD = 65521  # a prime number of counters, so the pattern never lines up with chunk sizes
PATTERN = b"".join(struct.pack(">I", k) for k in range(PERIOD))
CHUNK = 16384


def expected(offset, length):
    """The pattern bytes at stream offsets [offset, offset + length)."""
    start = offset % len(PATTERN)
    out = bytearray()
    while len(out) < length:
        take = min(length - len(out), len(PATTERN) - start)
        out += PATTERN[start:start + take]
        start = 0
    return bytes(out)


def first_mismatch(data, offset):
    want = expected(offset, len(data))
    if data == want:
        return None
    for i, (a, b) in enumerate(zip(data, want)):
        if a != b:
            return offset + i
    return offset + min(len(data), len(want))


def server(args):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((args.bind, args.port))
    lsock.listen(1)
    print(json.dumps({"listening": f"{args.bind}:{args.port}"}), flush=True)
    conn, peer = lsock.accept()
    lsock.close()
    received, bad_at, error = 0, None, None
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                break
            if bad_at is None:
                bad_at = first_mismatch(data, received)
            received += len(data)
            conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
    except OSError as e:
        error = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    summary = {"role": "server", "peer": f"{peer[0]}:{peer[1]}", "received": received,
               "first_bad_byte": bad_at, "error": error}
    print(json.dumps(summary), flush=True)
    return 0 if error is None and bad_at is None else 1


class Client:
    def __init__(self, args):
        self.args = args
        self.sent = 0
        self.verified = 0
        self.bad_at = None
        self.error = None
        self.send_error = None
        self.stall = 0.0
        self.stall_at = None
        self.stall_end = None
        self.t0 = time.monotonic()
        self.last_rx = None
        self.lock = threading.Lock()
        self.done_sending = threading.Event()
        self.next_stop_check = 0.0

    def sender(self, sock):
        a = self.args
        start = time.monotonic()
        try:
            while True:
                now = time.monotonic()
                if a.bytes is not None and self.sent >= a.bytes:
                    break
                if a.bytes is None and now - start >= a.duration:
                    break
                if a.stop_file and now >= self.next_stop_check:
                    self.next_stop_check = now + 0.05
                    if os.path.exists(a.stop_file):
                        break
                size = a.chunk if a.bytes is None else min(a.chunk, a.bytes - self.sent)
                if a.rate:
                    due = start + (self.sent + size) / a.rate
                    if due > now:
                        time.sleep(min(due - now, 0.05))
                        continue
                data = expected(self.sent, size)
                sock.sendall(data)
                with self.lock:
                    if self.verified == self.sent:  # nothing was outstanding: restart the clock
                        self.last_rx = time.monotonic()
                    self.sent += size
            sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.send_error = f"{type(e).__name__}: {e}"
        finally:
            self.done_sending.set()

    def note_progress(self, now):
        with self.lock:
            if self.last_rx is not None:
                gap = now - self.last_rx
                if gap > self.stall:
                    self.stall, self.stall_at = gap, self.verified
                    self.stall_end = now - self.t0
            self.last_rx = now

    def run(self):
        a = self.args
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if a.source:
            sock.bind((a.source, 0))
        sock.settimeout(a.connect_timeout)
        t0 = self.t0 = time.monotonic()
        sock.connect((a.connect, a.port))
        sock.settimeout(a.timeout)  # a read that waits longer than this fails the run
        self.last_rx = time.monotonic()
        thread = threading.Thread(target=self.sender, args=(sock,), daemon=True)
        thread.start()
        next_report = time.monotonic() + 1
        try:
            while True:
                data = sock.recv(65536)
                now = time.monotonic()
                if not data:
                    break
                if self.bad_at is None:
                    self.bad_at = first_mismatch(data, self.verified)
                self.note_progress(now)
                with self.lock:
                    self.verified += len(data)
                if a.progress and now >= next_report:
                    next_report = now + 1
                    print(f"stream: t={now - t0:5.1f}s sent={self.sent} echoed+verified="
                          f"{self.verified} longest stall so far={self.stall * 1000:.0f} ms",
                          file=sys.stderr, flush=True)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"
        finally:
            sock.close()
        thread.join(timeout=5)
        result = {
            "role": "client", "sent": self.sent, "echoed": self.verified,
            "complete": self.verified == self.sent and self.done_sending.is_set(),
            "first_bad_byte": self.bad_at, "error": self.error or self.send_error,
            "longest_stall_ms": round(self.stall * 1000, 1), "stall_at_byte": self.stall_at,
            "stall_ended_at_s": None if self.stall_end is None else round(self.stall_end, 2),
            "seconds": round(time.monotonic() - t0, 2),
        }
        result["ok"] = (result["complete"] and result["first_bad_byte"] is None
                        and result["error"] is None)
        return result


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("server")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, default=5001)
    c = sub.add_parser("client")
    c.add_argument("--connect", required=True)
    c.add_argument("--source")
    c.add_argument("--port", type=int, default=5001)
    c.add_argument("--duration", type=float, default=10.0,
                   help="seconds to send (an upper bound when --stop-file is given)")
    c.add_argument("--stop-file", help="stop sending once this file exists")
    c.add_argument("--bytes", type=int)
    c.add_argument("--rate", type=float, default=0, help="bytes per second (0: as fast as TCP)")
    c.add_argument("--chunk", type=int, default=CHUNK,
                   help="bytes per send (with --rate: a slow stream of small packets)")
    c.add_argument("--timeout", type=float, default=30.0)
    c.add_argument("--connect-timeout", type=float, default=5.0)
    c.add_argument("--progress", action="store_true", help="a line per second on stderr")
    args = p.parse_args()
    if args.role == "server":
        return server(args)
    result = Client(args).run()
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
