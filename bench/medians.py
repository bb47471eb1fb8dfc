#!/usr/bin/env python3
"""The targets of several main runs side by side, and their medians.

Usage: medians.py run-1.jsonl run-2.jsonl run-3.jsonl ...  (Markdown on stdout)

Each file is one `bench/run` main run (every ceiling measured in that run);
each figure is a ratio within its own run, and the median is taken over the
runs, so a minute of noise moves one column, not the verdict.
"""
import json
import statistics
import sys


def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def find(rows, **kw):
    hits = [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    return hits[-1] if hits else None


def rps(rows, **kw):
    r = find(rows, **kw)
    return r and r["rps"]


def ratio(a, b):
    return None if a is None or not b else a / b


# (label, target or None for "reported", figure of one run)
def figures(rows):
    ceiling = rps(rows, backend="ceiling", label="load", conns=32)
    pgbench = rps(rows, backend="postgres", label="pgbench", conns=32)
    # The login ceiling: Argon2 on every core, as the server hashes.
    hashing = [r for r in rows if r.get("label") == "hashrate"]
    hashes = max(hashing, key=lambda r: r["threads"])["rps"] if hashing else None
    out = []
    for b in ("sqlite", "postgres"):
        get = rps(rows, backend=b, label="load", scenario="get", conns=32)
        out.append((f"{b}: GET at 32 conns / typed ceiling", 0.5, ratio(get, ceiling)))
    for s in ("put", "post"):
        w = rps(rows, backend="postgres", label="load", scenario=s, conns=32)
        out.append((f"postgres: {s.upper()} at 32 conns / pgbench at 32 clients", 0.6, ratio(w, pgbench)))
    post = rps(rows, backend="sqlite", label="load", scenario="post", conns=32)
    put = rps(rows, backend="sqlite", label="load", scenario="put", conns=32)
    out.append(("sqlite: POST / PUT at 32 conns", 0.7, ratio(post, put)))
    for b in ("sqlite", "postgres"):
        under = rps(rows, backend=b, label="under-login", scenario="get")
        alone = rps(rows, backend=b, label="load", scenario="get", conns=32)
        out.append((f"{b}: GET beside a login flood / GET alone", 0.8, ratio(under, alone)))
    for b in ("sqlite", "postgres"):
        login = rps(rows, backend=b, label="load", scenario="login", conns=32)
        out.append((f"{b}: login at 32 conns / Argon2 on every core (reported)", None, ratio(login, hashes)))
    out.append(("typed ceiling at 32 conns, req/s", None, ceiling))
    out.append(("pgbench at 32 clients, tx/s", None, pgbench))
    for b in ("sqlite", "postgres"):
        for s in ("get", "put", "post"):
            out.append((f"{b}: {s.upper()} at 32 conns, req/s", None, rps(rows, backend=b, label="load", scenario=s, conns=32)))
    return out


def show(x):
    if x is None:
        return "—"
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


runs = [figures(load(path)) for path in sys.argv[1:]]
if not runs:
    sys.exit(__doc__)
commits = [(find(load(path), scenario="meta") or {}).get("commit", "?") for path in sys.argv[1:]]
print(f"Runs: {len(runs)} (commits {', '.join(commits)}); each figure is a ratio within its own run.\n")
print("| figure | " + " | ".join(f"run {i + 1}" for i in range(len(runs))) + " | median | target | met? |")
print("|---|" + "---:|" * len(runs) + "---:|---|---|")
for i, (label, target, _) in enumerate(runs[0]):
    values = [run[i][2] for run in runs]
    known = [v for v in values if v is not None]
    median = statistics.median(known) if known else None
    verdict = "—" if target is None or median is None else ("yes" if median >= target else "no")
    goal = "reported" if target is None else f"≥ {target}"
    print(f"| {label} | " + " | ".join(show(v) for v in values) + f" | {show(median)} | {goal} | {verdict} |")
