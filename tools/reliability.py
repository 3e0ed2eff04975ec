#!/usr/bin/env python3
"""The three measured cases of the README's "Reliability" section, against a
hashrig binary (default target/release/hashrig), on loopback:

1. 96 connections to `hashrig run --no-mine --sigserve` each send a frame
   header announcing 16 MiB (or the start of a JSON line) and nothing more;
   then `hashrig verify --connect` sends one BIP340 signature: its latency.
2. `kill -TERM` to `hashrig run` (demo node, sigserve): exit status and
   whether the final summary was printed.
3. A pool (written here, answering every share `true`) sets difficulty
   1/4096, then 1e-12: peak resident memory of hashrig, shares per second,
   and the hashrate of the status line, per phase.

    python3 tools/reliability.py [BINARY] [SECONDS_PER_POOL_PHASE]
"""
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release/hashrig"
PHASE = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start(args):
    p = subprocess.Popen([BIN, "run", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []

    def read():
        for line in p.stdout:
            lines.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    return p, lines


def wait_line(lines, pattern, secs=30):
    end = time.time() + secs
    while time.time() < end:
        for line in list(lines):
            m = re.search(pattern, line)
            if m:
                return m
        time.sleep(0.05)
    raise SystemExit(f"no line matching {pattern!r}:\n" + "\n".join(lines[-20:]))


def rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def case_hostile():
    p, lines = start(["--no-mine", "--no-metrics", "--sigserve", "127.0.0.1:0", "--sig-demo-rate", "0"])
    port = int(wait_line(lines, r"sigserve: listening on 127\.0\.0\.1:(\d+)").group(1))
    hostile = []
    for i in range(96):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b'{"id":1,"items":[' if i % 4 == 0 else bytes([0xFF, 0xFF, 0xFF, 0x00, 1, 1]))
        hostile.append(s)
    time.sleep(0.5)
    with open(os.path.join(ROOT, "tests/data/bip340_test_vectors.csv")) as f:
        row = next(csv.DictReader(f))
    item = {"scheme": "schnorr", "pubkey": row["public key"], "msg": row["message"], "sig": row["signature"]}
    t0 = time.time()
    try:
        out = subprocess.run(
            [BIN, "verify", "--connect", f"127.0.0.1:{port}", "--input", "-"],
            input=json.dumps(item) + "\n", capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    except subprocess.TimeoutExpired:
        out = "no verdict within 30 s"
    dt = time.time() - t0
    p.send_signal(signal.SIGINT)
    p.wait(30)
    for s in hostile:
        s.close()
    print(f"1. 96 hostile connections: verdict {out} after {dt * 1000:.0f} ms (hashrig verify, process start included)")


def case_sigterm():
    p, lines = start(["--no-metrics", "--status-interval", "1", "--duration", "120", "--sigserve", "127.0.0.1:0"])
    wait_line(lines, r"speed 10s/60s/15m")
    p.send_signal(signal.SIGTERM)
    rc = p.wait(30)
    time.sleep(0.2)
    summary = next((line for line in lines if "stopped:" in line), None)
    print(f"2. SIGTERM: exit status {rc}, final summary {'printed' if summary else 'missing'}")
    if summary:
        print("   " + summary[summary.index("stopped:"):])


def pool_phase(diff, secs):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    p, lines = start([
        "--no-metrics", "--status-interval", "1", "--duration", str(secs + 30),
        "--pool", f"stratum+tcp://127.0.0.1:{port}", "--user", "w",
    ])
    conn, _ = listener.accept()
    conn.settimeout(0.2)
    with open(os.path.join(ROOT, "tests/data/stratum_notify.jsonl")) as f:
        notify = json.loads(f.readline())
    notify["params"][8] = True

    def send(obj):
        conn.sendall((json.dumps(obj) + "\n").encode())

    buf = b""
    shares = 0
    started = None
    peak = 0.0
    end = time.time() + secs + 10
    while time.time() < end:
        try:
            data = conn.recv(65536)
            if not data:
                break
            buf += data
        except socket.timeout:
            pass
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            m = json.loads(line)
            method = m.get("method")
            if method == "mining.configure":
                send({"id": m["id"], "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"}, "error": None})
            elif method == "mining.subscribe":
                send({"id": m["id"], "result": [[["mining.notify", "s"]], "08000002", 4], "error": None})
            elif method == "mining.authorize":
                send({"id": m["id"], "result": True, "error": None})
                send({"id": None, "method": "mining.set_difficulty", "params": [diff]})
                send(notify)
                started = time.time()
                end = started + secs
            elif method == "mining.submit":
                shares += 1
                send({"id": m["id"], "result": True, "error": None})
            elif m.get("id") is not None and method:
                send({"id": m["id"], "result": True, "error": None})
        if started:
            peak = max(peak, rss_mb(p.pid))
    speed = [line for line in lines if "speed 10s/60s/15m" in line]
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    conn.close()
    listener.close()
    rate = re.search(r"speed 10s/60s/15m (\S+) \S+ \S+ (\S+)", speed[-1]) if speed else None
    clamped = any("below the floor" in line for line in lines)
    hashrate = f"{rate.group(1)} {rate.group(2)}" if rate else "n/a"
    print(f"   difficulty {diff:g}: peak RSS {peak:.0f} MB, {shares / secs:.0f} shares/s, "
          f"10 s hashrate {hashrate}{', clamped to the floor' if clamped else ''}")


if __name__ == "__main__":
    case_hostile()
    case_sigterm()
    print(f"3. pool difficulty, {PHASE:.0f} s per phase:")
    pool_phase(1 / 4096, PHASE)
    pool_phase(1e-12, PHASE)
