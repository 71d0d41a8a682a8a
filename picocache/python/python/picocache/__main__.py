"""``python -m picocache``: inspect a local store and remove the namespaces
old code left behind, for users who installed the wheel (which does not ship
the ``picocache`` command-line tool). The same commands, syntax and output as
that tool's ``stats`` and ``prune``::

    python -m picocache stats DIR       every namespace: entries, bytes, hits, misses,
                                        evictions, rejected (failed seal checks), last use
    python -m picocache prune DIR --unused-for DURATION [--dry-run]
                                        remove namespaces unused for DURATION (30d, 12h,
                                        90m, 3600s, 2w)

A namespace's last use is when a process last opened it, wrote to it or looked
a key up in it (lookups refresh it at most once a minute); ``stats`` shows it
as an age (``LAST USED``, e.g. ``3d``; ``unknown`` if never recorded) and in
``--json`` as ``last_used``, Unix seconds (``null`` if unknown). Every edit of
a cached function names a new namespace (the name carries a digest of the
code), so the old ones stop being used: ``prune`` removes them, entries and
all; the store's compaction then reclaims their space. ``stats`` opens the
store for inspection only: it is not a use, and no file changes.

Exit status: 0 success, 2 an error (no store at DIR, a damaged store, a bad
duration, usage). ``--json`` prints one JSON document instead of tables.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, List, Optional, Sequence

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


def parse_duration(text: str) -> int:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` as seconds (> 0)."""
    t = text.strip()
    split = next((i for i, c in enumerate(t) if not ("0" <= c <= "9")), len(t))
    num, unit = t[:split], t[split:]
    if not num:
        raise argparse.ArgumentTypeError(f"{_q(text)} is not a duration such as 30d, 12h, 90m or 3600s")
    if not unit:
        raise argparse.ArgumentTypeError(f"{_q(text)} needs a unit: s, m, h, d or w (e.g. 30d)")
    if unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"{_q(text)}: unknown unit {_q(unit)} (use s, m, h, d or w, e.g. 30d)")
    seconds = int(num) * _UNITS[unit]
    if seconds == 0:
        raise argparse.ArgumentTypeError(f"{_q(text)}: the duration must be longer than 0")
    if int(num) >= 2**64:  # what a u64 holds, as the Rust tool reads it
        raise argparse.ArgumentTypeError(f"{_q(text)} is not a duration such as 30d, 12h, 90m or 3600s")
    if seconds >= 2**64:
        raise argparse.ArgumentTypeError(f"{_q(text)} is too long")
    return seconds


def duration_text(seconds: int) -> str:
    """``2592000`` -> ``30d``, as the user would write it."""
    for unit, n in (("w", 7 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{seconds // n}{unit}"
    return f"{seconds}s"


def age(t: Optional[int], now: int) -> str:
    """How long ago ``t`` (Unix seconds) was: ``45s``, ``12m``, ``5h``,
    ``3d``; ``unknown`` for None."""
    if t is None:
        return "unknown"
    d = max(now - t, 0)
    if d < 60:
        return f"{d}s"
    if d < 3600:
        return f"{d // 60}m"
    if d < 86_400:
        return f"{d // 3600}h"
    return f"{d // 86_400}d"


def human_bytes(n: int) -> str:
    """``1536`` -> ``1.5 KiB``."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    v, u = float(n), 0
    while v >= 1024.0 and u + 1 < len(units):
        v /= 1024.0
        u += 1
    return f"{n} B" if u == 0 else f"{v:.1f} {units[u]}"


def _limit(v: Optional[int]) -> str:
    return "-" if v is None else str(v)


def _ttl(v: Optional[float]) -> str:
    """Seconds as Rust prints a Duration: ``60s``, ``1.5s``, ``500ms``."""
    if v is None:
        return "-"
    for unit, scale in (("s", 1), ("ms", 1e3), ("µs", 1e6)):
        if v * scale >= 1:
            break
    else:
        unit, scale = "ns", 1e9
    return f"{v * scale:.9f}".rstrip("0").rstrip(".") + unit


def _q(text: str) -> str:
    """``text`` quoted as the Rust tool quotes it (``"30x"``)."""
    return json.dumps(text, ensure_ascii=False)


def print_table(header: Sequence[str], rows: List[List[str]]) -> None:
    """Rows under a header: the first column left-aligned, the others
    right-aligned."""
    width = [len(h) for h in header]
    for r in rows:
        width = [max(w, len(c)) for w, c in zip(width, r)]
    for cells in [list(header)] + rows:
        line = "".join(f"{c:<{w}}" if i == 0 else f"  {c:>{w}}"
                       for i, (c, w) in enumerate(zip(cells, width)))
        print(line.rstrip())


def stats(path: str, as_json: bool) -> int:
    from . import _native

    s = _native.inspect_local(path)
    if as_json:
        ns = [{"name": n["name"], "entries": n["entries"], "bytes": n["bytes"], "hits": n["hits"],
               "misses": n["misses"], "evictions": n["evictions"], "rejected": n["rejected"],
               "maxsize": n["maxsize"], "max_bytes": n["max_bytes"],
               "ttl_ms": None if n["ttl"] is None else round(n["ttl"] * 1000), "last_used": n["last_used"]}
              for n in s["namespaces"]]
        doc = {"path": path, **{k: s[k] for k in ("segments", "log_bytes", "dead_bytes", "index_bytes",
                                                    "disk_bytes", "entries", "compactions")},
               "namespaces": ns}
        print(json.dumps(doc, indent=2, sort_keys=True))
        return 0
    dead_pct = s["dead_bytes"] * 100.0 / s["log_bytes"] if s["log_bytes"] else 0.0
    print(f"store      {path}")
    print(f"log        {human_bytes(s['log_bytes'])} in {s['segments']} segment(s); "
          f"dead space {human_bytes(s['dead_bytes'])} ({dead_pct:.0f}%)")
    print(f"index      {human_bytes(s['index_bytes'])}; on disk {human_bytes(s['disk_bytes'])}")
    print(f"entries    {s['entries']} in {len(s['namespaces'])} namespace(s); {s['compactions']} compaction(s)")
    print()
    now = int(time.time())
    rows = [[n["name"], str(n["entries"]), human_bytes(n["bytes"]), str(n["hits"]), str(n["misses"]),
             str(n["evictions"]), str(n["rejected"]), _limit(n["maxsize"]), _ttl(n["ttl"]),
             age(n["last_used"], now)]
            for n in s["namespaces"]]
    if not rows:
        print("(no namespaces)")
    else:
        print_table(["NAMESPACE", "ENTRIES", "BYTES", "HITS", "MISSES", "EVICTIONS", "REJECTED", "MAXSIZE",
                     "TTL", "LAST USED"], rows)
    return 0


def prune(path: str, unused_for: int, dry_run: bool, as_json: bool) -> int:
    from . import _native

    # (Nothing was used more than 2**62 seconds ago: the same answer for
    # longer durations, which a float of seconds may not carry exactly.)
    found = _native.prune_local(path, min(unused_for, 2**62), dry_run=dry_run)
    if as_json:
        print(json.dumps({"path": path, "unused_for_secs": unused_for, "dry_run": dry_run,
                          "removed": found}, indent=2, sort_keys=True))
        return 0
    now = int(time.time())
    verb = "would remove" if dry_run else "removed"
    for n in found:
        print(f"{verb} {n['name']}: {n['entries']} entries, {human_bytes(n['bytes'])}, "
              f"last used {age(n['last_used'], now)} ago")
    span = duration_text(unused_for)
    if not found:
        print(f"no namespace of {path} unused for {span}")
    elif not dry_run:
        print(f"{len(found)} namespace(s) unused for {span} removed; the store's compaction reclaims their space")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m picocache",
                                description="Inspect and maintain a PicoCache local store.")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND", required=True)
    # --json after the command as well (default SUPPRESS: not reset there).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of tables")
    s = sub.add_parser("stats", parents=[common],
                       help="every namespace: entries, bytes, hits, misses, evictions, last use",
                       description="Every namespace with entries, bytes, hits, misses and evictions, its "
                                   "last use, and the store's log, dead space and index sizes.")
    s.add_argument("path", metavar="DIR", help="the store's directory")
    r = sub.add_parser("prune", parents=[common], help="remove namespaces unused for a given time",
                       description="Removes every namespace (its entries and its name) not used for a "
                                   "given time: opened, written or looked up by any process.")
    r.add_argument("path", metavar="DIR", help="the store's directory")
    r.add_argument("--unused-for", required=True, type=parse_duration, metavar="DURATION",
                   help="remove namespaces whose last use is longer ago than this: a number with a "
                        "unit, s, m, h, d or w (30d, 12h, 90m, 3600s)")
    r.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args: Any = parser().parse_args(argv)
    from . import _native

    try:
        if args.cmd == "stats":
            return stats(args.path, args.json)
        return prune(args.path, args.unused_for, args.dry_run, args.json)
    except _native.CacheError as e:
        print(f"picocache: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `python -m picocache stats DIR | head`: end quietly, as `head`
        # expects (stdout pointed at /dev/null: the flush at exit fails no more).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
