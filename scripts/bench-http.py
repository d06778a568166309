#!/usr/bin/env python3
"""The same MCP calls over Streamable HTTP and over stdio, side by side.

Measures, against the scripted model server (no network, no key):
  * a `baton-reply` round trip on a warm thread: p50 and p99 over N calls, HTTP and stdio;
  * `tools/list` requests per second over HTTP (with `wrk` when installed, 2 threads,
    8 connections, 10 s), and over one keep-alive connection from this script.

Usage: cargo build --release -p baton-cli -p baton-test-support
       python3 scripts/bench-http.py [N]
Timing lives here, never in tests.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
BATON = os.path.join(TARGET, "release", "baton")
MODEL = os.path.join(TARGET, "release", "scripted-model-server")
N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "0"},
    "io.modelcontextprotocol/clientCapabilities": {},
}


def percentile(samples, p):
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def home_for(base_url, work):
    home = os.path.join(work, "home")
    os.makedirs(home, mode=0o700)
    with open(os.path.join(home, "config.toml"), "w") as config:
        config.write(
            'model = "scripted-model"\nmodel_provider = "scripted"\napproval_policy = "never"\n'
            f'codex_home = "{work}/codex"\n\n[model_providers.scripted]\nname = "scripted"\n'
            f'base_url = "{base_url}"\nwire_api = "responses"\n'
        )
    return home


class Http:
    def __init__(self, port):
        self.connection = http.client.HTTPConnection("127.0.0.1", port)
        self.connection.connect()
        # http.client writes headers and body apart: without this, delayed ACKs add ~40 ms.
        self.connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def post(self, method, params, name=None):
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": method,
        }
        if name:
            headers["Mcp-Name"] = name
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                           "params": dict(params, _meta=META)})
        self.connection.request("POST", "/mcp", body, headers)
        response = self.connection.getresponse()
        text = response.read().decode()
        if response.status != 200:
            raise RuntimeError(f"{method}: HTTP {response.status}: {text}")
        # An SSE answer carries the message in its `data:` line.
        if text.startswith("data:") or "\ndata:" in text:
            text = next(line[5:] for line in text.splitlines() if line.startswith("data:")
                        and line[5:].strip())
        return json.loads(text)

    def call(self, tool, arguments):
        return self.post("tools/call", {"name": tool, "arguments": arguments}, tool)


class Stdio:
    def __init__(self, env):
        self.process = subprocess.Popen([BATON, "mcp-server"], env=env, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                        text=True, bufsize=1)
        self.next_id = 0
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "bench", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def send(self, message):
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()

    def request(self, method, params):
        self.next_id += 1
        self.send({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        while True:
            message = json.loads(self.process.stdout.readline())
            if message.get("id") == self.next_id:
                return message

    def call(self, tool, arguments):
        return self.request("tools/call", {"name": tool, "arguments": arguments})

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=30)


def reply_latencies(client, cwd):
    started = client.call("baton", {"prompt": "warm up", "cwd": cwd})
    thread = started["result"]["structuredContent"]["threadId"]
    samples = []
    for i in range(N):
        begin = time.perf_counter()
        answer = client.call("baton-reply", {"threadId": thread, "prompt": f"turn {i}"})
        samples.append(time.perf_counter() - begin)
        if answer["result"].get("isError"):
            raise RuntimeError(answer)
    return samples


def main():
    for binary in (BATON, MODEL):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: cargo build --release -p baton-cli -p baton-test-support")
    work = tempfile.mkdtemp(prefix="baton-bench-http-")
    model = subprocess.Popen([MODEL], stdout=subprocess.PIPE, text=True)
    server = None
    try:
        base_url = model.stdout.readline().strip()
        home = home_for(base_url, work)
        project = os.path.join(work, "project")
        os.makedirs(project)
        env = dict(os.environ, BATON_HOME=home)
        server = subprocess.Popen([BATON, "mcp-server", "--listen", "127.0.0.1:0"], cwd=project,
                                  env=env, stderr=subprocess.PIPE, text=True)
        line = server.stderr.readline()
        while "listening on http://" not in line:
            if not line:
                sys.exit("baton mcp-server --listen did not start")
            line = server.stderr.readline()
        port = int(line.rsplit(":", 1)[1].split("/")[0])

        http_samples = reply_latencies(Http(port), project)
        stdio = Stdio(env)
        stdio_samples = reply_latencies(stdio, project)
        stdio.close()

        client = Http(port)
        count, begin = 0, time.perf_counter()
        while time.perf_counter() - begin < 5:
            client.post("tools/list", {})
            count += 1
        one_connection = count / (time.perf_counter() - begin)
        wrk_rate = None
        if shutil.which("wrk"):
            lua = os.path.join(work, "tools-list.lua")
            body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                               "params": {"_meta": META}})
            with open(lua, "w") as script:
                script.write('wrk.method = "POST"\n'
                             f"wrk.body = {json.dumps(body)}\n"
                             'wrk.headers["Content-Type"] = "application/json"\n'
                             'wrk.headers["Accept"] = "application/json, text/event-stream"\n'
                             'wrk.headers["MCP-Protocol-Version"] = "2026-07-28"\n'
                             'wrk.headers["Mcp-Method"] = "tools/list"\n')
            out = subprocess.run(["wrk", "-t2", "-c8", "-d10s", "-s", lua,
                                  f"http://127.0.0.1:{port}/mcp"],
                                 capture_output=True, text=True).stdout
            for row in out.splitlines():
                if row.startswith("Requests/sec:"):
                    wrk_rate = float(row.split()[1])
                if "Non-2xx" in row:
                    sys.exit(f"wrk saw errors:\n{out}")

        ms = lambda seconds: f"{seconds * 1000:.2f} ms"
        print(f"| measurement ({N} calls, warm thread, scripted model) | HTTP | stdio |")
        print("|---|---|---|")
        print(f"| `baton-reply` round trip p50 | {ms(percentile(http_samples, 50))} | "
              f"{ms(percentile(stdio_samples, 50))} |")
        print(f"| `baton-reply` round trip p99 | {ms(percentile(http_samples, 99))} | "
              f"{ms(percentile(stdio_samples, 99))} |")
        print(f"| `tools/list`, one keep-alive connection | {one_connection:.0f} req/s | |")
        if wrk_rate is not None:
            print(f"| `tools/list`, wrk -t2 -c8 -d10s | {wrk_rate:.0f} req/s | |")
        else:
            print("| `tools/list` under wrk | skipped: wrk is not installed | |")
    finally:
        if server:
            server.terminate()
            server.wait(timeout=60)
        model.terminate()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
