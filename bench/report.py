#!/usr/bin/python3
"""report.py - the table (and JSON, and the results.md entry) of bench/run.

Reads what bench/run wrote while it measured:
  --meta FILE   key=value lines about the machine and settings, one
                "workload=... messages=... ..." line per workload and
                "peer=..." lines
  --runs FILE   one line of key=value pairs per measured run (kind=tern,
                sink or peer)
and prints one table: the header (machine, date, commit, settings), each
workload's parameters, a row per run and, with several runs, the medians.
--json FILE writes the same figures as JSON; --record FILE appends the
table to a markdown file (bench/results.md).
"""
import argparse
import json
import statistics
import sys


def parse_kv_line(line):
    out = {}
    for tok in line.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            out[k] = v
    return out


def num(v):
    """A number where the text is one, else the text (or None if empty)."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
        return int(f) if f.is_integer() and "." not in v else f
    except ValueError:
        return v.replace("_", " ")


def read_meta(path):
    meta, workloads, peers = {}, [], []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("workload="):
                workloads.append({k: num(v) for k, v in parse_kv_line(line).items()})
            elif line.startswith("peer="):
                peers.append({k: num(v) for k, v in parse_kv_line(line).items()})
            elif "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta, workloads, peers


def read_runs(path):
    with open(path) as f:
        return [{k: num(v) for k, v in parse_kv_line(l).items()} for l in f if l.strip()]


MEDIAN_KEYS = ["msgs_per_s", "steady_msgs_per_s", "engine_us_per_msg", "engine_rss_mib", "redis_us_per_msg",
               "sink_us_per_msg", "inject_us_per_msg", "loadgen_us_per_msg", "hs_full",
               "hs_resumed", "sink_hs_full", "sink_hs_resumed", "p50_ms", "p99_ms", "max_ms",
               "conns", "peak_conns", "delivered", "accepted_msgs_per_s",
               "listener_us_per_msg", "cal_x25519_us", "cal_aes_us"]


def medians(runs):
    m = {}
    for k in MEDIAN_KEYS:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float))]
        if vals:
            m[k] = statistics.median(vals)
    return m


def resumed_share(r):
    """Resumed handshakes in % of all (the sink's count on a sink row), or None."""
    full, res = r.get("hs_full"), r.get("hs_resumed")
    if r.get("kind") == "sink":
        full, res = r.get("sink_hs_full"), r.get("sink_hs_resumed")
    if not isinstance(full, (int, float)) or not isinstance(res, (int, float)) or full + res == 0:
        return None
    return 100.0 * res / (full + res)


def resumed_pct(r):
    share = resumed_share(r)
    return "-" if share is None else "%.1f%%" % share


def tiers(r):
    keys = ["tier_preferred", "tier_sufficient", "tier_legacy", "tier_plaintext"]
    if not any(k in r for k in keys):
        return "-"
    return "/".join(str(r.get(k, 0) if r.get(k) is not None else 0) for k in keys)


def fmt(v, f="%.1f"):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f % v
    return str(v)


COLS = "%-20s %8s %8s %8s %7s %7s %7s %7s %11s %8s %14s %7s %7s %7s %6s %7s\n"


def machine_pct(r, cores):
    """The machine's CPU the measured processes used during the run, in % of
    all its cores: (engine + redis + sink) CPU per message x msgs/s, or None.
    What is left to 100 is time they all waited (or other load)."""
    rate = r.get("msgs_per_s")
    parts = [r.get("engine_us_per_msg", r.get("loadgen_us_per_msg")), r.get("redis_us_per_msg"),
             r.get("sink_us_per_msg")]
    parts = [p for p in parts if isinstance(p, (int, float))]
    if not isinstance(rate, (int, float)) or not cores or not parts:
        return None
    return sum(parts) * rate / (cores * 1e6) * 100


def busy(r, cores):
    pct = machine_pct(r, cores)
    return "-" if pct is None else "%.0f%%" % pct


# redis-server runs the queue on one thread: past this share of one core,
# and above the share of the machine the run used, the queue is the limit
# nearest to running out, not the cores.
REDIS_BOUND_PCT = 75


def redis_bound(name, r, cores):
    """A line saying that redis-server's one thread was the tighter limit
    of run r (its CPU per message x msgs/s, in % of one core), or None."""
    rate, red = r.get("msgs_per_s"), r.get("redis_us_per_msg")
    machine = machine_pct(r, cores)
    if machine is None or not isinstance(red, (int, float)):
        return None
    redis_pct = red * rate / 1e6 * 100
    if redis_pct < REDIS_BOUND_PCT or redis_pct <= machine:
        return None
    return ("  %s: redis-server's one thread was busy %.0f%% of the run (redis us/msg x msgs/s), the machine "
            "%.0f%%: the queue, not the cores, bounds this run\n" % (name, redis_pct, machine))


# Past this change of the machine's speed between the timings before and
# after a run, the run itself measured a machine that changed under it.
SPEED_MOVED = 0.25


def speed_moved(name, r):
    """A line saying that the machine's speed (x25519 us) moved by more than
    SPEED_MOVED between the timings before and after run r, or None."""
    a, b = r.get("cal_x25519_before"), r.get("cal_x25519_after")
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or a <= 0 or b <= 0:
        return None
    if abs(a - b) / ((a + b) / 2) <= SPEED_MOVED:
        return None
    return ("  %s run %s: the machine's speed moved during the run (x25519 %.1f us before, %.1f after): "
            "its figures are not comparable with other runs'\n" % (name, r.get("run"), a, b))


def row(label, r, cores=None):
    hs = "%s/%s" % (fmt(r.get("hs_full"), "%.0f"), fmt(r.get("hs_resumed"), "%.0f"))
    if r.get("kind") == "sink":
        hs = "%s/%s" % (fmt(r.get("sink_hs_full"), "%.0f"), fmt(r.get("sink_hs_resumed"), "%.0f"))
    eng = r.get("engine_us_per_msg", r.get("loadgen_us_per_msg"))
    steady = r.get("steady_msgs_per_s")
    return COLS % (label, fmt(r.get("msgs_per_s"), "%.0f"), fmt(steady if steady else None, "%.0f"),
                   fmt(eng), fmt(r.get("engine_rss_mib")),
                   fmt(r.get("redis_us_per_msg")), fmt(r.get("sink_us_per_msg")),
                   fmt(r.get("inject_us_per_msg")), hs, resumed_pct(r), tiers(r),
                   fmt(r.get("p50_ms"), "%.0f"), fmt(r.get("p99_ms"), "%.0f"), fmt(r.get("max_ms"), "%.0f"),
                   busy(r, cores), fmt(r.get("cal_x25519_us")))


def rest(r):
    """Engine CPU per message outside the listener thread (the workers)."""
    e, l = r.get("engine_us_per_msg"), r.get("listener_us_per_msg")
    if not isinstance(e, (int, float)) or not isinstance(l, (int, float)):
        return "-"
    return "%.1f" % (e - l)


def listener_lines(name, rs):
    """The listener workloads' own figures: the rate at which the listener
    accepted (tern-loadgen's), and what was checked at the sink."""
    out = []
    for r in rs:
        out.append("  %s %s: accepted %s msg/s (tern-loadgen, its CPU %s us/msg), delivered end to end %s msg/s; "
                   "engine %s us/msg = listener thread %s + the rest %s; "
                   "sink %s of %s messages, SHA-256 %s of %s equal to the sent message%s\n"
                   % (name, r.get("run"), fmt(r.get("accepted_msgs_per_s"), "%.0f"), fmt(r.get("loadgen_us_per_msg")),
                      fmt(r.get("msgs_per_s"), "%.0f"), fmt(r.get("engine_us_per_msg")),
                      fmt(r.get("listener_us_per_msg")), rest(r), r.get("sink_messages"), r.get("messages"),
                      r.get("sha_ok"), r.get("sha_checked"),
                      "; AUTH %s: %s from the auth cache, password checks %s" % (
                          r.get("listener_auth_ok"), r.get("listener_auth_cached"), r.get("listener_auth_checks"))
                      if r.get("listener_auth_ok") else ""))
    if len(rs) > 1:
        m = medians(rs)
        out.append("  %s median: accepted %s msg/s, delivered end to end %s msg/s, listener thread %s us/msg\n"
                   % (name, fmt(m.get("accepted_msgs_per_s"), "%.0f"), fmt(m.get("msgs_per_s"), "%.0f"),
                      fmt(m.get("listener_us_per_msg"))))
    return out


def versions(rs):
    """The TLS versions the sink's handshakes negotiated over runs rs, as a
    phrase: "; negotiated TLS 1.3 100%"."""
    n = {k: sum(int(r.get(k) or 0) for r in rs) for k in ("sink_tls13", "sink_tls12", "sink_tls_older")}
    total = sum(n.values())
    if total == 0:
        return ""
    parts = ["%s %.0f%%" % (name, 100.0 * n[k] / total)
             for k, name in (("sink_tls13", "TLS 1.3"), ("sink_tls12", "TLS 1.2"), ("sink_tls_older", "older"))
             if n[k]]
    return "; negotiated " + ", ".join(parts)


# The targets issue 7 set for the 2-core machine this project is measured
# on: per workload its shape (the workload's own defaults: a target says
# nothing about another size or count) and the figures, (key, label,
# bound, "min" or "max"). And every one of these at 20x a peer's msgs/s.
TARGET_SHAPES = {
    "bulk": {"size": 4096, "rcpts": 1, "destinations": 100},
    "large": {"size": 102400, "rcpts": 1, "destinations": 100},
    "tail": {"size": 4096, "rcpts": 1, "destinations": 10000, "msgs_per_conn": 1},
}
TARGETS = {
    "bulk": [("msgs_per_s", "msg/s", 50000, "min"), ("engine_us_per_msg", "engine us/msg", 10, "max")],
    "large": [("msgs_per_s", "msg/s", 10000, "min")],
    "tail": [("msgs_per_s", "msg/s", 5000, "min"), ("resumed_pct", "% resumed", 95, "min")],
}
TARGET_PEER_RATIO = 20
TARGET_CORES = 2


def targets(meta, workloads, runs):
    """The issue's targets against this invocation's medians: (lines,
    [{workload, figure, value, target, bound, met}]). Only for the
    workloads run in their own shape, at loopback speed, TLS 1.3 and
    resumption as in the issue, and not in quick mode."""
    if (meta.get("quick") == "1" or meta.get("rtt_ms") not in (None, "", "0") or
            (meta.get("tls_max") or "1.3") != "1.3" or meta.get("resumption") == "off"):
        return [], []
    lines, out = [], []
    for w in workloads:
        name = w.get("workload")
        shape = TARGET_SHAPES.get(name)
        if shape is None or any(w.get(k) != v for k, v in shape.items()):
            continue
        rs = [r for r in runs if r.get("workload") == name and r.get("kind") == "tern"]
        if not rs:
            continue
        m = medians(rs)
        shares = [x for x in (resumed_share(r) for r in rs) if x is not None]
        if shares:
            m["resumed_pct"] = statistics.median(shares)
        parts = []
        for key, label, bound, kind in TARGETS[name]:
            v = m.get(key)
            if not isinstance(v, (int, float)):
                continue
            met = v >= bound if kind == "min" else v <= bound
            out.append({"workload": name, "figure": key, "value": v, "target": bound, "bound": kind, "met": met})
            unit = "%" if label.startswith("%") else ""
            parts.append("%s%s %s (%s %s%s): %s" % (("{:,.0f}" if v >= 100 else "{:.1f}").format(v), unit,
                                                    label.lstrip("% "), "at least" if kind == "min" else "at most",
                                                    "{:,}".format(bound), unit, "met" if met else "missed"))
        for p in [r for r in runs if r.get("workload") == name and r.get("kind") == "peer"]:
            if p.get("msgs_per_s") and m.get("msgs_per_s"):
                x = m["msgs_per_s"] / p["msgs_per_s"]
                met = x >= TARGET_PEER_RATIO
                out.append({"workload": name, "figure": "ratio_" + str(p.get("peer")), "value": x,
                            "target": TARGET_PEER_RATIO, "bound": "min", "met": met})
                parts.append("%.1fx %s (at least %dx): %s" % (x, p.get("peer"), TARGET_PEER_RATIO,
                                                              "met" if met else "missed"))
        if parts:
            lines.append("  %s: %s\n" % (name, "; ".join(parts)))
    if not lines:
        return [], []
    cores = num(meta.get("cores"))
    speed = [r["cal_x25519_us"] for r in runs if isinstance(r.get("cal_x25519_us"), (int, float))]
    head = "targets (issue 7, set for a %d-core machine; medians of this invocation%s%s):\n" % (
        TARGET_CORES, "" if cores == TARGET_CORES else
        "; this machine has %s cores, so for reference only" % cores,
        "; the machine's speed meanwhile: x25519 %.0f us, median" % statistics.median(speed) if speed else "")
    return [head] + lines, out


def table(meta, workloads, peers, runs):
    out = []
    out.append("tern delivery benchmark: %s, commit %s\n" % (meta.get("date"), meta.get("commit")))
    out.append("machine: %s cores, %s, kernel %s, load average at start %s\n"
               % (meta.get("cores"), meta.get("cpu"), meta.get("kernel"), meta.get("load")))
    out.append("redis: %sAOF %s%s; engine threads %s%s; sink threads %s%s; %s run(s) per workload%s\n"
               % ("Redis Cluster of %s master(s) on loopback TCP, " % meta.get("redis_cluster")
                  if meta.get("redis_cluster") not in (None, "", "0") else "",
                  meta.get("aof"), (", %s" % meta.get("redis_set").replace(";", ", ")) if meta.get("redis_set") else "",
                  meta.get("threads"), " (one per core)" if meta.get("threads") == "0" else "",
                  meta.get("sink_threads"), (", sink offers CHUNKING" if meta.get("sink_chunking") == "1" else "")
                  + (", every exchange with the sink %s ms round trip (tern-sink --latency)" % meta.get("rtt_ms")
                     if meta.get("rtt_ms") not in (None, "0") else "")
                  + ("; max_connections %s" % meta.get("conns_per_dest") if meta.get("conns_per_dest") else "")
                  + ("; tern config: %s" % meta.get("tern_set") if meta.get("tern_set") else ""),
                  meta.get("runs"), "; QUICK MODE (smoke test, not figures)" if meta.get("quick") == "1" else ""))
    if meta.get("aof") not in (None, "off"):
        rw = sum(int(r.get("aof_rewrites") or 0) for r in runs if r.get("kind") == "tern")
        out.append("redis AOF: appendfsync %s; the injection's AOF is rewritten (compacted) before each drain; "
                   "rewrites during the drains: %d (a forked child's CPU is in the redis column)\n"
                   % (meta.get("aof"), rw))
    out.append("\n%-20s %8s %7s %6s %6s %9s  %s\n" % ("workload", "messages", "size", "rcpts", "dests", "msgs/conn", "TLS"))
    receiver = "receiver up to TLS %s, resumption %s" % (meta.get("tls_max") or "1.3", meta.get("resumption") or "on")
    for w in workloads:
        got = versions([r for r in runs if r.get("workload") == w["workload"] and r.get("kind") in ("tern", "sink")])
        tls = ("STARTTLS, tls = encrypt, %s%s" % (receiver, got) if w.get("tls") == "starttls" else "none (plaintext)")
        if w.get("workload") == "sink":
            tls = "STARTTLS (tern-loadgen, 20 connections, pipelining), %s%s" % (receiver, got)
        if w.get("workload") == "sink-tail":
            tls = ("STARTTLS (tern-loadgen, 100 connections at a time, a new one per message%s), %s%s"
                   % (", resumed" if meta.get("resumption") != "off" else "", receiver, got))
        if str(w.get("workload")).startswith("listener"):
            conn = w["workload"] == "listener-auth-conn"
            tls = ("tern-loadgen -> tern's listener: STARTTLS (tls=required), pipelining, 20 connections%s, %s; "
                   "-> sink: tls = encrypt" % (", a new connection (TLS resumed, AUTH) per message" if conn else "",
                                              "AUTH PLAIN" if w["workload"].startswith("listener-auth") else "listen_allow"))
        rate = (", paced at %s msg/s" % w["rate"]) if w.get("rate") else ""
        if str(w.get("share")) == "0":
            rate += "; share_connections = no (each destination its own connections)"
        elif str(w.get("share")) == "1" and not str(w.get("workload")).startswith("sink"):
            rate += "; one site (all destinations on one MX address share connections)"
        if w.get("sink_threads") and meta.get("sink_threads") == "per workload":
            rate += "; sink threads %s" % w["sink_threads"]
        out.append("%-20s %8s %7s %6s %6s %9s  %s%s\n" % (w["workload"], w["messages"], w["size"], w["rcpts"],
                                                       w["destinations"], w["msgs_per_conn"], tls, rate))
    out.append("\n")
    out.append(COLS % ("run", "msgs/s", "steady", "engine", "RSS", "redis", "sink", "inject", "handshakes",
                       "resumed", "tiers", "p50", "p99", "max", "busy", "x25519"))
    out.append(COLS % ("", "", "msgs/s", "us/msg", "MiB", "us/msg", "us/msg", "us/msg", "full/res", "",
                       "p/s/l/plain", "ms", "ms", "ms", "cpu", "us"))
    cores = num(meta.get("cores"))
    for w in workloads:
        name = w["workload"]
        rs = [r for r in runs if r.get("workload") == name and r.get("kind") in ("tern", "sink")]
        for r in rs:
            out.append(row("%s %s" % (name, r.get("run")), r, cores))
        if len(rs) > 1:
            m = medians(rs)
            m["kind"] = rs[0].get("kind")
            out.append(row("%s median" % name, m, cores))
        if rs and rs[0].get("kind") == "tern":
            note = redis_bound(name if len(rs) == 1 else "%s median" % name, medians(rs) if len(rs) > 1 else rs[0],
                               cores)
            if note:
                out.append(note)
        if str(name).startswith("listener"):
            out.extend(listener_lines(name, rs))
        for r in rs:
            # a paced run whose injector could not keep its pace measured a
            # lower rate than the one in its header: say so
            if r.get("rate") and r.get("enqueue_rate") and r["enqueue_rate"] < 0.95 * r["rate"]:
                out.append("  %s run %s: the injector fell behind: it enqueued %s msg/s of the %s asked (Redis "
                           "could not take the enqueues faster); the latencies are those of %s msg/s\n"
                           % (name, r.get("run"), r["enqueue_rate"], r["rate"], r["enqueue_rate"]))
            note = speed_moved(name, r)
            if note:
                out.append(note)
        for p in [r for r in runs if r.get("workload") == name and r.get("kind") == "peer"]:
            out.append(row("%s %s" % (name, p.get("peer")), p, cores))
            note = speed_moved("%s %s" % (name, p.get("peer")), p)
            if note:
                out.append(note)
            tm = medians(rs)
            if p.get("msgs_per_s") and p.get("engine_us_per_msg") and tm.get("msgs_per_s") and tm.get("engine_us_per_msg"):
                out.append("  ratio tern/%s (%s, medians): throughput %.1fx, engine CPU per message %.1fx less\n"
                           % (p["peer"], name, tm["msgs_per_s"] / p["msgs_per_s"],
                              p["engine_us_per_msg"] / tm["engine_us_per_msg"]))
    tl, _ = targets(meta, workloads, runs)
    out.extend(tl)
    described = set()
    for p in peers:
        if p.get("describe") and p["describe"] not in described:
            described.add(p["describe"])
            out.append("peer: %s\n" % p["describe"])
        if p.get("skipped"):
            out.append("peer %s on %s: skipped (%s)\n" % (p["peer"], p.get("workload"), p["skipped"]))
    out.append("msgs/s: the whole run; steady: from the 10th to the 90th percentile of deliveries (tern's own "
               "count, without the start-up and the drain's end); engine/redis/sink/inject: CPU (user+sys) per "
               "delivered message; sink row: tern-loadgen's CPU in the engine column; latency: enqueue -> "
               "receiver's 250; busy: engine + redis + sink CPU over the run, in % of all the machine's cores; "
               "x25519: one X25519 key pair and shared secret (build/tern-crypto-cost on every core at once), the mean "
               "of its timings just before and just after the run: the machine's speed then; on a shared virtual "
               "machine it moves by tens of percent within minutes, so compare runs (and recordings) whose x25519 "
               "figures agree\n")
    if any(str(w.get("workload")).startswith("listener") for w in workloads):
        out.append("listener rows: msgs/s end to end (tern-loadgen's start -> the sink's N-th message), "
                   "inject = tern-loadgen's CPU, engine = the listener and the delivery together\n")
    return "".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--meta", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--json")
    ap.add_argument("--record")
    a = ap.parse_args()
    meta, workloads, peers = read_meta(a.meta)
    runs = read_runs(a.runs)
    text = table(meta, workloads, peers, runs)
    sys.stdout.write(text)
    if a.json:
        doc = {
            "date": meta.get("date"), "commit": meta.get("commit"),
            "machine": {"cores": num(meta.get("cores")), "cpu": meta.get("cpu"),
                        "kernel": meta.get("kernel"), "load": meta.get("load")},
            "settings": {"aof": meta.get("aof"), "engine_threads": num(meta.get("threads")),
                         "sink_threads": num(meta.get("sink_threads")) if meta.get("sink_threads") != "per workload" else "per workload", "runs": num(meta.get("runs")),
                         "sink_chunking": meta.get("sink_chunking") == "1",
                         "rtt_ms": num(meta.get("rtt_ms") or "0"),
                         "tls_max": meta.get("tls_max") or "1.3",
                         "resumption": meta.get("resumption") != "off",
                         "conns_per_dest": num(meta.get("conns_per_dest")) if meta.get("conns_per_dest") else None,
                         "tern_set": meta.get("tern_set").split(";") if meta.get("tern_set") else [],
                         "redis_set": meta.get("redis_set").split(";") if meta.get("redis_set") else [],
                         "redis_cluster": num(meta.get("redis_cluster") or "0"),
                         "quick": meta.get("quick") == "1"},
            "workloads": [],
            "peers": peers,
            "targets": targets(meta, workloads, runs)[1],
        }
        for w in workloads:
            rs = [r for r in runs if r.get("workload") == w["workload"] and r.get("kind") in ("tern", "sink")]
            ps = [r for r in runs if r.get("workload") == w["workload"] and r.get("kind") == "peer"]
            doc["workloads"].append({"name": w["workload"], "params": w, "runs": rs,
                                     "median": medians(rs), "peer_runs": ps})
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
    if a.record:
        with open(a.record, "a") as f:
            f.write("\n## %s, commit %s\n\n```\n%s```\n" % (meta.get("date"), meta.get("commit"), text))


if __name__ == "__main__":
    main()
