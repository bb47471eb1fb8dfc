#!/usr/bin/env python3
"""Turns bench/run's JSON lines into the Markdown report (stdout).

Usage: report.py results.jsonl [backend=explain.txt ...]

Modes: main (below), growth (empty vs bulk-loaded database), push (idle
push-socket connections' memory; notify throughput and delivery latency),
providers (notify throughput and delivery latency to APNs and FCM stand-ins,
and the connections the server opened to them), staleness (how long after a
change answered by one instance another on the same PostgreSQL database
shows it, per cache lifetime).

Ceilings (measured in the same run):
  - GET and login: the minimal axum handler serialising typed rows
    (`ceiling`) at the same connection count (throughput, p99 latency, peak
    RSS); the `json!` handler (`ceiling-json`) is shown beside it.
  - PUT and POST on PostgreSQL: pgbench running the same upsert at 1, 32
    and 256 clients (`pgbench`).
  - PUT, POST, DELETE: the raw single-connection upsert rate through sqlx on
    the same backend (`raw-upsert`, mode on-conflict = one INSERT … ON
    CONFLICT statement per commit; mode tx = the statements the server's PUT
    runs, shown beside it).
"""
import json
import statistics
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
explains = dict(a.split("=", 1) for a in sys.argv[2:])
meta = next((r for r in rows if r.get("scenario") == "meta"), {})


def find(**kw):
    hits = [r for r in rows if all(r.get(k) == v for k, v in kw.items())]
    return hits[-1] if hits else None


def hash_ceiling():
    """The login ceiling: Argon2 on the most threads measured (every core),
    as the server hashes on one thread a core."""
    hashing = [r for r in rows if r.get("label") == "hashrate"]
    return max(hashing, key=lambda r: r["threads"]) if hashing else None


def get_alone_beside_login(backend):
    """GET alone at 32 conns to compare GET beside a login flood with: the
    mean of the two measured just before and just after it, on the same
    database in the same minutes; runs before those existed fall back to
    the GET at 32 conns of the main table."""
    near = [r["rps"] for r in rows if r.get("backend") == backend
            and r.get("label") == "beside-login-alone" and r.get("scenario") == "get"]
    if near:
        return statistics.mean(near), "GET alone just before and after"
    early = find(backend=backend, label="load", scenario="get", conns=32)
    return (early["rps"], "GET alone") if early else (None, None)


def half_peak(backend, scenario):
    """The paced runs of a scenario: the one with the median p99, with the
    count and every p99 (ms) attached."""
    runs = [r for r in rows if r.get("backend") == backend and r.get("label") == "half-peak"
            and r.get("scenario") == scenario]
    if not runs:
        return None
    runs.sort(key=lambda r: r["p99_ms"])
    mid = dict(runs[(len(runs) - 1) // 2])
    mid["rounds"] = len(runs)
    mid["each"] = ", ".join(f"{r['p99_ms']:.2f}" for r in runs)
    mid["errors"] = sum(r["errors"] for r in runs)
    mid["connect"] = max(r.get("connect_max_ms", 0) for r in runs)
    return mid


def f(x, nd=0):
    return "—" if x is None else f"{x:,.{nd}f}"


def ratio(a, b):
    return None if a is None or not b else a / b


def mib(r):
    return None if r is None or "peak_rss_kib" not in r else r["peak_rss_kib"] / 1024


out = []
p = out.append
p(f"# pushtoken benchmark ({meta.get('mode', 'main')} run{', QUICK' if meta.get('quick') else ''})\n")
p(f"- machine: {meta.get('machine')}; PostgreSQL {meta.get('postgres')}; sqlite3 CLI {meta.get('sqlite')}")
if meta.get("mode") == "push":
    p(f"- {meta.get('idle_conns')} idle connections ({meta.get('push_concurrency')} handshakes at a time), "
      f"{meta.get('idle_rounds')} rounds per backend on fresh servers; notify: {meta.get('push_users')} users with one socket each, "
      f"{meta.get('notifiers')} notifiers, {meta.get('push_duration')} s per measurement, {meta.get('push_rounds')} rounds; "
      f"load generator on {meta.get('loadgen_threads')} thread(s) on the same machine; load average at the start "
      f"{meta.get('load')}; commit {meta.get('commit')}"
      + (f"; server environment `{meta['server_env']}`" if meta.get("server_env") else "")
      + (f"; PostgreSQL databases `SET {meta['pg_set']}`" if meta.get("pg_set") else ""))
elif meta.get("mode") == "providers":
    p(f"- providers {meta.get('providers')}: {meta.get('provider_users')} users each with one ring row, "
      f"{meta.get('notifiers')} notifiers, {meta.get('provider_duration')} s per measurement, "
      f"{meta.get('provider_rounds')} rounds; load generator and stand-ins in one process on "
      f"{meta.get('loadgen_threads')} thread(s) on the same machine; load average at the start {meta.get('load')}; "
      f"commit {meta.get('commit')}"
      + (f"; server environment `{meta['server_env']}`" if meta.get("server_env") else ""))
elif meta.get("mode") == "staleness":
    p(f"- two instances on one PostgreSQL database, cache lifetimes {meta.get('lifetimes')}, "
      f"{meta.get('staleness_rounds')} rounds each (fresh database and instances), {meta.get('staleness_changes')} "
      f"changes per round, B's GETs "
      + (f"{meta['poll_us']} µs apart" if meta.get("poll_us") else "one right after another")
      + "; the measuring client on one thread on the same machine; load average at the start "
      f"{meta.get('load')}; commit {meta.get('commit')}"
      + (f"; server environment `{meta['server_env']}`" if meta.get("server_env") else ""))
else:
    p(f"- {meta.get('duration')} s per measurement, load spread over {meta.get('users')} users, "
      f"load generator on {meta.get('loadgen_threads')} thread(s) on the same machine; commit {meta.get('commit')}")
p("")

backends = [b for b in ("sqlite", "postgres") if any(r.get("backend") == b for r in rows)]
conns = sorted({r["conns"] for r in rows if r.get("label") == "load"})

if meta.get("mode", "main") == "main":
    p("## Ceilings\n")
    p("| ceiling | conns | req/s | p50 ms | p99 ms | peak RSS MiB |")
    p("|---|---:|---:|---:|---:|---:|")
    for name, label in (("ceiling", "axum handler, typed rows (the ceiling), no auth/DB"),
                        ("ceiling-json", "axum handler, `json!` tree, no auth/DB")):
        for c in conns:
            r = find(backend=name, label="load", conns=c)
            if r:
                p(f"| {label} | {c} | {f(r['rps'])} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} | {f(mib(r), 1)} |")
        r = find(backend=name, label="half-peak")
        if r:
            p(f"| same, paced at half its peak ({f(r['target_rate'])}/s) | 32 | {f(r['rps'])} | {f(r['p50_ms'], 3)} | {f(r['p99_ms'], 3)} | {f(mib(r), 1)} |")
    for r in sorted((r for r in rows if r.get("label") == "hashrate"), key=lambda r: r["threads"]):
        p(f"| Argon2id hashes with the server's parameters (the login ceiling), {r['threads']} thread(s) | — | {f(r['rps'], 1)} | — | — | — |")
    for r in sorted((r for r in rows if r.get("label") == "pgbench"), key=lambda r: r["conns"]):
        asked = "" if r["clients"] == r["conns"] else f" ({r['conns']} asked, capped by max_connections)"
        p(f"| pgbench, the same upsert, {r['clients']} clients{asked} | {r['clients']} | {f(r['rps'])} | — | — | — |")
    for b in backends:
        for mode in ("on-conflict", "tx"):
            r = find(backend=b, label="raw", scenario=f"raw-upsert-{mode}")
            if r:
                p(f"| raw upsert {b} ({mode}), sqlx, 1 conn, no HTTP | 1 | {f(r['rps'])} | — | — | — |")
    p("")

    for b in backends:
        raw = find(backend=b, label="raw", scenario="raw-upsert-on-conflict")
        raw_tx = find(backend=b, label="raw", scenario="raw-upsert-tx")
        raw_rps = raw and raw["rps"]
        raw_tx_rps = raw_tx and raw_tx["rps"]
        p(f"## {b}\n")
        p("Ratios: GET to the HTTP ceiling (typed rows) at the same connection count; "
          "login to the Argon2 hash rate on every core (the server hashes on one low-priority thread a core); "
          "PUT/POST/DELETE to the raw single-connection upsert rate (on-conflict; tx in brackets), "
          "and on PostgreSQL to pgbench's rate at the same client count. "
          "p99 ratio: to the HTTP ceiling's p99 at the same connection count. "
          "RSS ratio: to the ceiling's peak RSS at the same connection count.\n")
        p("| scenario | conns | req/s | ratio | p50 ms | p99 ms | p99 ratio | errors | peak RSS MiB | RSS ratio |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for s in ("get", "put", "post", "delete", "login"):
            for c in conns:
                r = find(backend=b, label="load", scenario=s, conns=c)
                if not r:
                    continue
                ceil = find(backend="ceiling", label="load", conns=c)
                pgb = find(backend="postgres", label="pgbench", conns=c)
                if s == "login":
                    hc = hash_ceiling()
                    rat = f"{f(ratio(r['rps'], hc and hc['rps']), 2)} of hashing on {hc and hc['threads']} threads"
                elif s == "get":
                    rat = f(ratio(r["rps"], ceil and ceil["rps"]), 3)
                else:
                    rat = f"{f(ratio(r['rps'], raw_rps), 2)} ({f(ratio(r['rps'], raw_tx_rps), 2)})"
                    if b == "postgres" and pgb:
                        rat += f"; {f(ratio(r['rps'], pgb['rps']), 2)} of pgbench"
                p(f"| {s} | {c} | {f(r['rps'])} | {rat} | {f(r['p50_ms'], 2)} | {f(r['p99_ms'], 2)} | "
                  f"{f(ratio(r['p99_ms'], ceil and ceil['p99_ms']), 1)} | {r['errors']} | {f(mib(r), 1)} | "
                  f"{f(ratio(mib(r), mib(ceil)), 1)} |")
        for s in ("get", "put"):
            r = half_peak(b, s)
            if r:
                ceil = find(backend="ceiling", label="half-peak")
                p(f"| {s} paced at half its peak ({f(r['target_rate'])}/s; median p99 of {r['rounds']}: {r['each']}; connections opened first, slowest connect {r['connect']:.1f} ms) | {r['conns']} | {f(r['rps'])} | — | "
                  f"{f(r['p50_ms'], 2)} | {f(r['p99_ms'], 2)} | {f(ratio(r['p99_ms'], ceil and ceil['p99_ms']), 1)} | "
                  f"{r['errors']} | {f(mib(r), 1)} | — |")
        for r in (r for r in rows if r.get("backend") == b and r.get("label") == "beside-login-alone"):
            p(f"| get alone, just before or after the next row | 32 | {f(r['rps'])} | — | "
              f"{f(r['p50_ms'], 2)} | {f(r['p99_ms'], 2)} | — | {r['errors']} | {f(mib(r), 1)} | — |")
        g = find(backend=b, label="under-login", scenario="get")
        l = find(backend=b, label="under-login", scenario="login")
        alone, what = get_alone_beside_login(b)
        if g and alone:
            p(f"| get while login runs at 32 conns | 32 | {f(g['rps'])} | {f(ratio(g['rps'], alone), 3)} of {what} | "
              f"{f(g['p50_ms'], 2)} | {f(g['p99_ms'], 2)} | — | {g['errors']} | {f(mib(g), 1)} | — |")
        if l:
            p(f"| login beside it | 32 | {f(l['rps'])} | — | {f(l['p50_ms'], 2)} | {f(l['p99_ms'], 2)} | — | {l['errors']} | — | — |")
        p("")

    p("## Targets\n")
    p("| target | measured | met? |")
    p("|---|---|---|")
    for b in backends:
        raw = find(backend=b, label="raw", scenario="raw-upsert-on-conflict")
        g32 = find(backend=b, label="load", scenario="get", conns=32)
        c32 = find(backend="ceiling", label="load", conns=32)
        rg = ratio(g32 and g32["rps"], c32 and c32["rps"])
        if rg is not None:
            p(f"| {b}: GET at 32 conns ≥ 0.5 × the typed ceiling | {rg:.3f} | {'yes' if rg >= 0.5 else 'no'} |")
        pgb32 = find(backend="postgres", label="pgbench", conns=32)
        if b == "postgres" and pgb32:
            for s in ("put", "post"):
                w = find(backend=b, label="load", scenario=s, conns=32)
                rw = ratio(w and w["rps"], pgb32["rps"])
                if rw is not None:
                    p(f"| postgres: {s.upper()} at 32 conns ≥ 0.6 × pgbench at 32 clients | {rw:.2f} ({w['rps']:,.0f} / {pgb32['rps']:,.0f}) | {'yes' if rw >= 0.6 else 'no'} |")
        if b == "sqlite":
            po = find(backend=b, label="load", scenario="post", conns=32)
            pu = find(backend=b, label="load", scenario="put", conns=32)
            rpp = ratio(po and po["rps"], pu and pu["rps"])
            if rpp is not None:
                p(f"| sqlite: POST at 32 conns ≥ 0.7 × PUT at 32 conns | {rpp:.2f} | {'yes' if rpp >= 0.7 else 'no'} |")
        p32 = find(backend=b, label="load", scenario="put", conns=32)
        rp = ratio(p32 and p32["rps"], raw and raw["rps"])
        if rp is not None:
            p(f"| {b}: PUT at 32 conns ≥ 2 × raw 1-conn upsert | {rp:.2f} | {'yes' if rp >= 2 else 'no'} |")
        for s in ("get", "put"):
            h = half_peak(b, s)
            if h:
                ok = h["p99_ms"] < 5 and h["errors"] == 0
                p(f"| {b}: {s} p99 at half peak < 5 ms | {h['p99_ms']:.2f} ms (median of {h['rounds']}: {h['each']}) at {h['rps']:,.0f}/s over {h['conns']} conns | {'yes' if ok else 'no'} |")
        at256 = [r for r in rows if r.get("backend") == b and r.get("conns") == 256 and "peak_rss_kib" in r]
        if at256:
            worst = max(at256, key=lambda r: r["peak_rss_kib"])
            m = worst["peak_rss_kib"] / 1024
            p(f"| {b}: server peak RSS < 64 MiB at 256 conns | {m:.1f} MiB (worst: {worst['scenario']}) | {'yes' if m < 64 else 'no'} |")
        g = find(backend=b, label="under-login", scenario="get")
        alone, what = get_alone_beside_login(b)
        if g and alone:
            rga = g['rps'] / alone
            p(f"| {b}: GET under a login flood ≥ 0.8 × {what} (32 conns) | {rga:.3f}, p99 {g['p99_ms']:.2f} ms | {'yes' if rga >= 0.8 else 'no'} |")
        lg = find(backend=b, label="load", scenario="login", conns=32)
        hc = hash_ceiling()
        if lg and hc:
            p(f"| {b}: login at 32 conns against the Argon2 rate on {hc['threads']} threads (reported) | {lg['rps']:,.1f} / {hc['rps']:,.1f} = {lg['rps'] / hc['rps']:.2f} | — |")
    p("")
elif meta.get("mode") == "push":
    med = statistics.median
    kib = lambda b: b / 1024

    def each(runs, key, fmt="{:.1f}", scale=lambda x: x):
        return ", ".join(fmt.format(scale(r[key])) for r in runs)

    idle_backends = [b for b in ("sqlite", "postgres") if any(
        r.get("backend") == b and r.get("scenario") == "idle" for r in rows)]
    if idle_backends:
        p("## Idle push-socket connections\n")
        p("Each round: a fresh server and database; N connections opened (TCP, TLS, register, token) and held "
          "without traffic. RSS is the server's VmRSS (/proc/PID/status): its heap, stacks and mapped pages, "
          "not the kernel's socket structures and buffers. The kernel's TCP buffer pages (/proc/net/sockstat: "
          "system-wide, both ends of every loopback connection) are shown apart: an idle connection has nothing "
          "queued, so they stay flat. Medians of the rounds; every round in brackets.\n")
        p("| backend | conns held | RSS before MiB | RSS after MiB | per connection KiB | marginal KiB (last 90%) | anon per conn KiB | "
          "kernel TCP buffer pages, before → after | RSS after close MiB | opens/s | open p99 ms |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for b in idle_backends:
            runs = [r for r in rows if r.get("backend") == b and r.get("scenario") == "idle"]
            p(f"| {b} | {med([r['after']['held'] for r in runs]):,.0f} of {runs[0]['conns']:,} | "
              f"{med([r['before']['rss_kib'] / 1024 for r in runs]):.1f} | {med([r['after']['rss_kib'] / 1024 for r in runs]):.1f} | "
              f"**{kib(med([r['per_conn_bytes'] for r in runs])):.1f}** ({each(runs, 'per_conn_bytes', scale=kib)}) | "
              f"{kib(med([r['marginal_per_conn_bytes'] for r in runs])):.1f} ({each(runs, 'marginal_per_conn_bytes', scale=kib)}) | "
              f"{kib(med([r['per_conn_anon_bytes'] for r in runs])):.1f} | "
              f"{med([r['before']['tcp_mem_pages'] for r in runs]):,.0f} → {med([r['after']['tcp_mem_pages'] for r in runs]):,.0f} | "
              f"{med([r['closed']['rss_kib'] / 1024 for r in runs]):.1f} | "
              f"{med([r['opens_per_sec'] for r in runs]):,.0f} | {med([r['open_p99_ms'] for r in runs]):.1f} |")
        p("")

    def disk(runs):
        """The disk during the runs: fdatasync p99 and max (medians), and
        the calls over 20 ms (all runs)."""
        if not any("fsync_count" in r and r["fsync_count"] for r in runs):
            return "—"
        return (f"{med([r['fsync_p99_ms'] for r in runs]):.1f} / {med([r['fsync_max_ms'] for r in runs]):.0f} / "
                f"{sum(r['fsync_over_20ms'] for r in runs)} of {sum(r['fsync_count'] for r in runs)}")

    configs = [c for c in ("sqlite", "postgres", "postgres-2") if any(
        r.get("backend") == c and r.get("scenario") == "notify" for r in rows)]
    names = {"sqlite": "SQLite", "postgres": "PostgreSQL", "postgres-2": "PostgreSQL, two instances (sockets on A, notifies to B)"}
    if configs:
        p("## Notify: throughput and delivery latency\n")
        p("Delivery latency: from just before `POST /v1/api/notify` is written to when the event frame with that "
          "`seq` has been read on the user's socket; the answer is the notify's own 202. Closed loop to find the peak, then paced (open loop) at half "
          "the median peak. Medians of the rounds; every round in brackets.\n")
        p("Every event is committed to the database before its frame is sent, so the last column shows the disk "
          "during the same seconds: a probe thread in the load generator writes 4 KiB and calls fdatasync every "
          "10 ms on the disk under both databases (p99 / max in ms, medians of the rounds; calls over 20 ms, all rounds).\n")
        p("| configuration | run | notifies/s | delivery p50 ms | delivery p99 ms | delivery max ms | answer p50 / p99 ms | lost | errors | disk fdatasync p99 / max ms / over 20 ms |")
        p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in configs:
            for label, what in (("peak", "closed loop"), ("half-peak", "paced at half the peak")):
                runs = [r for r in rows if r.get("backend") == c and r.get("scenario") == "notify" and r.get("label") == label]
                if not runs:
                    continue
                rate = f" ({runs[0]['target_rate']:,.0f}/s)" if label == "half-peak" else ""
                p(f"| {names[c]} | {what}{rate}, {runs[0]['notifiers']} notifiers, {runs[0]['users']} sockets | "
                  f"{med([r['rps'] for r in runs]):,.0f} ({each(runs, 'rps', '{:,.0f}')}) | "
                  f"{med([r['p50_ms'] for r in runs]):.2f} ({each(runs, 'p50_ms', '{:.2f}')}) | "
                  f"{med([r['p99_ms'] for r in runs]):.2f} ({each(runs, 'p99_ms', '{:.2f}')}) | "
                  f"{med([r['max_ms'] for r in runs]):.1f} ({each(runs, 'max_ms', '{:.1f}')}) | "
                  f"{med([r['answer_p50_ms'] for r in runs]):.2f} / {med([r['answer_p99_ms'] for r in runs]):.2f} | "
                  f"{sum(r['lost'] for r in runs)} | {sum(r['errors'] + r['not_delivered'] + r['strays'] + r['socket_failures'] for r in runs)} | "
                  f"{disk(runs)} |")
        p("")

    p("## Targets\n")
    p("| target | measured | met? |")
    p("|---|---|---|")
    for b in idle_backends:
        runs = [r for r in rows if r.get("backend") == b and r.get("scenario") == "idle"]
        per = [kib(r["per_conn_bytes"]) for r in runs]
        held = all(x <= 32 for x in per)
        some = any(x <= 32 for x in per)
        p(f"| {b}: ≤ 32 KiB of server RSS per idle connection | median {med(per):.1f} KiB ({', '.join(f'{x:.1f}' for x in per)}) | "
          f"{'yes' if held else ('in some rounds' if some else 'no')} |")
    for c in configs:
        runs = [r for r in rows if r.get("backend") == c and r.get("scenario") == "notify" and r.get("label") == "half-peak"]
        if not runs:
            continue
        p99 = [r["p99_ms"] for r in runs]
        clean = all(r["lost"] == 0 and r["errors"] == 0 for r in runs)
        verdict = "yes" if all(x < 20 for x in p99) else ("in some rounds" if any(x < 20 for x in p99) else "no")
        if not clean:
            verdict += " (events lost or refused: see above)"
        p(f"| {names[c]}: delivery p99 < 20 ms at half the peak | median {med(p99):.2f} ms ({', '.join(f'{x:.2f}' for x in p99)}) "
          f"at {med([r['rps'] for r in runs]):,.0f}/s | {verdict} |")
    p("")
elif meta.get("mode") == "providers":
    med = statistics.median

    def each(runs, key, fmt="{:.1f}"):
        return ", ".join(fmt.format(r[key]) if r.get(key) is not None else "—" for r in runs)

    def medof(runs, key):
        xs = [r[key] for r in runs if r.get(key) is not None]
        return med(xs) if xs else None

    names = {"apns": "APNs", "fcm": "FCM"}
    runs_all = [r for r in rows if r.get("scenario") == "provider-notify"]
    pairs = []
    for b in ("sqlite", "postgres"):
        for prov in ("apns", "fcm"):
            if any(r["backend"] == b and r["provider"] == prov for r in runs_all):
                pairs.append((b, prov))
    p("## Notify to a provider: throughput and delivery latency\n")
    p("Delivery latency: from just before `POST /v1/api/notify` is written to when the stand-in has read the push "
      "request carrying that event's `seq`; the answer is the notify's own 202, which waits for the provider's verdict. "
      "Closed loop to find the peak, then paced (open loop) at half the median peak. Medians of the rounds; every round "
      "in brackets. CPU: milliseconds of CPU per notify, of the server and of the bench process (notifiers and "
      "stand-ins), medians.\n")
    p("| backend | provider | run | notifies/s | pushes/s at the stand-in | delivery p50 ms | delivery p99 ms | delivery max ms | "
      "answer p50 / p99 ms | lost | errors | CPU ms per notify, server / bench |")
    p("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for b, prov in pairs:
        for label, what in (("peak", "closed loop"), ("half-peak", "paced at half the peak")):
            runs = [r for r in runs_all if r["backend"] == b and r["provider"] == prov and r["label"] == label]
            if not runs:
                continue
            rate = f" ({runs[0]['target_rate']:,.0f}/s)" if label == "half-peak" else ""
            cpu_s, cpu_b = medof(runs, "server_cpu_ms_per_notify"), medof(runs, "bench_cpu_ms_per_notify")
            p(f"| {b} | {names[prov]} | {what}{rate}, {runs[0]['notifiers']} notifiers, {runs[0]['users']} users | "
              f"{med([r['rps'] for r in runs]):,.0f} ({each(runs, 'rps', '{:,.0f}')}) | "
              f"{med([r['pushes_per_sec'] for r in runs]):,.0f} | "
              f"{med([r['p50_ms'] for r in runs]):.2f} ({each(runs, 'p50_ms', '{:.2f}')}) | "
              f"{med([r['p99_ms'] for r in runs]):.2f} ({each(runs, 'p99_ms', '{:.2f}')}) | "
              f"{med([r['max_ms'] for r in runs]):.1f} ({each(runs, 'max_ms', '{:.1f}')}) | "
              f"{med([r['answer_p50_ms'] for r in runs]):.2f} / {med([r['answer_p99_ms'] for r in runs]):.2f} | "
              f"{sum(r['lost'] for r in runs)} | "
              f"{sum(r['errors'] + r['not_sent'] + r['duplicates'] + r['unknown'] for r in runs)} | "
              f"{'—' if cpu_s is None else f'{cpu_s:.2f}'} / {'—' if cpu_b is None else f'{cpu_b:.2f}'} |")
    p("")
    p("## Connections the server opened to the stand-ins\n")
    p("Per run: TCP connections accepted during it, and those that carried its pushes (with the pushes per such "
      "connection and the most on one). Each run's figures in run order (closed-loop rounds, then paced).\n")
    p("| backend | provider | opened during each run | carrying pushes in each run | pushes per carrying connection | most on one |")
    p("|---|---|---|---|---|---|")
    for b, prov in pairs:
        runs = [r for r in runs_all if r["backend"] == b and r["provider"] == prov]
        p(f"| {b} | {names[prov]} | {each(runs, 'conns_opened', '{:d}')} | {each(runs, 'conns_carrying', '{:d}')} | "
          f"{each(runs, 'pushes_per_conn', '{:,.0f}')} | {each(runs, 'most_on_one_conn', '{:,d}')} |")
    p("")
    p("At the end of each provider's runs, per stand-in host (since the server started):\n")
    p("| backend | host | connections accepted | negotiated h2 | TLS failures | most open at once | open at the end | requests | refused |")
    p("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for b, prov in pairs:
        last = [r for r in runs_all if r["backend"] == b and r["provider"] == prov][-1]
        for host, h in last["hosts"].items():
            p(f"| {b} | {host} | {h['opened_total']} | {h['h2_total']} | {h['tls_failures_total']} | {h['max_open']} | "
              f"{h['open_at_end']} | {h['requests_total']:,} | {h['refused_total']} |")
    p("")
    loads = [r["load"] for r in runs_all if r.get("load") is not None]
    if loads:
        shares = ", ".join(f"{r['bench_cpu_share']:.2f}" for r in runs_all if r.get("bench_cpu_share") is not None)
        p(f"Load average (1 min) at the end of the runs: {min(loads):.2f}–{max(loads):.2f}. "
          f"Bench process CPU share (1.0 = one core), each run in order: {shares}.\n")
elif meta.get("mode") == "staleness":
    med = statistics.median
    runs_all = [r for r in rows if r.get("scenario") == "staleness"]
    lifetimes = []
    for r in runs_all:
        if r["lifetime"] not in lifetimes:
            lifetimes.append(r["lifetime"])
    p("## Staleness across instances\n")
    p("Each change: `PUT /v1/api/user/token/1` through instance A with a new push token, then `GET "
      "/v1/api/user/token` through instance B, one after another on one keep-alive connection, until an answer "
      "holds it. Staleness: from A's answer read to the first B answer holding the change read (one GET round "
      "trip included; its p50 is shown). Before each change, one GET on B, which must still show the last change "
      "(else *went back*), so that B holds the row list freshly read. *Unseen*: not shown within 5 s. "
      "*Stale after the lifetime*: changes of which B answered without them to a GET sent more than the lifetime "
      "after A's answer. With a lifetime of 60 s only the `NOTIFY` path brings a change across within the 5 s.\n")
    for lt in lifetimes:
        runs = [r for r in runs_all if r["lifetime"] == lt]
        p(f"### Cache lifetime {lt}\n")
        p("| round | changes seen | p50 ms | p90 ms | p99 ms | max ms | mean ms | GET on B p50 ms | GETs per change | "
          "unseen | stale after the lifetime | went back | errors |")
        p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in runs:
            p(f"| {r.get('round', '—')} | {r['count']:,} of {r['changes']:,} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['mean_ms']:.2f} | {r['get_p50_ms']:.3f} | "
              f"{r['polls_per_change']:.1f} | {r['unseen']} | {r['stale_after_lifetime']} | {r['went_back']} | {r['errors']} |")
        p(f"| **median** | — | **{med([r['p50_ms'] for r in runs]):.2f}** | {med([r['p90_ms'] for r in runs]):.2f} | "
          f"**{med([r['p99_ms'] for r in runs]):.2f}** | **{med([r['max_ms'] for r in runs]):.2f}** | "
          f"{med([r['mean_ms'] for r in runs]):.2f} | {med([r['get_p50_ms'] for r in runs]):.3f} | "
          f"{med([r['polls_per_change'] for r in runs]):.1f} | {sum(r['unseen'] for r in runs)} | "
          f"{sum(r['stale_after_lifetime'] for r in runs)} | {sum(r['went_back'] for r in runs)} | "
          f"{sum(r['errors'] for r in runs)} |")
        p("")
else:
    p("## Growth: almost empty vs bulk-loaded database, 32 connections\n")
    p("Medians over the rounds (empty and large alternate); the last column lists each round's large / empty.\n")
    p("| backend | scenario | empty req/s | large req/s | large / empty | empty p99 ms | large p99 ms | within 20%? | rounds |")
    p("|---|---|---:|---:|---:|---:|---:|---|---|")
    for b in backends:
        for s in ("get", "put"):
            es = [r for r in rows if r.get("backend") == b and r.get("label") == "growth-empty" and r.get("scenario") == s]
            ls = [r for r in rows if r.get("backend") == b and r.get("label") == "growth-large" and r.get("scenario") == s]
            if es and ls:
                med = statistics.median
                e_rps, l_rps = med([r["rps"] for r in es]), med([r["rps"] for r in ls])
                r = l_rps / e_rps
                each = ", ".join(f"{l['rps'] / e['rps']:.2f}" for e, l in zip(es, ls))
                p(f"| {b} | {s} | {f(e_rps)} | {f(l_rps)} | {r:.3f} | {med([x['p99_ms'] for x in es]):.2f} | "
                  f"{med([x['p99_ms'] for x in ls]):.2f} | {'yes' if r >= 0.8 else 'no'} | {each} |")
    p("")
    for b, path in explains.items():
        p(f"### Query plans on the large database ({b})\n")
        p("```")
        p(open(path).read().rstrip())
        p("```\n")

print("\n".join(out))
