#!/usr/bin/python3
"""ab_report.py - the table of bench/ab: interleaved pairs of bench/run.

Arguments: --a NAME --b NAME --all 0|1 [--json FILE] and then, in the
order they ran, one SIDE=FILE per run (SIDE a or b, FILE bench/run's
--json of a one-run invocation). Consecutive runs pair up: the first a with
the first b, and so on. For every workload it prints each pair's figures,
the medians of each side, and per figure the median of the pairs' ratios
B/A with how many pairs went B's way: on a machine whose speed drifts,
a ratio within a pair (both runs minutes apart at most) is steadier than
either side's median, and the count says whether the pairs agree.
"""
import argparse
import json
import statistics
import sys

# (key, label, format, higher_is_better)
FIGURES = [
    ("msgs_per_s", "msgs/s", "%.0f", True),
    ("steady_msgs_per_s", "steady", "%.0f", True),
    ("engine_us_per_msg", "engine", "%.1f", False),
    ("redis_us_per_msg", "redis", "%.1f", False),
    ("sink_us_per_msg", "sink", "%.1f", False),
    ("engine_per_sink", "eng/sink", "%.3f", False),
    ("engine_rss_mib", "RSS", "%.1f", False),
    ("p99_ms", "p99 ms", "%.0f", False),
    ("cal_x25519_us", "x25519", "%.1f", None),
]


def run_figures(run):
    """The figures of one run; a sink workload's engine is tern-loadgen."""
    f = {}
    for key, _, _, _ in FIGURES:
        v = run.get(key)
        if key == "engine_us_per_msg" and v is None:
            v = run.get("loadgen_us_per_msg")
        if key == "engine_per_sink":
            continue
        if isinstance(v, (int, float)):
            f[key] = v
    # The engine's CPU per message over the sink's in the same run: the
    # sink is the same binary on both sides (unless --all) and slows down
    # with the machine as the engine does, so this ratio moves much less
    # with the machine's speed than either figure (on this shared VM the
    # sink's own us/msg moved by 10% between the two runs of a pair).
    e, s = f.get("engine_us_per_msg"), f.get("sink_us_per_msg")
    if e is not None and s:
        f["engine_per_sink"] = e / s
    return f


def load(args):
    """[(side, {workload: figures})] in run order."""
    out = []
    for a in args:
        side, _, path = a.partition("=")
        if side not in ("a", "b") or not path:
            sys.exit("ab_report.py: want SIDE=FILE with SIDE a or b, got %r" % a)
        with open(path) as f:
            doc = json.load(f)
        out.append((side, {w["name"]: run_figures(w["runs"][0]) for w in doc["workloads"] if w["runs"]}))
    return out


def pairs_of(runs):
    """[(a_figures_by_workload, b_figures_by_workload)], in pair order."""
    a = [r for s, r in runs if s == "a"]
    b = [r for s, r in runs if s == "b"]
    if len(a) != len(b) or not a:
        sys.exit("ab_report.py: %d run(s) of A and %d of B: want as many of each, at least one" % (len(a), len(b)))
    return list(zip(a, b))


def fmt(v, f):
    return "-" if v is None else f % v


def summary(pairs, workload):
    """Medians of each side and the pairs' ratios B/A, per figure."""
    s = {}
    for key, _, _, better in FIGURES:
        av = [p[0][workload][key] for p in pairs if key in p[0].get(workload, {})]
        bv = [p[1][workload][key] for p in pairs if key in p[1].get(workload, {})]
        ratios = [p[1][workload][key] / p[0][workload][key] for p in pairs
                  if key in p[0].get(workload, {}) and key in p[1].get(workload, {}) and p[0][workload][key] > 0]
        e = {"a_median": statistics.median(av) if av else None,
             "b_median": statistics.median(bv) if bv else None,
             "ratio_median": statistics.median(ratios) if ratios else None,
             "pairs": len(ratios)}
        if better is not None and ratios:
            e["b_better"] = sum(1 for r in ratios if (r > 1) == better and r != 1)
        s[key] = e
    return s


def table(name_a, name_b, all_binaries, pairs):
    out = ["bench/ab: A = %s, B = %s; %s\n" % (
        name_a, name_b, "every binary from its own build" if all_binaries
        else "only tern differs (sink, injector and load generator from B's build)")]
    workloads = list(pairs[0][0].keys())
    head = "%-10s" + " %9s" * len(FIGURES) + "\n"
    result = {}
    for w in workloads:
        out.append("\n%s: %d pair(s), the order alternating (A B, B A, ...)\n" % (w, len(pairs)))
        out.append(head % (("pair",) + tuple(label for _, label, _, _ in FIGURES)))
        for i, (a, b) in enumerate(pairs, 1):
            for side, figs in (("A", a.get(w, {})), ("B", b.get(w, {}))):
                out.append(head % (("%d %s" % (i, side),) + tuple(fmt(figs.get(k), f) for k, _, f, _ in FIGURES)))
        s = summary(pairs, w)
        for side in ("a", "b"):
            out.append(head % (("median " + side.upper(),) +
                               tuple(fmt(s[k][side + "_median"], f) for k, _, f, _ in FIGURES)))
        out.append(head % (("B/A",) + tuple(fmt(s[k]["ratio_median"], "%.3f") for k, _, _, _ in FIGURES)))
        out.append(head % (("B better",) + tuple(
            ("%d of %d" % (s[k]["b_better"], s[k]["pairs"])) if "b_better" in s[k] else "-"
            for k, _, _, _ in FIGURES)))
        result[w] = s
    out.append("B/A: the median of the pairs' ratios; B better: in how many pairs B's figure was the better one "
               "(higher msgs/s, lower us/msg, RSS and p99); eng/sink: the engine's us/msg over the sink's in the "
               "same run, steadier than either on a machine whose speed drifts (the sink is the same binary on "
               "both sides unless --all); x25519: the machine's speed around each run "
               "(bench/README.md), which should agree within a pair\n")
    return "".join(out), result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--all", default="0")
    ap.add_argument("--json")
    ap.add_argument("runs", nargs="+")
    args = ap.parse_args()
    pairs = pairs_of(load(args.runs))
    text, result = table(args.a, args.b, args.all == "1", pairs)
    sys.stdout.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"a": args.a, "b": args.b, "all_binaries": args.all == "1",
                       "pairs": [{"a": a, "b": b} for a, b in pairs], "summary": result}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
