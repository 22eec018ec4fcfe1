#!/usr/bin/env python3
"""Outrigger against peer proxies, side by side in one run.

Paths (each a reverse proxy in front of the same nginx upstream):
  direct      load -> nginx
  outrigger   load -> outrigger inbound (plain forwarding, no policy)
  outrigger+  load -> outrigger outbound, a full policy whose breaker stays
              closed (timeouts, retry + budget, breaker, outlier detection,
              concurrency limit, P2C over two endpoints)
  haproxy     HAProxy, one thread, upstream keep-alive (http-reuse always)
  nginx       nginx as a reverse proxy, one worker, upstream keep-alive
  envoy       Envoy, --concurrency 1, upstream keep-alive, no access log
  outrigger-base  another build of the proxy, plain forwarding, when
              OUTRIGGER_BASELINE_BIN names it (e.g. the commit before a change)

Everything under test and the upstream run pinned to core 1, the load
generators to core 0. Scenarios alternate between paths (A/B/A/B) round by
round so drift hits every path alike. Started by bench/run.sh, which installs
the tools; `--smoke` runs every scenario for a moment (CI).
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROXY_BIN = os.path.join(ROOT, "target/release/outrigger-proxy")
# Another build of the proxy (e.g. an older commit's) measured as the path
# "outrigger-base" beside this one, plain forwarding like "outrigger".
BASE_BIN = os.environ.get("OUTRIGGER_BASELINE_BIN")
# bench/run.sh installs Envoy and says where.
ENVOY_BIN = os.environ.get("OUTRIGGER_ENVOY_BIN", "envoy")
LOAD_CORE, SERVER_CORE = "0", "1"

# Ports (loopback only).
UP_H1, UP_H1_B, UP_H2 = 18080, 18081, 18082
OR_IN, OR_ADMIN = 14143, 14191
OR_FULL_OUT, OR_FULL_ADMIN = 14140, 14192
OR_H2_IN, OR_H2_ADMIN = 14243, 14291
OR_BASE_IN, OR_BASE_ADMIN = 14343, 14393
OR_BASE_H2_IN, OR_BASE_H2_ADMIN = 14443, 14493
HAP_H1, HAP_H2 = 19080, 19082
NGX_H1, NGX_H2 = 20080, 20082
ENVOY_H1, ENVOY_H2 = 21080, 21082

BODY = "x" * 64


def pinned(core, argv):
    return ["taskset", "-c", core] + argv


class Server:
    """A process under test: its pids (for RSS and CPU) and how to stop it."""

    def __init__(self, name, argv, pid_file=None, env=None):
        self.name = name
        self.proc = subprocess.Popen(
            pinned(SERVER_CORE, argv),
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(WORK, name + ".log"), "w"),
            env=env,
            start_new_session=True,
        )
        self.pid_file = pid_file

    def pids(self):
        """The process and its children (nginx: master and worker)."""
        root = self.proc.pid
        if self.pid_file and os.path.exists(self.pid_file):
            root = int(open(self.pid_file).read().strip())
        out = [root]
        try:
            children = open("/proc/%d/task/%d/children" % (root, root)).read().split()
            out += [int(c) for c in children]
        except OSError:
            pass
        return out

    def rss_kib(self):
        total = 0
        for pid in self.pids():
            try:
                for line in open("/proc/%d/status" % pid):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total

    def cpu_seconds(self):
        ticks = 0
        for pid in self.pids():
            try:
                fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])  # utime + stime
            except OSError:
                pass
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def wait_port(port, server, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    log = open(os.path.join(WORK, server.name + ".log")).read()[-2000:]
    raise SystemExit("%s: nothing listens on port %d\n%s" % (server.name, port, log))


def write(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


# ---------------------------------------------------------------- servers

def nginx_conf(name, servers):
    root = os.path.join(WORK, name)
    os.makedirs(root, exist_ok=True)
    return write(name + ".conf", """
daemon off;
worker_processes 1;
pid %(root)s/nginx.pid;
error_log %(root)s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %(root)s/body;
  proxy_temp_path %(root)s/proxy;
  fastcgi_temp_path %(root)s/fastcgi;
  uwsgi_temp_path %(root)s/uwsgi;
  scgi_temp_path %(root)s/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  http2_max_requests 10000000;
  %(servers)s
}
""" % {"root": root, "servers": servers})


def start_upstream():
    files = os.path.join(WORK, "files")
    os.makedirs(files, exist_ok=True)
    with open(os.path.join(files, "1m"), "wb") as f:
        f.write(os.urandom(1 << 20))
    os.chmod(os.path.join(files, "1m"), 0o644)
    site = """
  server {
    listen 127.0.0.1:%%d%%s;
    location = / { default_type text/plain; return 200 "%s"; }
    location = /1m { root %s; default_type application/octet-stream; }
  }""" % (BODY, files)
    servers = "".join(site % (p, h) for p, h in [(UP_H1, ""), (UP_H1_B, ""), (UP_H2, " http2")])
    conf = nginx_conf("upstream", servers)
    s = Server("upstream", ["nginx", "-c", conf, "-p", WORK], os.path.join(WORK, "upstream/nginx.pid"))
    for p in (UP_H1, UP_H1_B, UP_H2):
        wait_port(p, s)
    return s


def start_outrigger(name, inbound, admin, app=None, outbound=None, policy=None, binary=PROXY_BIN):
    argv = [binary, "--inbound-addr", "127.0.0.1:%d" % inbound,
            "--admin-addr", "127.0.0.1:%d" % admin, "--workers", "1", "--log-level", "warn",
            "--outbound-addr", "127.0.0.1:%d" % (outbound or 0), "--namespace", "bench"]
    if app:
        argv += ["--app-addr", "127.0.0.1:%d" % app]
    if policy:
        argv += ["--policy", policy]
    s = Server(name, argv)
    wait_port(admin, s)
    wait_port(outbound or inbound, s)
    return s


# Every resilience layer on, over the upstreams on UP_H1 and UP_H1_B.
FULL_POLICY = os.path.join(ROOT, "bench/full-policy.yaml")


def start_haproxy():
    conf = write("haproxy.cfg", """
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 1s
  timeout client 300s
  timeout server 300s
  option http-keep-alive
  http-reuse always
frontend h1
  bind 127.0.0.1:%d
  default_backend up_h1
frontend h2
  bind 127.0.0.1:%d proto h2
  default_backend up_h2
backend up_h1
  server a 127.0.0.1:%d
backend up_h2
  server a 127.0.0.1:%d proto h2
""" % (HAP_H1, HAP_H2, UP_H1, UP_H2))
    s = Server("haproxy", ["haproxy", "-f", conf, "-db"])
    wait_port(HAP_H1, s)
    return s


def start_nginx_proxy():
    servers = """
  upstream up { server 127.0.0.1:%d; keepalive 128; keepalive_requests 10000000; }
  server {
    listen 127.0.0.1:%d;
    listen 127.0.0.1:%d http2;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering on; }
  }""" % (UP_H1, NGX_H1, NGX_H2)
    conf = nginx_conf("proxy", servers)
    s = Server("nginx", ["nginx", "-c", conf, "-p", WORK], os.path.join(WORK, "proxy/nginx.pid"))
    wait_port(NGX_H1, s)
    return s


def start_envoy():
    # Static bootstrap: an HTTP/1.1 listener to the HTTP/1.1 upstream and an
    # HTTP/2 one to the HTTP/2 upstream, like HAProxy's two frontends. No
    # admin listener, no access log; upstream connections are kept alive by
    # Envoy's connection pool. Every other setting is Envoy's default.
    listener = """
  - name: %(name)s
    address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: %(name)s
          codec_type: %(codec)s
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: %(cluster)s}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"""
    cluster = """
  - name: %(name)s
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: %(name)s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %(port)d}}}}]}]
%(protocol)s"""
    h2_upstream = """    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
"""
    conf = write("envoy.yaml", "static_resources:\n  listeners:" + "".join([
        listener % {"name": "h1", "port": ENVOY_H1, "codec": "HTTP1", "cluster": "up_h1"},
        listener % {"name": "h2", "port": ENVOY_H2, "codec": "HTTP2", "cluster": "up_h2"},
    ]) + "  clusters:" + "".join([
        cluster % {"name": "up_h1", "port": UP_H1, "protocol": ""},
        cluster % {"name": "up_h2", "port": UP_H2, "protocol": h2_upstream},
    ]))
    s = Server("envoy", [ENVOY_BIN, "-c", conf, "--concurrency", "1", "--log-level", "warn",
                         "--disable-hot-restart", "--base-id-path", os.path.join(WORK, "envoy.base-id")])
    wait_port(ENVOY_H1, s)
    wait_port(ENVOY_H2, s)
    return s


# ---------------------------------------------------------------- load

def wrk(port, conns, seconds, path="/", host=None):
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % seconds, "--latency"]
    if host:
        argv += ["-H", "Host: " + host]
    out = subprocess.run(pinned(LOAD_CORE, argv + ["http://127.0.0.1:%d%s" % (port, path)]),
                         capture_output=True, text=True, timeout=seconds + 60).stdout

    def field(pattern):
        m = re.search(pattern, out, re.M)
        return m.group(1) if m else None

    rps = float(field(r"^Requests/sec:\s+([\d.]+)") or 0)
    total = int(field(r"^\s+(\d+) requests in") or 0)
    non2xx = int(field(r"Non-2xx or 3xx responses: (\d+)") or 0)
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return {"rps": rps, "requests": total, "bad": non2xx + errors,
            "p50": to_ms(field(r"^\s+50%\s+(\S+)")), "p99": to_ms(field(r"^\s+99%\s+(\S+)"))}


def to_ms(text):
    if not text:
        return None
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def oha(port, rate, seconds, host=None):
    argv = ["oha", "-z", "%ds" % seconds, "-q", str(rate), "-c", "50", "--latency-correction",
            "--no-tui", "--output-format", "json"]
    if host:
        argv += ["-H", "Host: " + host]
    res = subprocess.run(pinned(LOAD_CORE, argv + ["http://127.0.0.1:%d/" % port]),
                         capture_output=True, text=True, timeout=seconds + 60)
    data = json.loads(res.stdout)
    pct = data["latencyPercentiles"]
    ok = sum(v for k, v in data.get("statusCodeDistribution", {}).items() if k.startswith("2"))
    total = data["summary"].get("total", 0)
    return {"p50": pct["p50"] * 1000, "p99": pct["p99"] * 1000, "p99.9": pct["p99.9"] * 1000,
            "rps": data["summary"]["requestsPerSec"], "ok": ok,
            # In-flight requests cut off when the run's time is up are not failures.
            "bad": sum(n for err, n in data.get("errorDistribution", {}).items()
                       if err != "aborted due to deadline")}


def h2load(port, seconds):
    argv = ["h2load", "-c", "10", "-m", "10", "-t", "1", "-D", str(seconds),
            "http://127.0.0.1:%d/" % port]
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True,
                         timeout=seconds + 60).stdout
    m = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    s = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", out)
    return {"rps": float(m.group(1)) if m else 0.0,
            "bad": int(s.group(2)) if s else -1, "ok": int(s.group(1)) if s else 0}


# How long connections are left idle before RSS is read: Outrigger sets an
# HTTP/1 connection aside after 1-2 s without a request.
IDLE_WAIT = 2.5


def open_idle(name, port, count, host):
    """`count` keep-alive connections, each after one request answered."""
    socks = []
    request = ("GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host).encode()
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(request)
        data = b""
        while BODY.encode() not in data:
            chunk = s.recv(4096)
            if not chunk:
                raise SystemExit("%s closed an idle connection" % name)
            data += chunk
        socks.append(s)
    return socks


def idle_connections(servers, ports, count, host):
    """RSS growth per server from `count` idle keep-alive connections, then
    from `count` more opened once the first have been idle for IDLE_WAIT (what
    a server freed when the first went idle, and could reuse, shows there)."""
    growth = {name: [] for name in ports}
    held = []
    for _ in range(2):
        before = {name: servers[name].rss_kib() for name in ports}
        for name, port in ports.items():
            held += open_idle(name, port, count, host)
        time.sleep(IDLE_WAIT)
        for name in ports:
            growth[name].append(servers[name].rss_kib() - before[name])
    for s in held:
        s.close()
    return growth


def time_to_ready(samples):
    """Start of outrigger-proxy to its first 200 on /ready, in ms (median)."""
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        proc = subprocess.Popen(pinned(SERVER_CORE, [
            PROXY_BIN, "--inbound-addr", "127.0.0.1:0", "--outbound-addr", "127.0.0.1:0",
            "--admin-addr", "127.0.0.1:14391", "--workers", "1", "--log-level", "warn"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ready = None
        while ready is None and time.perf_counter() - start < 5:
            try:
                s = socket.create_connection(("127.0.0.1", 14391), timeout=0.5)
                s.sendall(b"GET /ready HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    ready = (time.perf_counter() - start) * 1000
                s.close()
            except OSError:
                time.sleep(0.0005)
        proc.terminate()
        proc.wait()
        if ready is None:
            raise SystemExit("outrigger-proxy was not ready within 5s")
        times.append(ready)
    return statistics.median(times)


# ---------------------------------------------------------------- report

def fmt(v, digits=2):
    return "—" if v is None else ("%.*f" % (digits, v))


def svg_plot(latency, path):
    """Grouped bars: p50 / p99 / p99.9 per path at each fixed rate (log scale)."""
    import math
    rates = sorted({r for (_, r) in latency})
    names = [n for n in PATH_ORDER if any((n, r) in latency for r in rates)]
    colors = {"p50": "#4c78a8", "p99": "#f58518", "p99.9": "#e45756"}
    width, height, left, top, bottom = 900, 420, 70, 40, 90
    plot_h = height - top - bottom
    lo, hi = 0.05, max([v for d in latency.values() for k, v in d.items() if k in colors] + [1.0])
    hi = 10 ** math.ceil(math.log10(hi))

    def y(v):
        v = max(v, lo)
        return top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))

    group_w = (width - left - 20) / (len(rates) * len(names))
    bar_w = group_w / 4
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (width, height),
             '<text x="%d" y="20" font-size="14">Latency at fixed request rates (ms, log scale; oha, latency-corrected)</text>' % left]
    decade = lo
    while decade <= hi * 1.0001:
        parts.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, width - 20, y(decade), y(decade)))
        parts.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (left - 5, y(decade) + 4, decade))
        decade *= 10
    i = 0
    for rate in rates:
        for name in names:
            d = latency.get((name, rate))
            x0 = left + i * group_w
            if d:
                for j, key in enumerate(["p50", "p99", "p99.9"]):
                    x = x0 + (j + 0.5) * bar_w
                    parts.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %d/s %s: %.3f ms</title></rect>' % (
                        x, y(d[key]), bar_w, top + plot_h - y(d[key]), colors[key], name, rate, key, d[key]))
            parts.append('<text x="%.1f" y="%d" text-anchor="end" transform="rotate(-40 %.1f %d)">%s @%dk</text>' % (
                x0 + group_w / 2, top + plot_h + 14, x0 + group_w / 2, top + plot_h + 14, name, rate // 1000))
            i += 1
    for j, key in enumerate(colors):
        parts.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>' % (
            width - 200 + j * 60, 12, colors[key], width - 186 + j * 60, 21, key))
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


PATH_ORDER = ["direct", "outrigger", "outrigger+", "outrigger-base", "haproxy", "nginx", "envoy"]
# The peer proxies, each measured wherever Outrigger is.
PEERS = ["haproxy", "nginx", "envoy"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10, help="per load run")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds of each scenario")
    ap.add_argument("--smoke", action="store_true", help="every scenario briefly; prints, writes nothing")
    ap.add_argument("--write", action="store_true", help="update BENCHMARKS.md and bench/latency.svg")
    ap.add_argument("--idle-only", action="store_true",
                    help="only the idle keep-alive connections' RSS (for OUTRIGGER_BASELINE_BIN pairs)")
    ap.add_argument("--latency-only", action="store_true",
                    help="only the fixed-rate latency runs; prints every run's p99 and the spread")
    args = ap.parse_args()
    global IDLE_PATHS
    IDLE_PATHS = ["outrigger"] + (["outrigger-base"] if BASE_BIN else [])
    if args.smoke:
        args.seconds, args.rounds = 1, 1

    global WORK
    WORK = tempfile.mkdtemp(prefix="outrigger-bench-")
    os.chmod(WORK, 0o755)  # nginx's workers (www-data) read the files from here
    servers = {}
    try:
        upstream = start_upstream()
        servers["outrigger"] = start_outrigger("outrigger", OR_IN, OR_ADMIN, app=UP_H1)
        servers["outrigger+"] = start_outrigger("outrigger-full", OR_FULL_OUT + 100, OR_FULL_ADMIN,
                                                 outbound=OR_FULL_OUT, policy=FULL_POLICY)
        servers["outrigger-h2"] = start_outrigger("outrigger-h2", OR_H2_IN, OR_H2_ADMIN, app=UP_H2)
        servers["haproxy"] = start_haproxy()
        servers["nginx"] = start_nginx_proxy()
        servers["envoy"] = start_envoy()
        if BASE_BIN:
            servers["outrigger-base"] = start_outrigger("outrigger-base", OR_BASE_IN, OR_BASE_ADMIN,
                                                        app=UP_H1, binary=BASE_BIN)
            servers["outrigger-base-h2"] = start_outrigger("outrigger-base-h2", OR_BASE_H2_IN,
                                                           OR_BASE_H2_ADMIN, app=UP_H2, binary=BASE_BIN)
        h1 = {"direct": (UP_H1, None), "outrigger": (OR_IN, None),
              "outrigger+": (OR_FULL_OUT, "full.bench"), "haproxy": (HAP_H1, None),
              "nginx": (NGX_H1, None), "envoy": (ENVOY_H1, None)}
        if BASE_BIN:
            h1["outrigger-base"] = (OR_BASE_IN, None)
        h2 = {"direct": UP_H2, "outrigger": OR_H2_IN, "haproxy": HAP_H2, "nginx": NGX_H2,
              "envoy": ENVOY_H2}
        if BASE_BIN:
            h2["outrigger-base"] = OR_BASE_H2_IN
        idle_rss = {n: servers[n].rss_kib() for n in ["outrigger", "outrigger+"] + IDLE_PATHS[1:] + PEERS}
        # Warm every path (connection pools, lazy stacks) before measuring.
        for name, (port, host) in h1.items():
            wrk(port, 10, 1, host=host)

        results = {}
        def add(key, value):
            results.setdefault(key, []).append(value)

        peak = {}
        cpu = {}
        if args.idle_only:
            # RSS added per connection by 1,000 idle keep-alive connections,
            # then by 1,000 more (the servers freshly started: run once).
            idle = idle_connections(servers, {n: h1[n][0] for n in IDLE_PATHS + PEERS}, 1000, "a")
            for name, growth in idle.items():
                print("%-15s +%.1f KiB per connection for the first 1,000, +%.1f for 1,000 more"
                      % (name, growth[0] / 1000, growth[1] / 1000))
            return
        if args.latency_only:
            for rnd in range(args.rounds):
                for rate in (1000, 5000):
                    for name, (port, host) in h1.items():
                        add(("rate", name, rate), oha(port, rate, args.seconds, host=host))
            print(render_p99_spread(args, results))
            return
        for rnd in range(args.rounds):
            for name, (port, host) in h1.items():
                srv = servers.get(name)
                c0 = srv.cpu_seconds() if srv else 0
                r = wrk(port, 50, args.seconds, host=host)
                if srv:
                    cpu.setdefault(name, []).append((srv.cpu_seconds() - c0) / max(r["requests"], 1) * 1000)
                    peak[name] = max(peak.get(name, 0), srv.rss_kib())
                add(("max", name), r)
            for name, (port, host) in h1.items():
                add(("1conn", name), wrk(port, 1, args.seconds, host=host))
            for rate in (1000, 5000):
                for name, (port, host) in h1.items():
                    add(("rate", name, rate), oha(port, rate, args.seconds, host=host))
            for name, port in h2.items():
                add(("h2", name), h2load(port, args.seconds))
            for name, (port, host) in h1.items():
                add(("1m", name), wrk(port, 10, args.seconds, path="/1m", host=host))
        idle = idle_connections(servers, {n: h1[n][0] for n in IDLE_PATHS + PEERS},
                                100 if args.smoke else 1000, "a")
        ready_ms = time_to_ready(3 if args.smoke else 15)

        report = render(args, results, idle_rss, peak, cpu, idle, ready_ms)
        print(report)
        bad_by = {}
        for key, runs in results.items():
            n = sum(r.get("bad", 0) for r in runs)
            if n:
                bad_by["/".join(str(k) for k in key)] = n
        bad = sum(bad_by.values())
        zero = [k for k, runs in results.items() if not any(r.get("rps") for r in runs)]
        if zero:
            raise SystemExit("no throughput measured for %s" % zero)
        if bad:
            print("warning: %d failed or non-2xx requests in all runs: %s" % (
                bad, ", ".join("%s %d" % kv for kv in sorted(bad_by.items()))))
        if args.write and not args.smoke:
            update_benchmarks(report)
            latency = {(k[1], k[2]): median_of(v) for k, v in results.items() if k[0] == "rate"}
            svg_plot(latency, os.path.join(ROOT, "bench/latency.svg"))
            print("wrote BENCHMARKS.md and bench/latency.svg")
        print("bench: %d scenarios measured" % len(results))
    finally:
        for s in servers.values():
            s.stop()
        if "upstream" in dir():
            upstream.stop()
        shutil.rmtree(WORK, ignore_errors=True)


def median_of(runs):
    keys = runs[0].keys()
    return {k: statistics.median([r[k] for r in runs if r.get(k) is not None] or [0]) for k in keys}


def render(args, results, idle_rss, peak, cpu, idle, ready_ms):
    def med(key):
        runs = results.get(key)
        return median_of(runs) if runs else None

    lines = []
    cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    lines.append("Machine: %d cores (%s), %s. %ds per run, %d alternating round(s), medians shown."
                 % (os.cpu_count(), cpu_model, time.strftime("%Y-%m-%d"), args.seconds, args.rounds))
    lines.append("")
    lines.append("| path | max req/s (wrk -c50) | vs haproxy | 1 conn p50 / p99 ms | p50 / p99 / p99.9 ms @1k/s | p50 / p99 / p99.9 ms @5k/s | h2 req/s (h2load -c10 -m10) | 1 MiB body req/s (-c10) | CPU s / 1k req | RSS idle / peak under load | +RSS for 1,000 idle conns / 1,000 more |")
    lines.append("|---|---:|---:|---|---|---|---:|---:|---:|---|---:|")
    hap = med(("max", "haproxy"))
    for name in PATH_ORDER:
        if ("max", name) not in results:
            continue
        m, one = med(("max", name)), med(("1conn", name))
        r1, r5 = med(("rate", name, 1000)), med(("rate", name, 5000))
        h2, big = med(("h2", name)), med(("1m", name))
        h2 = h2 if name != "outrigger+" else None
        ratio = "%.2f×" % (m["rps"] / hap["rps"]) if hap and hap["rps"] else "—"
        rss = "—" if name == "direct" else "%.1f / %.1f MiB" % (idle_rss[name] / 1024, peak.get(name, 0) / 1024)
        lines.append("| %s | %s | %s | %s / %s | %s / %s / %s | %s / %s / %s | %s | %s | %s | %s | %s |" % (
            name, "{:,.0f}".format(m["rps"]), ratio, fmt(one["p50"], 3), fmt(one["p99"], 3),
            fmt(r1["p50"], 3), fmt(r1["p99"], 3), fmt(r1["p99.9"], 3),
            fmt(r5["p50"], 3), fmt(r5["p99"], 3), fmt(r5["p99.9"], 3),
            "—" if not h2 else "{:,.0f}".format(h2["rps"]), "{:,.0f}".format(big["rps"]),
            fmt(statistics.median(cpu[name]), 3) if name in cpu else "—", rss,
            "%.1f / %.1f MiB" % (idle[name][0] / 1024, idle[name][1] / 1024) if name in idle else "—"))
    lines.append("")
    lines.append("Outrigger start to `/ready`: %.1f ms (median of %d starts)." % (ready_ms, 3 if args.smoke else 15))
    direct, ours, haproxy = med(("rate", "direct", 1000)), med(("rate", "outrigger", 1000)), med(("rate", "haproxy", 1000))
    lines.append("Added p50 latency at 1k req/s over direct: outrigger %.3f ms, haproxy %.3f ms."
                 % (ours["p50"] - direct["p50"], haproxy["p50"] - direct["p50"]))
    if args.rounds > 1:
        lines.append("")
        lines.append(render_p99_spread(args, results))
    envoy, mine = med(("max", "envoy")), med(("max", "outrigger"))
    if envoy and envoy["rps"] and "envoy" in cpu:
        h2_ours, h2_envoy = med(("h2", "outrigger")), med(("h2", "envoy"))
        lines.append("Outrigger against Envoy in this run: max req/s %.2f×, CPU per request %.2f×, "
                     "h2 req/s %.2f×, RSS idle %.1f vs %.1f MiB, peak %.1f vs %.1f MiB."
                     % (mine["rps"] / envoy["rps"],
                        statistics.median(cpu["outrigger"]) / statistics.median(cpu["envoy"]),
                        h2_ours["rps"] / h2_envoy["rps"] if h2_envoy["rps"] else 0,
                        idle_rss["outrigger"] / 1024, idle_rss["envoy"] / 1024,
                        peak.get("outrigger", 0) / 1024, peak.get("envoy", 0) / 1024))
    return "\n".join(lines)


def render_p99_spread(args, results):
    """p99 at each fixed rate, every run: the median and the spread (min-max),
    and what each proxy adds over direct, run by run (a proxy's run and
    direct's in the same round)."""
    lines = ["p99 at fixed rates over %d runs of %ds: median [min-max] ms; added over direct "
             "(same round), median [min-max]:" % (args.rounds, args.seconds), "",
             "| path | p99 @1k/s | added @1k/s | p99 @5k/s | added @5k/s |", "|---|---|---|---|---|"]

    def spread(values):
        if not values:
            return "—"
        return "%.3f [%.3f-%.3f]" % (statistics.median(values), min(values), max(values))

    for name in PATH_ORDER:
        cells = []
        for rate in (1000, 5000):
            runs = results.get(("rate", name, rate))
            direct = results.get(("rate", "direct", rate))
            if not runs:
                cells += ["—", "—"]
                continue
            p99 = [r["p99"] for r in runs if r.get("p99") is not None]
            added = [r["p99"] - d["p99"] for r, d in zip(runs, direct or [])
                     if r.get("p99") is not None and d.get("p99") is not None]
            cells += [spread(p99), "—" if name == "direct" else spread(added)]
        if any(c != "—" for c in cells):
            lines.append("| %s | %s |" % (name, " | ".join(cells)))
    return "\n".join(lines)


def update_benchmarks(report):
    path = os.path.join(ROOT, "BENCHMARKS.md")
    text = open(path).read()
    begin, end = "<!-- bench/run.sh:begin -->", "<!-- bench/run.sh:end -->"
    block = begin + "\n" + report + "\n" + end
    if begin in text:
        text = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    main()
