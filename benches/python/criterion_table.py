#!/usr/bin/env python3
"""Median [min-max] over repeated criterion runs, from their logs.

    for i in 1 2 3; do
        cargo bench -p picocache-benches --bench engine -- --noplot > /tmp/engine-$i.log 2>&1
    done
    python3 benches/python/criterion_table.py /tmp/engine-*.log

Each log contributes criterion's point estimate (the middle of the three
``time:`` figures) of every benchmark; the table gives, per benchmark, the
median over the logs with the minimum and maximum, and for throughput groups
(``put_batch*``) the entries per second that the median time means.
"""

from __future__ import annotations

import re
import statistics
import sys

UNITS = {"ps": 1e-12, "ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
NAME = re.compile(r"^([A-Za-z0-9_]+/[A-Za-z0-9_.-]+)")
TIME = re.compile(r"time:\s+\[([\d.]+) (\S+) ([\d.]+) (\S+) ([\d.]+) (\S+)\]")


def parse(path: str) -> dict:
    out, name = {}, None
    with open(path, errors="replace") as f:
        for line in f:
            m = NAME.match(line)
            if m:
                name = m.group(1)
            t = TIME.search(line)
            if t and name and name not in out:
                out[name] = float(t.group(3)) * UNITS[t.group(4)]
    return out


def fmt(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if s >= scale:
            v = s / scale
            return f"{v:,.0f} {unit}" if v >= 100 else f"{v:.3g} {unit}"
    return f"{s * 1e12:.0f} ps"


def main() -> None:
    runs = [parse(p) for p in sys.argv[1:]]
    names = []
    for r in runs:
        names += [n for n in r if n not in names]
    print(f"median [min-max] of criterion's estimate over {len(runs)} runs")
    print("| benchmark | median | min-max | per second (median) |")
    print("|---|---|---|---|")
    for n in names:
        xs = [r[n] for r in runs if n in r]
        med = statistics.median(xs)
        per = ""
        if n.startswith("put_batch1000"):
            per = f"{1000 / med:,.0f} entries/s"
        elif n.startswith("put_"):
            per = f"{1 / med:,.0f} puts/s"
        print(f"| {n} | {fmt(med)} | {fmt(min(xs))}-{fmt(max(xs))} | {per} |")


if __name__ == "__main__":
    main()
