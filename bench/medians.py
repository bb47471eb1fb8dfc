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


def get_alone_beside_login(rows, b):
    """GET alone at 32 conns measured just before and after GET beside a
    login flood (their mean), else the main table's GET at 32 conns."""
    near = [r["rps"] for r in rows if r.get("backend") == b
            and r.get("label") == "beside-login-alone" and r.get("scenario") == "get"]
    return statistics.mean(near) if near else rps(rows, backend=b, label="load", scenario="get", conns=32)


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
        out.append((f"{b}: GET beside a login flood / GET alone beside it", 0.8,
                    ratio(under, get_alone_beside_login(rows, b))))
        early = rps(rows, backend=b, label="load", scenario="get", conns=32)
        out.append((f"{b}: GET beside a login flood / GET alone of the main table (reported)", None,
                    ratio(under, early)))
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


# Every closed-loop figure of the runs, one table per backend: the median
# req/s over the runs, and the median of each run's own ratio to its
# ceiling (GET: the typed HTTP ceiling at the same connection count; PUT,
# POST, DELETE on PostgreSQL: pgbench at the same client count; login: Argon2
# on every core).
every = [load(path) for path in sys.argv[1:]]


def med(values):
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def ceiling_of(rows, backend, scenario, conns):
    if scenario == "get":
        return rps(rows, backend="ceiling", label="load", conns=conns)
    if scenario == "login":
        hashing = [r for r in rows if r.get("label") == "hashrate"]
        return max(hashing, key=lambda r: r["threads"])["rps"] if hashing else None
    if backend == "postgres":
        return rps(rows, backend="postgres", label="pgbench", conns=conns)
    return None


print("\n### Ceilings (medians over the runs)\n")
print("| ceiling | conns | req/s (median) | each run |")
print("|---|---:|---:|---|")
for label, kw in (("HTTP, typed rows", dict(backend="ceiling", label="load")),
                  ("HTTP, `json!` tree", dict(backend="ceiling-json", label="load")),
                  ("pgbench upsert", dict(backend="postgres", label="pgbench"))):
    for c in (1, 32, 256):
        values = [rps(rows, conns=c, **kw) for rows in every]
        if any(v is not None for v in values):
            print(f"| {label} | {c} | {show(med(values))} | {', '.join(show(v) for v in values)} |")
for t in sorted({r["threads"] for rows in every for r in rows if r.get("label") == "hashrate"}):
    values = [rps(rows, label="hashrate", threads=t) for rows in every]
    print(f"| Argon2id hashes, {t} thread(s) | — | {show(med(values))} | {', '.join(show(v) for v in values)} |")

for b in ("sqlite", "postgres"):
    if not any(find(rows, backend=b, label="load") for rows in every):
        continue
    print(f"\n### {b} (medians over the runs)\n")
    print("| scenario | conns | req/s | ratio to its ceiling | each run's ratio | p99 ms |")
    print("|---|---:|---:|---:|---|---:|")
    for s in ("get", "put", "post", "delete", "login"):
        for c in (1, 32, 256):
            hits = [find(rows, backend=b, label="load", scenario=s, conns=c) for rows in every]
            if not any(hits):
                continue
            ratios = [ratio(h and h["rps"], ceiling_of(rows, b, s, c)) for h, rows in zip(hits, every)]
            print(f"| {s} | {c} | {show(med([h and h['rps'] for h in hits]))} | {show(med(ratios))} | "
                  f"{', '.join(show(r) for r in ratios)} | {show(med([h and h['p99_ms'] for h in hits]))} |")
    for s in ("get", "put"):
        hits = [find(rows, backend=b, label="half-peak", scenario=s) for rows in every]
        if any(hits):
            p99s = [statistics.median([r["p99_ms"] for r in rows if r.get("backend") == b
                                        and r.get("label") == "half-peak" and r.get("scenario") == s])
                    for rows in every if find(rows, backend=b, label="half-peak", scenario=s)]
            print(f"| {s} paced at half its peak | {hits[0]['conns']} | {show(med([h and h['rps'] for h in hits]))} | — | "
                  f"each run's median p99: {', '.join(show(p) for p in p99s)} | {show(med(p99s))} |")
    hits = [find(rows, backend=b, label="under-login", scenario="get") for rows in every]
    if any(hits):
        alone = [get_alone_beside_login(rows, b) for rows in every]
        ratios = [ratio(h and h["rps"], a) for h, a in zip(hits, alone)]
        print(f"| get alone beside the login flood (mean of before and after) | 32 | {show(med(alone))} | — | — | — |")
        print(f"| get beside a login flood (to GET alone beside it) | 32 | {show(med([h and h['rps'] for h in hits]))} | "
              f"{show(med(ratios))} | {', '.join(show(r) for r in ratios)} | {show(med([h and h['p99_ms'] for h in hits]))} |")
