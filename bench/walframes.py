"""What the SQLite writer's commits wrote to the WAL, by b-tree.

    python3 walframes.py SCENARIO=DIR ...

Each DIR (bench/run wal-frames) holds the server's file (pushtoken.db),
strace.txt (its pwrite64 calls, `strace -f -y -xx -s 8`) and committed.txt
(the batches and writes the writer committed while it was traced). Each WAL
frame starts with a 24-byte header naming its page and, on a commit's last
frame, the database size; the file's `dbstat` names the b-tree of each page.
Prints a Markdown table: per scenario, writes per commit, frames per commit
and per write, and each b-tree's frames per commit and per write.
"""

import collections
import re
import sqlite3
import sys

# pwrite64(FD<path>, "bytes"..., 24, offset): a frame header (-xx: every byte hex)
HEADER = re.compile(r'pwrite64\(\d+<((?:\\x[0-9a-f]{2})+)>, "((?:\\x[0-9a-f]{2})+)"(?:\.\.\.)?, 24, \d+\)')


def unhex(s):
    return bytes(int(x, 16) for x in s.split("\\x")[1:])


def frames_by_btree(d):
    """Commits traced, and the frames of each b-tree in them."""
    con = sqlite3.connect(f"file:{d}/pushtoken.db?mode=ro", uri=True)
    btree = {page: name for name, page in con.execute("SELECT name, pageno FROM dbstat")}
    commits, frames, pending = 0, collections.Counter(), collections.Counter()
    with open(f"{d}/strace.txt") as trace:
        for line in trace:
            m = HEADER.search(line)
            if not m or not unhex(m.group(1)).endswith(b"-wal"):
                continue
            h = unhex(m.group(2))
            page, size_after_commit = int.from_bytes(h[0:4], "big"), int.from_bytes(h[4:8], "big")
            pending[btree.get(page, "(freed since)")] += 1
            if size_after_commit:
                commits += 1
                frames.update(pending)
                pending.clear()
    return commits, frames


def main():
    print("| scenario | writes / commit | frames / commit | frames / write | b-tree | its frames / commit | its frames / write |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for arg in sys.argv[1:]:
        scenario, d = arg.split("=", 1)
        batches, writes = (int(x) for x in open(f"{d}/committed.txt").read().split())
        per_commit = writes / max(batches, 1)
        commits, frames = frames_by_btree(d)
        if not commits or not per_commit:
            print(f"| {scenario} | no commit traced | | | | | |")
            continue
        total = sum(frames.values()) / commits
        for i, (name, n) in enumerate(frames.most_common()):
            lead = f"| {scenario} | {per_commit:.1f} | {total:.1f} | {total / per_commit:.2f} " if i == 0 else "| | | | "
            print(f"{lead}| {name} | {n / commits:.2f} | {n / commits / per_commit:.2f} |")


if __name__ == "__main__":
    main()
