#!/usr/bin/env python3
"""The measuring half of scripts/compare.sh (which starts and stops the servers).

Subcommands, each printing one JSON object on stdout:

  warm      fetch a set of paths from a server (twice), then once more while counting the origin's
            requests: a server that caches them all sends the origin nothing on that last pass
  run       wait for a quiet machine, then one timed wrk run against one server, with the server's
            CPU time (utime + stime of it and all its descendants, from /proc/PID/stat), the CPU
            time of wrk itself (rusage), and both cores' /proc/stat counters over the run, so
            another process on either core, or steal time, shows
  coalesce  N concurrent requests for one cold key, each on its own connection, all sent before
            any answer can come back: the origin's request count before and after, and how long
            each waiter took
  lacking   the rows and servers that have no clean run yet (compare.sh retries those)
  meta      versions and the machine
  report    the table (stdout) and the JSON file, from the runs' JSON lines

Only the Python 3 standard library is used.
"""

import argparse
import concurrent.futures
import http.client
import json
import math
import os
import platform
import re
import resource
import selectors
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

CLK_TCK = int(os.environ.get("CLK_TCK") or os.sysconf("SC_CLK_TCK"))
CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

# ---------------------------------------------------------------------------------------------
# /proc


def cpu_times():
    """/proc/stat: {'cpu': {...}, 'cpu0': {...}, ...} in clock ticks."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu"):
                break
            name, *vals = line.split()
            out[name] = dict(zip(CPU_FIELDS, map(int, vals)))
    return out


def cpu_delta(a, b, name):
    return {k: b[name][k] - a[name][k] for k in CPU_FIELDS}


def busy_pct(d):
    total = sum(d.values())
    idle = d["idle"] + d["iowait"]
    return 100.0 * (total - idle) / total if total else 0.0


def proc_ticks(pid):
    """utime + stime of one process (all its threads), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def descendants(roots):
    """The roots and every process below them."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return sorted(seen)


def tree_ticks(pids):
    return {pid: proc_ticks(pid) for pid in pids}


def wait_quiet(max_busy, max_wait):
    """Samples the whole machine's busy share over 1 s until it is at most max_busy percent or
    max_wait seconds have passed."""
    start = time.monotonic()
    samples = []
    while True:
        a = cpu_times()
        time.sleep(1.0)
        b = cpu_times()
        busy = busy_pct(cpu_delta(a, b, "cpu"))
        samples.append(round(busy, 1))
        waited = time.monotonic() - start
        if busy <= max_busy:
            return {"quiet": True, "waited_s": round(waited, 1), "busy_pct": round(busy, 1)}
        if waited >= max_wait:
            return {
                "quiet": False,
                "waited_s": round(waited, 1),
                "busy_pct": round(busy, 1),
                "samples": samples[-10:],
            }


def busy_ticks(d):
    """Ticks a core spent on anything but idle, iowait and steal. Softirq and irq count: this
    kernel (like most) has no IRQ time accounting, so the softirq time a tick finds a process in
    (loopback TCP is processed in softirq) is part of that process's utime + stime too."""
    return sum(d.values()) - d["idle"] - d["iowait"] - d["steal"]


def interference(c0, c1, wall, server_core, client_core, server_ticks, client_ticks, noise_pct):
    """What else ran during a measured window: busy time on the server's core beyond the
    server's CPU time, on the client's core beyond the client's (and the origin's), on any other
    core at all, and steal time; in percent of the window. Returns (numbers, noisy flags)."""
    span = wall * CLK_TCK
    sc = cpu_delta(c0, c1, f"cpu{server_core}")
    cc = cpu_delta(c0, c1, f"cpu{client_core}")
    rest = sum(
        busy_ticks(cpu_delta(c0, c1, name))
        for name in c1
        if name != "cpu" and name not in (f"cpu{server_core}", f"cpu{client_core}")
    )
    out = {
        "server_core": sc,
        "client_core": cc,
        "other_on_server_core_pct": round((busy_ticks(sc) - server_ticks) / span * 100, 1),
        "other_on_client_core_pct": round((busy_ticks(cc) - client_ticks) / span * 100, 1),
        "other_cores_busy_pct": round(rest / span * 100, 1),
        "steal_pct": round(max(sc["steal"], cc["steal"]) / span * 100, 1),
    }
    # /proc/stat counts whole ticks: on a short window (coalescing takes about a second) a few
    # ticks either way are sampling, not another process.
    sampling = 3 / span * 100
    noise_pct = max(noise_pct, sampling)
    flags = []
    if out["other_on_server_core_pct"] > noise_pct:
        flags.append(f"core{server_core}+{out['other_on_server_core_pct']:.0f}%")
    if out["other_on_client_core_pct"] > noise_pct:
        flags.append(f"core{client_core}+{out['other_on_client_core_pct']:.0f}%")
    if out["other_cores_busy_pct"] > noise_pct:
        flags.append(f"other-cores+{out['other_cores_busy_pct']:.0f}%")
    if out["steal_pct"] > max(2.0, sampling):
        flags.append(f"steal{out['steal_pct']:.0f}%")
    return out, flags


def ticks_between(before, after):
    return sum(after[p] - before[p] for p in before if before[p] is not None and after.get(p) is not None)


# ---------------------------------------------------------------------------------------------
# HTTP helpers


def origin_requests(origin):
    with urllib.request.urlopen(f"http://{origin}/_origin/stats", timeout=5) as r:
        return json.load(r)["requests"]


def fetch_all(host, port, paths, workers=32):
    """GETs every path over keep-alive connections; returns the status counts."""
    chunks = [paths[i::workers] for i in range(workers)]

    def worker(chunk):
        statuses = {}
        conn = None
        for path in chunk:
            for attempt in range(2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection(host, port, timeout=10)
                    conn.request("GET", path)
                    resp = conn.getresponse()
                    resp.read()
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                    if resp.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                    break
                except (OSError, http.client.HTTPException):
                    if conn is not None:
                        conn.close()
                    conn = None
                    if attempt:
                        statuses["error"] = statuses.get("error", 0) + 1
        if conn is not None:
            conn.close()
        return statuses

    total = {}
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for statuses in pool.map(worker, [c for c in chunks if c]):
            for k, v in statuses.items():
                total[str(k)] = total.get(str(k), 0) + v
    return total


def expand_paths(specs):
    """'/mix/{1..1000}?size=1024' style ranges, one spec per argument."""
    out = []
    for spec in specs:
        m = re.search(r"\{(\d+)\.\.(\d+)\}", spec)
        if m:
            for i in range(int(m.group(1)), int(m.group(2)) + 1):
                out.append(spec[: m.start()] + str(i) + spec[m.end() :])
        else:
            out.append(spec)
    return out


def cmd_warm(a):
    paths = expand_paths(a.paths)
    first = fetch_all(a.host, a.port, paths)
    fetch_all(a.host, a.port, paths)
    time.sleep(0.2)
    before = origin_requests(a.origin)
    check = fetch_all(a.host, a.port, paths)
    time.sleep(0.2)
    after = origin_requests(a.origin)
    print(
        json.dumps(
            {
                "kind": "warm",
                "server": a.server,
                "row": a.row,
                "paths": len(paths),
                "first_pass": first,
                "check_pass": check,
                "origin_requests_on_check_pass": after - before,
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# wrk


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    scale = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[m.group(2)]
    return float(m.group(1)) * scale


def parse_wrk(out):
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else None
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if m:
        r["requests"] = int(m.group(1))
        r["wrk_duration_s"] = to_us(m.group(2) + m.group(3)) / 1e6
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_us"] = to_us(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(map(int, m.groups())) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non_2xx"] = int(m.group(1)) if m else 0
    return r


def cmd_run(a):
    quiet = wait_quiet(a.quiet_pct, a.quiet_wait)
    origin_before = origin_requests(a.origin)
    pids = descendants([a.pid])
    origin_pids = descendants([a.origin_pid]) if a.origin_pid else []
    cmd = ["taskset", "-c", a.client_core, "wrk", "-t1", f"-c{a.conns}", f"-d{a.duration}"]
    cmd += ["--latency", "--timeout", "5s"]
    if a.lua:
        cmd += ["-s", a.lua]
    cmd.append(a.url)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0, o0 = tree_ticks(pids), tree_ticks(origin_pids)
    c0 = cpu_times()
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    t1 = time.monotonic()
    c1 = cpu_times()
    s1, o1 = tree_ticks(pids), tree_ticks(origin_pids)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.1)
    origin_after = origin_requests(a.origin)

    wall = t1 - t0
    r = parse_wrk(proc.stdout)
    server_ticks = ticks_between(s0, s1)
    gone = [p for p in pids if s1[p] is None]
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    span = wall * CLK_TCK
    # The origin shares the client's core; it should be idle during a run of hits.
    client_ticks = wrk_cpu * CLK_TCK + ticks_between(o0, o1)
    noise, flags = interference(
        c0, c1, wall, a.server_core, a.client_core, server_ticks, client_ticks, a.noise_pct
    )
    requests = r.get("requests") or 0
    result = {
        "row": a.row,
        "server": a.server,
        "run": a.run,
        "url": a.url,
        "lua": os.path.basename(a.lua) if a.lua else None,
        "command": " ".join(cmd),
        "wrk_exit": proc.returncode,
        **r,
        "wall_s": round(wall, 3),
        "server_pids": pids,
        "server_pids_gone": gone,
        "server_cpu_s": server_ticks / CLK_TCK,
        "server_cpu_us_per_req": (server_ticks / CLK_TCK / requests * 1e6) if requests else None,
        "server_core_util_pct": round(server_ticks / span * 100, 1),
        "wrk_cpu_s": round(wrk_cpu, 3),
        "wrk_core_util_pct": round(wrk_cpu / wall * 100, 1),
        "origin_cpu_s": ticks_between(o0, o1) / CLK_TCK,
        **noise,
        "origin_requests_during_run": origin_after - origin_before,
        "quiet_before": quiet,
        "clk_tck": CLK_TCK,
    }
    # Noisy: something else ran on a core (or the hypervisor took it) during the run. A busy
    # machine before the run is noted, but the run itself is the evidence.
    noisy = bool(flags)
    if not quiet["quiet"]:
        flags.insert(0, f"started-busy({quiet['busy_pct']:.0f}%)")
    if r.get("socket_errors") or r.get("non_2xx") or proc.returncode or r.get("rps") is None:
        flags.append(f"errors(sock={r.get('socket_errors')},non2xx={r.get('non_2xx')})")
    if result["origin_requests_during_run"]:
        flags.append(f"origin:{result['origin_requests_during_run']}")
    if gone:
        flags.append("pid-exited")  # e.g. the nginx cache loader, done after its first pass
    result["noisy"] = noisy
    result["flags"] = flags
    if proc.returncode or r.get("rps") is None:
        result["wrk_stdout"] = proc.stdout[-2000:]
        result["wrk_stderr"] = proc.stderr[-2000:]
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------
# coalescing


def cmd_coalesce(a):
    quiet = wait_quiet(a.quiet_pct, a.quiet_wait)
    before = origin_requests(a.origin) if a.origin else None
    pids = descendants([a.pid])
    origin_pids = descendants([a.origin_pid]) if a.origin_pid else []
    s0, o0 = tree_ticks(pids), tree_ticks(origin_pids)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = cpu_times()
    t0 = time.monotonic()
    request = (
        f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nUser-Agent: compare-coalesce\r\n"
        f"Accept: */*\r\n\r\n"
    ).encode()
    socks = []
    connect_errors = 0
    for _ in range(a.n):
        try:
            s = socket.create_connection((a.host, a.port), timeout=5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            connect_errors += 1
    sel = selectors.DefaultSelector()
    state = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    # Every request is written before any answer is read.
    for s in socks:
        state[s] = {"sent": time.perf_counter(), "buf": b"", "done": None, "status": None}
        try:
            s.send(request)
        except OSError:
            state[s]["status"] = "send-error"
    deadline = time.monotonic() + a.timeout
    pending = len([s for s in socks if state[s]["status"] is None])
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
            s = key.fileobj
            st = state[s]
            try:
                data = s.recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            now = time.perf_counter()
            if data:
                st["buf"] += data
            complete = response_complete(st["buf"])
            if complete or not data:
                st["done"] = now
                if complete:
                    st["status"] = int(st["buf"][9:12])
                else:
                    st["status"] = "closed-early"
                sel.unregister(s)
                pending -= 1
    t1 = time.monotonic()
    c1 = cpu_times()
    s1, o1 = tree_ticks(pids), tree_ticks(origin_pids)
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    own = (self1.ru_utime - self0.ru_utime + self1.ru_stime - self0.ru_stime) * CLK_TCK
    noise, flags = interference(
        c0, c1, t1 - t0, a.server_core, a.client_core, ticks_between(s0, s1),
        own + ticks_between(o0, o1), a.noise_pct,
    )
    for s in socks:
        if state[s]["status"] is None:
            state[s]["status"] = "timeout"
        s.close()
    time.sleep(0.3)
    after = origin_requests(a.origin) if a.origin else None
    lat = sorted((st["done"] - st["sent"]) * 1e3 for st in state.values() if st["done"] is not None)
    statuses = {}
    for st in state.values():
        statuses[str(st["status"])] = statuses.get(str(st["status"]), 0) + 1

    def pct(p):
        if not lat:
            return None
        # Nearest rank.
        return round(lat[min(len(lat), max(1, math.ceil(p / 100 * len(lat)))) - 1], 2)

    print(
        json.dumps(
            {
                "row": "coalesce",
                "server": a.server,
                "run": a.run,
                "path": a.path,
                "n": a.n,
                "connect_errors": connect_errors,
                "statuses": statuses,
                "ok": statuses.get("200", 0),
                "origin_requests": (after - before) if a.origin else None,
                "waiter_p50_ms": pct(50),
                "waiter_p99_ms": pct(99),
                "waiter_min_ms": round(lat[0], 2) if lat else None,
                "waiter_max_ms": round(lat[-1], 2) if lat else None,
                "wall_s": round(t1 - t0, 3),
                **noise,
                "quiet_before": quiet,
                "noisy": bool(flags),
                "flags": ([] if quiet["quiet"] else [f"started-busy({quiet['busy_pct']:.0f}%)"]) + flags,
            }
        )
    )


def response_complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].decode("latin-1").lower()
    body = len(buf) - end - 4
    m = re.search(r"\r\ncontent-length:\s*(\d+)", head)
    if m:
        return body >= int(m.group(1))
    if re.search(r"\r\ntransfer-encoding:[^\r]*chunked", head):
        return buf.endswith(b"0\r\n\r\n")
    status = int(buf[9:12])
    return status in (204, 304) or 100 <= status < 200


# ---------------------------------------------------------------------------------------------
# meta


def first_line(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    lines = [l for l in (p.stdout + p.stderr).splitlines() if l.strip()]
    lines = [l for l in lines if "using root directory" not in l and "TS_RUNROOT" not in l]
    return lines[0].strip() if lines else ""


def cmd_meta(a):
    cpuinfo = open("/proc/cpuinfo").read()
    models = re.findall(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    mem = re.search(r"MemTotal:\s+(\d+) kB", open("/proc/meminfo").read())
    git = lambda *args: first_line(["git", "-C", a.root, *args])  # noqa: E731
    dirty = subprocess.run(
        ["git", "-C", a.root, "status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock"],
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    dirty = [l for l in dirty if l.strip()]
    print(
        json.dumps(
            {
                "started": a.started,
                "versions": {
                    "nginx": first_line(["nginx", "-v"]),
                    "varnish": first_line(["varnishd", "-V"]),
                    "trafficserver": first_line(["traffic_server", "--version"]),
                    "wrk": first_line(["wrk", "-v"]),
                    "cachet_git_rev": git("rev-parse", "HEAD"),
                    "cachet_git_describe": git("describe", "--always", "--dirty"),
                    "cachet_uncommitted_changes": dirty,
                    "cachet_version": first_line([a.cachet, "--version"]),
                    "rustc": first_line(["rustc", "-V"]),
                    "python": platform.python_version(),
                },
                "machine": {
                    "kernel": platform.release(),
                    "uname": " ".join(platform.uname()),
                    "cpu_model": models[0] if models else platform.processor(),
                    "cpus": len(models) or os.cpu_count(),
                    "mem_total_kib": int(mem.group(1)) if mem else None,
                    "clk_tck": CLK_TCK,
                    "loadavg_at_start": open("/proc/loadavg").read().strip(),
                },
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# report

ROWS = {
    "hot1k": "hot hit, 1 KiB, one URL",
    "hot64k": "hot hit, 64 KiB, one URL",
    "mix": "1,000-key random mix, 1 KiB, all hits",
}
PEERS = ("nginx", "varnish", "trafficserver")
LIMIT = "hyper-limit"


def fmt_us(us):
    if us is None:
        return "-"
    if us >= 1e6:
        return f"{us / 1e6:.2f}s"
    if us >= 1e3:
        return f"{us / 1e3:.2f}ms"
    return f"{us:.0f}us"


def fmt_cpu(us):
    return "-" if us is None else f"{us:.1f}us"


def fmt_ratio(x):
    return "-" if x is None else f"{x:.2f}x"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def pick(runs):
    """The runs a row's numbers come from: the clean ones when there are any, else all of them
    (and the row is then marked NOISY)."""
    clean = [r for r in runs if not r.get("noisy")]
    return (clean or runs), len(clean)


def union_flags(runs):
    flags = []
    for r in runs:
        for f in r.get("flags", []):
            # One entry per kind of flag: "core0+12%" and "core0+40%" both read "core0+".
            kind = re.sub(r"[0-9.]+%?\)?$", "", f)
            if not any(re.sub(r"[0-9.]+%?\)?$", "", g) == kind for g in flags):
                flags.append(f)
    return flags


def aggregate(all_runs, spread_pct):
    runs, clean = pick(all_runs)
    rps = [r["rps"] for r in runs if r.get("rps")]
    agg = {
        "runs": len(all_runs),
        "clean_runs": clean,
        "from": "clean runs" if clean else "all runs (none was clean)",
        "rps": median(rps),
        "rps_used": rps,
        "rps_all": [r.get("rps") for r in all_runs],
        "p50_us": median([r.get("p50_us") for r in runs]),
        "p99_us": median([r.get("p99_us") for r in runs]),
        "cpu_us_per_req": median([r.get("server_cpu_us_per_req") for r in runs]),
        "server_core_util_pct": median([r.get("server_core_util_pct") for r in runs]),
        "wrk_core_util_pct": median([r.get("wrk_core_util_pct") for r in runs]),
        "origin_requests_during_runs": sum(r.get("origin_requests_during_run") or 0 for r in all_runs),
    }
    flags = union_flags(runs)
    noisy = not clean
    if len(rps) > 1 and agg["rps"]:
        spread = (max(rps) - min(rps)) / agg["rps"] * 100
        agg["rps_spread_pct"] = round(spread, 1)
        if spread > spread_pct:
            flags.append(f"spread{spread:.0f}%")
            noisy = True
    if agg["wrk_core_util_pct"] and agg["wrk_core_util_pct"] >= 95:
        flags.append("wrk-bound")
    agg["flags"] = flags
    agg["noisy"] = noisy
    return agg


def cmd_lacking(a):
    """Rows and servers without a clean run yet, one "row server" per line (for retries)."""
    runs = {}
    for line in open(a.results):
        if line.strip():
            r = json.loads(line)
            if r.get("kind") != "warm":
                runs.setdefault((r["row"], r["server"]), []).append(r)
    for (row, server), rs in runs.items():
        if not any(not r.get("noisy") for r in rs):
            print(row, server)


def cmd_report(a):
    meta = json.load(open(a.meta))
    runs, warm, coal = [], {}, []
    for line in open(a.results):
        if not line.strip():
            continue
        r = json.loads(line)
        if r.get("kind") == "warm":
            warm.setdefault(r["server"], {})[r["row"]] = r
        elif r.get("row") == "coalesce":
            coal.append(r)
        else:
            runs.append(r)
    servers = []
    for r in runs + coal:
        if r["server"] not in servers:
            servers.append(r["server"])
    rows = {}
    for row in ROWS:
        rows[row] = {}
        for s in servers:
            rs = [r for r in runs if r["row"] == row and r["server"] == s]
            if rs:
                rows[row][s] = aggregate(rs, a.spread_pct)
    # Ratios to each peer and to the limit.
    for row, by_server in rows.items():
        for s, agg in by_server.items():
            agg["rps_ratio"] = {}
            agg["cpu_ratio"] = {}
            for peer in (LIMIT, *PEERS):
                p = by_server.get(peer)
                if p and p["rps"] and agg["rps"]:
                    agg["rps_ratio"][peer] = round(agg["rps"] / p["rps"], 3)
                if p and p["cpu_us_per_req"] and agg["cpu_us_per_req"]:
                    agg["cpu_ratio"][peer] = round(agg["cpu_us_per_req"] / p["cpu_us_per_req"], 3)

    out = []
    w = out.append
    v = meta["versions"]
    m = meta["machine"]
    w(f"cachet compare: {meta['started']}, {m['cpu_model']} x{m['cpus']}, kernel {m['kernel']}")
    def short(text, pattern):
        found = re.search(pattern, text or "")
        return found.group(0) if found else (text or "?")

    w(f"  cachet {v['cachet_git_describe']}"
      + (f" ({len(v['cachet_uncommitted_changes'])} uncommitted files)" if v["cachet_uncommitted_changes"] else "")
      + f", {short(v['nginx'], r'nginx/[0-9.]+')}, {short(v['varnish'], r'varnish-[0-9.]+')}, "
      f"{short(v['trafficserver'], r'Traffic Server [0-9.]+')}, {short(v['wrk'], r'wrk [^ ]+')}")
    w(f"  servers pinned to core {a.server_core}, wrk -t1 -c{a.conns} -d{a.duration} pinned to core "
      f"{a.client_core}; {a.runs} run(s) per row and server, interleaved; medians shown")
    peers_present = [p for p in (LIMIT, *PEERS) if p in servers]
    for row, title in ROWS.items():
        by_server = rows[row]
        if not by_server:
            continue
        w("")
        w(f"== {title}")
        head = f"{'server':<16}{'req/s':>10}{'p50':>10}{'p99':>10}{'CPU/req':>10}{'srv%':>6}{'wrk%':>6}"
        for p in peers_present:
            head += f"{'/' + p.replace('trafficserver', 'ats').replace('hyper-limit', 'limit'):>9}"
        head += f"{'cpu/nginx':>10}  notes"
        w(head)
        for s in servers:
            agg = by_server.get(s)
            if not agg:
                continue
            line = (
                f"{s:<16}{agg['rps'] or 0:>10,.0f}{fmt_us(agg['p50_us']):>10}"
                f"{fmt_us(agg['p99_us']):>10}{fmt_cpu(agg['cpu_us_per_req']):>10}"
                f"{agg['server_core_util_pct'] or 0:>6.0f}{agg['wrk_core_util_pct'] or 0:>6.0f}"
            )
            for p in peers_present:
                line += f"{fmt_ratio(agg['rps_ratio'].get(p)):>9}"
            line += f"{fmt_ratio(agg['cpu_ratio'].get('nginx')):>10}"
            notes = ("NOISY " if agg["noisy"] else "") + f"clean {agg['clean_runs']}/{agg['runs']} " + " ".join(agg["flags"])
            w(line + "  " + notes.strip())
        best = max(
            (s for s in by_server if s.startswith("cachet-") and by_server[s]["rps"]),
            key=lambda s: by_server[s]["rps"],
            default=None,
        )
        fastest_peer = max(
            (p for p in PEERS if p in by_server and by_server[p]["rps"]),
            key=lambda p: by_server[p]["rps"],
            default=None,
        )
        if best:
            b = by_server[best]
            parts = [f"best cachet: {best}"]
            if fastest_peer:
                fp = by_server[fastest_peer]
                parts.append(f"{b['rps'] / fp['rps']:.2f}x the fastest peer ({fastest_peer})")
                peer_p99 = [by_server[p]["p99_us"] for p in PEERS if p in by_server and by_server[p]["p99_us"]]
                if peer_p99 and b["p99_us"]:
                    parts.append("p99 below every peer's" if b["p99_us"] < min(peer_p99)
                                 else "p99 not below every peer's")
            if LIMIT in by_server and by_server[LIMIT]["rps"]:
                parts.append(f"{b['rps'] / by_server[LIMIT]['rps']:.2f}x {LIMIT}")
            if "nginx" in by_server and by_server["nginx"]["cpu_us_per_req"] and b["cpu_us_per_req"]:
                parts.append(f"CPU/req {b['cpu_us_per_req'] / by_server['nginx']['cpu_us_per_req']:.2f}x nginx's")
            w("  " + ", ".join(parts))

    coal_agg = {}
    for s in servers:
        all_cs = [c for c in coal if c["server"] == s]
        if not all_cs:
            continue
        # Origin requests from every run (coalescing has to hold each time); timings from the
        # clean runs when there are any.
        origin = [c["origin_requests"] for c in all_cs if c["origin_requests"] is not None]
        cs, clean = pick(all_cs)
        flags = union_flags(cs)
        coal_agg[s] = {
            "runs": len(all_cs),
            "clean_runs": clean,
            "origin_requests": origin,
            "ok": [c["ok"] for c in all_cs],
            "n": cs[0]["n"],
            "waiter_p50_ms": median([c["waiter_p50_ms"] for c in cs]),
            "waiter_p99_ms": median([c["waiter_p99_ms"] for c in cs]),
            "waiter_max_ms": max((c["waiter_max_ms"] for c in cs if c["waiter_max_ms"] is not None), default=None),
            "statuses": [c["statuses"] for c in all_cs],
            "noisy": not clean,
            "flags": flags,
        }
    if coal_agg:
        w("")
        w(f"== coalescing: {a.coalesce_n} concurrent requests for one cold key, origin latency "
          f"{a.coalesce_latency} (one new key per run; {LIMIT}: no origin, the client's own floor)")
        w(f"{'server':<16}{'origin reqs':>12}{'200s':>10}{'p50':>10}{'p99':>10}{'max':>10}{'p99-lat':>10}  notes")
        lat_ms = to_us(a.coalesce_latency) / 1e3
        for s, c in coal_agg.items():
            origin = ",".join(map(str, c["origin_requests"])) or "n/a"
            ok = ",".join(f"{o}/{c['n']}" for o in c["ok"]) if len(set(c["ok"])) > 1 else f"{c['ok'][0]}/{c['n']}"
            over = None
            if s != LIMIT and c["waiter_p99_ms"] is not None:
                over = c["waiter_p99_ms"] - lat_ms
                c["p99_over_origin_latency_ms"] = round(over, 2)
            w(
                f"{s:<16}{origin:>12}{ok:>10}{c['waiter_p50_ms'] or 0:>8.1f}ms{c['waiter_p99_ms'] or 0:>8.1f}ms"
                f"{c['waiter_max_ms'] or 0:>8.1f}ms{(f'{over:+.1f}ms' if over is not None else '-'):>10}  "
                + (("NOISY " if c["noisy"] else "") + f"clean {c['clean_runs']}/{c['runs']} " + " ".join(c["flags"])).strip()
            )

    w("")
    w("notes: req/s, p50 and p99 from wrk; CPU/req = the server's utime+stime (all its processes "
      "and threads, /proc/PID/stat) over the run / requests; srv% and wrk% = CPU time / wall time "
      "of the server and of wrk on their cores; /X = req/s ratio to X; cpu/nginx = CPU/req ratio.")
    w(f"  A run is clean when nothing else ran during it: no other process on either core "
      f"(coreN+X%: busy time beyond the server's or wrk's own, over {a.noise_pct:g}% of the run), "
      "nothing on other cores (other-cores+X%), no steal time (stealX%). Each row shows the "
      "median of its clean runs (clean k/n), or of all runs when none was clean: NOISY. NOISY "
      f"also when the runs used spread over {a.spread_pct:g}% (spreadX%). started-busy: the "
      "machine was still busy when the wait for quiet gave up. wrk-bound: wrk used its whole "
      "core, so req/s is the load generator's limit there and CPU/req is the comparison that "
      "holds. origin:N: requests that reached the origin during the run (not all hits).")
    for s, rws in warm.items():
        for row, wr in rws.items():
            if wr.get("origin_requests_on_check_pass"):
                w(f"  WARNING: {s} sent {wr['origin_requests_on_check_pass']} of "
                  f"{wr['paths']} {row} requests to the origin after warming: it did not cache them all")
    text = "\n".join(out)
    print(text)

    report = {
        **meta,
        "config": {
            "duration": a.duration,
            "runs": a.runs,
            "conns": a.conns,
            "server_core": a.server_core,
            "client_core": a.client_core,
            "wrk": f"taskset -c {a.client_core} wrk -t1 -c{a.conns} -d{a.duration} --latency",
            "coalesce": {"n": a.coalesce_n, "origin_latency": a.coalesce_latency},
            "quiet_pct": a.quiet_pct,
            "noise_pct": a.noise_pct,
            "spread_pct": a.spread_pct,
            "command": a.command,
        },
        "rows": {row: {"title": ROWS[row], "servers": rows[row]} for row in ROWS},
        "coalescing": coal_agg,
        "warm": warm,
        "table": text,
        "raw_runs": runs,
        "raw_coalesce": coal,
    }
    with open(a.out, "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")


# ---------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def quiet_args(p):
        p.add_argument("--quiet-pct", type=float, default=10.0)
        p.add_argument("--quiet-wait", type=float, default=30.0)

    p = sub.add_parser("warm")
    p.add_argument("--server", required=True)
    p.add_argument("--row", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--origin", required=True)
    p.add_argument("paths", nargs="+")

    p = sub.add_parser("run")
    p.add_argument("--row", required=True)
    p.add_argument("--server", required=True)
    p.add_argument("--run", type=int, default=1)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--origin-pid", type=int)
    p.add_argument("--url", required=True)
    p.add_argument("--lua")
    p.add_argument("--origin", required=True)
    p.add_argument("--duration", default="10s")
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--server-core", default="0")
    p.add_argument("--client-core", default="1")
    p.add_argument("--noise-pct", type=float, default=5.0)
    quiet_args(p)

    p = sub.add_parser("coalesce")
    p.add_argument("--server", required=True)
    p.add_argument("--run", type=int, default=1)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--origin")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--timeout", type=float, default=15.0)
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--origin-pid", type=int)
    p.add_argument("--server-core", default="0")
    p.add_argument("--client-core", default="1")
    p.add_argument("--noise-pct", type=float, default=5.0)
    quiet_args(p)

    p = sub.add_parser("lacking")
    p.add_argument("--results", required=True)

    p = sub.add_parser("meta")
    p.add_argument("--root", required=True)
    p.add_argument("--cachet", required=True)
    p.add_argument("--started", required=True)

    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--duration", required=True)
    p.add_argument("--runs", type=int, required=True)
    p.add_argument("--conns", type=int, default=64)
    p.add_argument("--server-core", default="0")
    p.add_argument("--client-core", default="1")
    p.add_argument("--coalesce-n", type=int, default=200)
    p.add_argument("--coalesce-latency", default="500ms")
    p.add_argument("--quiet-pct", type=float, default=10.0)
    p.add_argument("--noise-pct", type=float, default=5.0)
    p.add_argument("--spread-pct", type=float, default=10.0)
    p.add_argument("--command", default="")

    a = ap.parse_args()
    {
        "warm": cmd_warm,
        "run": cmd_run,
        "coalesce": cmd_coalesce,
        "lacking": cmd_lacking,
        "meta": cmd_meta,
        "report": cmd_report,
    }[
        a.cmd
    ](a)


if __name__ == "__main__":
    sys.exit(main())
