#!/usr/bin/env python3
"""Server CPU per forwarded packet at light load: headless Chromium pages in one call.

Starts ringsfu (RINGSFU_BIN, default target/release/ringsfu), creates a channel, runs
tests/browser/e2e.mjs with N pages (mediasoup-client following the Odoo client's flow, fake
camera and microphone) and, once every page sees and hears the others, measures the server
process over a window: CPU time (all its threads), forwarded RTP packets (from /metrics) and
voluntary context switches (wake-ups). First it measures this machine's ceiling
(`ringsfu-loadtest ceiling`, LOADTEST_BIN) so the figure is also given as a ratio of `sendmmsg`
datagrams per CPU-second in the same run. Prints one JSON line.

    scripts/browser-cost.py [--pages 4] [--width 640] [--height 480] [--seconds 30]

The pages run on the same machine, so the figure to compare between two servers is the server's
CPU per forwarded packet, measured back to back under the same load.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY_B64 = base64.b64encode(b"browser-cost-measurement-key-32b").decode()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(claims):
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    mac = hmac.new(base64.b64decode(KEY_B64), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(mac)}"


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()


def forwarded(http):
    text = get(f"http://{http}/metrics")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ringsfu_shard_forwarded_rtp_packets_total"))


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wakeups(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            status = open(f"/proc/{pid}/task/{task}/status").read()
        except OSError:
            continue
        total += int(re.search(r"voluntary_ctxt_switches:\s+(\d+)", status).group(1))
    return total


def sample(pid, http):
    return {"t": time.monotonic(), "cpu": cpu_seconds(pid), "fwd": forwarded(http), "wakeups": wakeups(pid)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()

    binary = os.environ.get("RINGSFU_BIN", os.path.join(ROOT, "target/release/ringsfu"))
    loadtest = os.environ.get("LOADTEST_BIN", os.path.join(ROOT, "target/release/ringsfu-loadtest"))
    ceiling = json.loads(subprocess.run([loadtest, "ceiling"], check=True, capture_output=True, text=True).stdout)
    sendmmsg = ceiling["sendmmsg_per_cpu_second"]
    env = {"PATH": os.environ["PATH"], "AUTH_KEY": KEY_B64, "PORT": "0", "RTC_MIN_PORT": "0",
           "NUM_WORKERS": "1", "PIN_SHARDS": "false", "HTTP_INTERFACE": "127.0.0.1",
           "RTC_INTERFACE": "127.0.0.1", "PUBLIC_IP": "127.0.0.1", "LOG_LEVEL": "warn",
           "RATE_LIMIT_PER_SECOND": "0"}
    server = subprocess.Popen([binary], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    node = None
    try:
        http = None
        for line in server.stdout:
            match = re.search(r"ringsfu ready http=(\S+)", line)
            if match:
                http = match.group(1)
                break
        if not http:
            sys.exit("ringsfu did not start")
        token = sign({"iss": "browser-cost", "exp": int(time.time()) + 3600})
        channel = json.loads(get(f"http://{http}/v1/channel?webRTC=true", {"Authorization": f"jwt {token}"}))["uuid"]
        publish = {"audio": True, "video": True, "width": args.width, "height": args.height}
        participants = [{"url": f"http://{http}", "channelUUID": channel, "sessionId": i, "publish": publish,
                         "jwt": sign({"session_id": i, "exp": int(time.time()) + 3600})}
                        for i in range(1, args.pages + 1)]
        hold_ms = int((args.seconds + 40) * 1000)
        config = {"scenario": "hold", "participants": participants, "holdMs": hold_ms, "timeoutMs": hold_ms + 30000,
                  "chromium": os.environ.get("CHROMIUM", "/usr/bin/chromium")}
        node = subprocess.Popen(["node", "e2e.mjs", json.dumps(config)], cwd=os.path.join(ROOT, "tests/browser"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Up when packets flow to everyone: wait for the forwarding rate to settle.
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and forwarded(http) < 2000:
            time.sleep(0.5)
        time.sleep(10)
        start = sample(server.pid, http)
        time.sleep(args.seconds)
        end = sample(server.pid, http)
        if node.poll() is not None:
            sys.exit("the browser call ended before the window did")
        seconds = end["t"] - start["t"]
        packets = end["fwd"] - start["fwd"]
        cpu = end["cpu"] - start["cpu"]
        print(json.dumps({
            "binary": binary, "pages": args.pages, "resolution": f"{args.width}x{args.height}",
            "window_s": round(seconds, 1), "forwarded_per_s": round(packets / seconds),
            "server_cpu_fraction": round(cpu / seconds, 3),
            "server_cpu_us_per_forwarded_packet": round(cpu * 1e6 / packets, 1) if packets else None,
            "ceiling_sendmmsg_per_cpu_s": round(sendmmsg),
            # Forwarded packets per server-CPU-second as a share of that ceiling.
            "ratio_to_sendmmsg": round(packets / cpu / sendmmsg, 4) if packets and cpu else None,
            "wakeups_per_s": round((end["wakeups"] - start["wakeups"]) / seconds),
            "wakeups_per_forwarded_packet": round((end["wakeups"] - start["wakeups"]) / packets, 2) if packets else None,
        }))
    finally:
        if node:
            node.kill()
        server.kill()


if __name__ == "__main__":
    main()
