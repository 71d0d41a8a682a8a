"""Adversarial tests of session 25 (run against a frozen copy of main at
061b6c7): many writer processes on one LocalCache, processes stopped or
killed while they hold a lease or the store's writer lock, signals during
stores, hostile truncation of a store's files under a running process, odd
user code and arguments.

Tests marked ``xfail(strict=True, reason="BUG: ...")`` show a bug as this
round found it (what happens, how often, severity, a suggested fix): they
fail until it is fixed; a fixed one loses its mark (its docstring still
says "BUG" and what happened) and a comment names the fix. The others ("Held: ...") are regression tests of
cases that held. Found: SQLiteCache on a database the process also opens
with Python's sqlite3 corrupts it (two SQLite copies in one process); a
LocalCache holder killed while a forked child lives keeps its lease and
writer lock; an SQLite lease of a zombie is waited for; a late
faulthandler / Python SIGBUS handler shadows the SIGBUS guard; LocalCache's
fixed 3 s writer-lock wait (strict raises under load; 6 s per miss behind a
stopped writer); SQLite lock waits ignore ``timeout``.

These tests need no server. (The file's runtime is 65-75 s here (2 shared cores), most of it
the bugs' waits; fixed, it is about 30 s.)"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import pytest

import picocache as pc
from _subproc import PY, child_env, run_code


# ---------------------------------------------------------------------------
# 1. Leases of processes that died but are not reaped yet (zombies)
# ---------------------------------------------------------------------------

_ZOMBIE = """
import os, sys, time, signal
import picocache as pc
kind, where = sys.argv[1], sys.argv[2]
if kind == "local":
    c = pc.LocalCache(where, lease_timeout=4)
else:
    c = pc.SQLiteCache(where, lease_timeout=4)

@c(name="slow")
def slow(x):
    if os.environ.get("PICO_CHILD"):
        os.write(1, b"computing\\n")
        time.sleep(60)
    return ("mine", x)

r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.environ["PICO_CHILD"] = "1"
    os.dup2(w, 1)
    slow(1)
    os._exit(0)
os.close(w)
assert os.read(r, 100) == b"computing\\n"
os.kill(pid, signal.SIGKILL)
for _ in range(200):  # dead, not reaped: a zombie (state Z)
    if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
        break
    time.sleep(0.01)
t0 = time.monotonic()
v = slow(1)
took = time.monotonic() - t0
os.waitpid(pid, 0)
assert v == ("mine", 1), v
print(f"{took:.2f}")
"""


@pytest.mark.parametrize("kind", [
    "local",
    "sqlite",  # fixed in 7264893: a zombie holder is gone
])
def test_lease_of_a_killed_but_unreaped_holder_is_not_waited_for(kind, tmp_path):
    """BUG (SQLiteCache; latency up to ``lease_timeout``, 60 s by default;
    every time): a process computing ``f(1)`` is SIGKILLed (the OOM
    killer) but its parent has not reaped it yet, so it is a zombie. The
    parent (or anyone) then calls ``f(1)`` and waits the whole
    ``lease_timeout`` (6.0 s measured with ``lease_timeout=6``) before
    computing: sql/lease.rs ``holder_is_gone`` asks only whether
    ``/proc/PID/stat`` still names a process with the holder's start time,
    and a zombie's does. The parent of a killed worker that calls the
    function before it ``wait()``s for the worker (a supervisor, a
    ``subprocess.Popen`` user, ``os.fork`` code) always hits this. A
    ``LocalCache`` in the same situation computes at once (0.00 s): its
    lease dies with the holder's open files. Suggested fix: in
    ``holder_is_gone``, also treat a holder whose state (field 3 of
    ``/proc/PID/stat``) is ``Z`` or ``X`` as gone. Here ``lease_timeout=4``:
    the caller must not wait more than 2.5 s."""
    where = str(tmp_path / ("s" if kind == "local" else "c.db"))
    r = run_code(_ZOMBIE, kind, where, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    took = float(r.stdout.strip())
    print(f"{kind}: the caller after the holder became a zombie waited {took:.2f} s (lease_timeout=4)")
    assert took < 2.5


# ---------------------------------------------------------------------------
# 2. SIGBUS guard vs. faulthandler
# ---------------------------------------------------------------------------

_BUS = """
import faulthandler, os, subprocess, sys
import picocache
store, when = sys.argv[1], sys.argv[2]
first = picocache.LocalCache(store + "-first")
@first
def warm(x):
    return x
warm(1)                      # the store's SIGBUS guard is installed now
if when == "late":
    faulthandler.enable()    # what an application (or a test runner) may do later
elif when == "python-handler":
    import signal
    signal.signal(signal.SIGBUS, lambda *a: print("python SIGBUS handler ran"))
cache = picocache.LocalCache(store, secret="cut-test")
@cache(name="cut.blob")
def blob(i):
    return (i, "x" * 1000)
N = 2000
assert [blob(i) for i in range(N)] == [(i, "x" * 1000) for i in range(N)]
subprocess.run(["truncate", "-s", "4096", os.path.join(store, "index")], check=True)
for _ in range(2):
    assert [blob(i) for i in range(N)] == [(i, "x" * 1000) for i in range(N)]
print("ok")
"""


@pytest.mark.parametrize("when", [
    "startup",
    "late",  # fixed in c1e9778: the guard is re-installed when a map is made
    "python-handler",  # fixed in c1e9778
])
def test_an_index_truncated_under_a_process_that_set_its_own_sigbus_handler(when, tmp_path):
    """BUG (the process dies of SIGBUS; every time): the engine's SIGBUS
    guard (engine/src/sys.rs) is installed once per process, at the first
    store opened, and saves the handler it replaces. A process that calls
    ``faulthandler.enable()`` after that (an application's ``main()`` after
    its imports have used a cache, a framework or test runner that enables
    it late) puts faulthandler's handler in front of the guard. When another
    program then truncates the store's ``index`` (what
    test_truncated_files.py shows is survived), the next lookup faults on
    the index map: faulthandler prints "Fatal Python error: Bus error",
    restores the guard and re-raises SIGBUS with ``raise()``, whose
    siginfo names no address in the guard's table, so the guard hands it to
    the default action: exit status 135. A store opened after the
    ``enable()`` does not help (the guard is not installed again). With
    ``python -X faulthandler`` (enabled before the guard) the same run
    prints ok. With a Python-level handler (``signal.signal(signal.SIGBUS,
    ...)``, set after the first use) it is a hang: CPython's C handler only
    sets a flag and returns, the faulting read runs again and faults again,
    forever, at 100% CPU (killed here after 5 s; the Python handler never
    runs). Suggested fix: when a store is opened (or a map registered),
    check with ``sigaction`` that SIGBUS is still the guard's and install it
    again in front of whatever replaced it (chaining to that); or treat a
    SIGBUS that was ``raise()``d (``si_code == SI_TKILL``) while a
    registered map is being read as a retry."""
    flags = ["-X", "faulthandler"] if when == "startup" else []
    try:
        r = subprocess.run([PY, *flags, "-c", textwrap.dedent(_BUS), str(tmp_path / "s"), when],
                           capture_output=True, text=True, env=child_env(), timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{when}: the process hung after its store's index was truncated")
    print(f"{when}: exit status {r.returncode}")
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-1500:])


# ---------------------------------------------------------------------------
# 3. Many writer processes on one LocalCache
# ---------------------------------------------------------------------------

_WRITERS = """
import os, sys, time, multiprocessing as mp
import picocache as pc
D, N, SIZE, DUR, STRICT = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "1"

def val(i):
    if SIZE:
        return bytes([i % 256]) * SIZE
    return ("v", i, "y" * (i % 300)) if i % 5 else b"z" * (100_000 + i)

def worker(wid, q, stop):
    import logging
    said = []
    class H(logging.Handler):
        def emit(self, r):
            said.append(r.getMessage()[:200])
    logging.getLogger("picocache").addHandler(H())
    cache = pc.LocalCache(D, strict=STRICT)
    @cache(name="w", maxsize=4 if SIZE else None)
    def f(i):
        return val(i)
    @cache(name="w2", maxsize=None if SIZE else 50)
    def g(i):
        return val(i)
    calls = wrong = 0; errs = []
    t0 = time.monotonic(); k = 0
    while time.monotonic() - t0 < DUR and not stop.is_set():
        k += 1
        i = (wid * 100003 + k) if SIZE else (k * 7919 + wid) % 3000
        fn = f if k % 2 else g
        try:
            if fn(i) != val(i):
                wrong += 1
            calls += 1
        except Exception as e:
            errs.append(f"{time.monotonic() - t0:.1f}s {type(e).__name__}: {e}"[:200])
            if SIZE:
                stop.set()
    q.put((calls, wrong, errs, said))

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[6])
    q = ctx.Queue(); stop = ctx.Event()
    ps = [ctx.Process(target=worker, args=(w, q, stop)) for w in range(N)]
    for p in ps:
        p.start()
    res = [q.get(timeout=300) for _ in ps]
    for p in ps:
        p.join()
    errs = [e for r in res for e in r[2]]; said = [s for r in res for s in r[3]]
    print(sum(r[0] for r in res), sum(r[1] for r in res), len(errs), len(said))
    for e in (errs + said)[:3]:
        print(e)
"""


def _writers(tmp_path, n, size, dur, strict, method):
    script = tmp_path / "writers.py"
    script.write_text(textwrap.dedent(_WRITERS))
    r = subprocess.run([PY, str(script), str(tmp_path / "s"), str(n), str(size), str(dur),
                        "1" if strict else "0", method],
                       capture_output=True, text=True, env=child_env(), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    calls, wrong, errs, said = map(int, lines[0].split())
    return calls, wrong, errs, said, lines[1:]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_many_writer_processes_with_small_and_large_values(method, tmp_path):
    """Held: 8 processes (fork or spawn) hammer two functions of one
    LocalCache for 3 s with misses and hits (values of 30 bytes to 100 KB,
    one function with ``maxsize=50`` so that it evicts all the time),
    ``strict=True``: no call raises, none returns a wrong value, nothing is
    logged. (Measured: 12 processes for 8 s, about 200,000 calls; 16 spawn
    workers with 1.5 MB values and a cache_clear() now and then: the same.)"""
    calls, wrong, errs, said, first = _writers(tmp_path, 8, 0, 3, True, method)
    print(f"{method}: {calls} calls, {wrong} wrong, {errs} raised, {said} logged", first)
    assert wrong == 0
    assert errs == 0 and said == 0, first


# Not strict: load-dependent (it passes on an idle machine).
@pytest.mark.xfail(strict=False, reason=(
    "BUG: with strict=True, writers of large values that nobody stopped make calls raise "
    "CacheUnavailable (the writer lock is waited for a fixed 3 s)"))
def test_strict_writers_of_large_values_never_raise_a_lock_timeout(tmp_path):
    """BUG (strict=True: a healthy store makes the user's call raise; without
    strict: a spurious warning and a result not stored): 10 processes store
    20 MB results (``maxsize=4``) in one LocalCache; none is stopped. A
    store holds the writer lock for the copy of its value (0.05-0.2 s alone,
    longer on a loaded machine), and engine/src/sys.rs ``flock_within``
    polls a non-blocking ``flock`` (yield, then 1 ms sleeps) for a fixed 3 s
    (``DEFAULT_LOCK_TIMEOUT``): with ten writers queued, some call waits
    more than 3 s and raises ``CacheUnavailable: ... writer lock stayed held
    by another process or thread for 3s (one stopped while writing?)``.
    Measured here (2 cores, load ~6): a first raise after 3.6-4.3 s in 3 of 3
    runs; 12 processes for 10 s: 10 raises in 68 calls; 8 processes: 4 in
    109; without strict, one warning per ~50 calls; a single process
    storing one 600 MB array held the lock past 3 s on its own (one small
    miss of another process raised). Wrong values: none. Suggested fix:
    time the wait out on lack of progress, not on a fixed span: the holder
    records its pid (and a progress counter) beside the lock; a waiter keeps
    waiting while the holder is running and progressing (or the lock keeps
    changing hands), and gives up after 3 s only when the holder is stopped
    (``/proc/PID/stat`` state T/t) or makes no progress; a blocking
    ``flock`` with a timer would at least make the wait fair. May pass on
    an idle, fast machine (then the test XPASSes: raise the writers or
    sizes)."""
    calls, wrong, errs, said, first = _writers(tmp_path, 10, 20_000_000, 20, True, "fork")
    print(f"{calls} calls, {wrong} wrong, {errs} raised", first)
    assert wrong == 0
    assert errs == 0, first


# ---------------------------------------------------------------------------
# 4. A process stopped while it holds a LocalCache's writer lock
# ---------------------------------------------------------------------------


@pytest.fixture
def stop_a_lock_holder(tmp_path):
    """A LocalCache store path, and a function that starts a process that
    takes its writer lock (the ``flock`` on ``STORE/lock`` that every write
    takes) and stops itself, as a writer suspended by Ctrl-Z, a debugger or
    ``docker pause`` in the middle of a store is. The holder is continued
    and killed at the end."""
    store = tmp_path / "s"
    held = []

    def start():
        holder = subprocess.Popen([PY, "-c", textwrap.dedent(f"""
            import fcntl, os, signal, sys
            f = open({str(store / "lock")!r}, "rb+")
            fcntl.flock(f, fcntl.LOCK_EX)
            print("held", flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        held.append(holder)
        assert holder.stdout.readline().strip() == "held"

    try:
        yield store, start
    finally:
        for holder in held:
            holder.send_signal(signal.SIGCONT)
            holder.kill()
            holder.wait()


def test_hits_and_values_while_a_writer_is_stopped_under_the_lock(stop_a_lock_holder):
    """Held: while another process is stopped holding the writer lock, hits
    are served at once (lock-free readers) and a ``strict=True`` miss raises
    ``CacheUnavailable`` after the 3 s lock wait: never a wrong value, never
    a hang. (A miss without strict returns the function's value with a
    warning: the next test.)"""
    store, start = stop_a_lock_holder
    c = pc.LocalCache(store, lease_timeout=2)
    strict = pc.LocalCache(store, strict=True)

    @c(name="r")
    def r(i):
        return ("r", i)

    @strict(name="r")
    def rs(i):
        return ("r", i)

    assert [r(i) for i in range(20)] == [("r", i) for i in range(20)]
    assert rs(0) == ("r", 0)
    start()
    t0 = time.monotonic()
    assert [r(i) for i in range(20)] == [("r", i) for i in range(20)]
    assert [rs(i) for i in range(20)] == [("r", i) for i in range(20)]
    hits = time.monotonic() - t0
    t0 = time.monotonic()
    with pytest.raises(pc.CacheError):
        rs(101)
    miss = time.monotonic() - t0
    print(f"40 hits took {hits:.2f} s; a strict miss raised after {miss:.2f} s while a writer is "
          "stopped under the lock (a miss without strict: the next test)")
    assert hits < 2 and miss < 10


# fixed in aae510d: a store handle backs off after a writer-lock wait times out
def test_misses_while_a_writer_is_stopped_under_the_lock_do_not_each_wait(stop_a_lock_holder):
    """BUG (availability: bounded, no wrong value; every time): a process
    that holds a LocalCache's writer lock is stopped (Ctrl-Z on a script
    that shares the directory, a debugger breakpoint inside a store,
    ``docker pause``, the cgroup freezer). Every miss of every other process
    whose cache is already open then waits 3 s for the lock to take the
    key's lease and 3 s more to store: 6.0 s per miss, for as long as the
    holder stays stopped (measured: misses in a row took 3.0, 6.0, 6.0 s, a
    warning each; a real writer stopped mid-store of a 200 MB value: the same). A
    1 ms function becomes a 6 s one. A cache opened while the lock is held
    does back off ("unreachable now ... tried again after 1, 2, 4 ... 30
    s"), and the remote stores skip a failed server for ``backoff`` seconds;
    an open LocalCache retries the full wait at every miss. Suggested fix:
    after a lock timeout, skip this store's writes (lease and store: the
    call computes, unstored) for a back-off period, as at open, and skip the
    store after a failed lease in the same miss; or have the holder record
    its pid beside the lock and fail at once when that process is stopped
    (state T in ``/proc/PID/stat``). Here: two misses must take less than
    6 s together (9 s now)."""
    store, start = stop_a_lock_holder
    c = pc.LocalCache(store)

    @c(name="r")
    def r(i):
        return ("r", i)

    assert r(-1) == ("r", -1)
    start()
    times = []
    for i in range(2):
        t0 = time.monotonic()
        assert r(i) == ("r", i)
        times.append(round(time.monotonic() - t0, 2))
    print("misses while a writer is stopped under the lock:", times)
    assert sum(times) < 6


# ---------------------------------------------------------------------------
# 5. SQLite: another connection holds the database's write lock
# ---------------------------------------------------------------------------

_SQLITE_LOCKED = """
import sqlite3, subprocess, sys, time
import picocache as pc
db, how = sys.argv[1], sys.argv[2]
if how == "url-timeout":
    c = pc.SQLAlchemyCache("sqlite:///" + db, timeout=0.5, connect_timeout=0.5)
else:
    c = pc.SQLiteCache(db)

@c(name="r")
def r(i):
    return ("r", i)

assert [r(i) for i in range(5)] == [("r", i) for i in range(5)]
# Another process holds the write lock: a migration, a sqlite3 shell, a stopped writer. (Not a
# connection of this process: see test_sqlite_cache_on_the_applications_own_database_file.)
other = subprocess.Popen([sys.executable, "-c", f'''
import sqlite3, sys
c = sqlite3.connect({db!r}, isolation_level=None)
c.execute("BEGIN IMMEDIATE")
print("held", flush=True)
sys.stdin.read()
'''], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
assert other.stdout.readline().strip() == "held"
t0 = time.monotonic()
assert [r(i) for i in range(5)] == [("r", i) for i in range(5)]
print(f"hits {time.monotonic() - t0:.2f}", flush=True)
t0 = time.monotonic()
assert r(100) == ("r", 100)
print(f"miss {time.monotonic() - t0:.2f}", flush=True)
other.kill()
"""


# fixed in af8244d: busy waits bounded by the operation's budget
def test_sqlite_url_timeout_bounds_a_miss_while_the_database_is_write_locked(tmp_path):
    """BUG (a documented bound broken; availability; every time): the
    Options table and ``SQLAlchemyCache``'s docstring say that on the native
    (URL) path, SQLite included, ``timeout`` is the seconds one cache
    operation may take in total and a miss waits at most ``connect_timeout
    + 5 * timeout`` (3 s with ``timeout=0.5, connect_timeout=0.5``). While
    another connection holds the database's write lock (``BEGIN
    IMMEDIATE``: a migration, a ``sqlite3`` shell left in a transaction, a
    picocache process stopped mid-store), hits are served at once but every
    miss takes 20 s (20.1-20.5 s measured, ``timeout=0.5`` or the default;
    the lease and the store each wait sql/sqlite.rs ``BUSY_TIMEOUT``, a 10 s
    floor, and ``Conn::set_deadline`` is ignored for SQLite), and the next
    miss again, with no back-off. ``SQLiteCache`` itself (which takes no
    ``timeout``) does the same: 20 s per miss, every miss, while the lock is
    held. Suggested fix: bound SQLite's busy waits by the operation's budget
    (``busy_timeout`` = what is left of ``timeout``, or a busy handler that
    checks the deadline) and let a lock timeout trip the breaker (back off
    like a failed server); give ``SQLiteCache`` the same ``timeout`` option
    (its 10 s floor could stay its default). Here the miss must return
    within 4.5 s (it is killed after 6.5 s)."""
    try:
        r = subprocess.run([PY, "-c", textwrap.dedent(_SQLITE_LOCKED), str(tmp_path / "c.db"), "url-timeout"],
                           capture_output=True, text=True, env=child_env(), timeout=6.5)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        pytest.fail(f"a miss while the database is write-locked took more than 6.5 s; {out.split()}")
    assert r.returncode == 0, r.stderr[-2000:]
    print(r.stdout.split())
    lines = dict(line.split() for line in r.stdout.splitlines())
    assert float(lines["hits"]) < 1
    assert float(lines["miss"]) < 4.5


# ---------------------------------------------------------------------------
# 6. SQLiteCache on a database the application itself opens (sqlite3 module)
# ---------------------------------------------------------------------------

_SHARED_DB = """
import os, sqlite3, sys, threading, time
import picocache as pc
db, how = sys.argv[1], sys.argv[2]
app = sqlite3.connect(db, isolation_level=None, check_same_thread=False, timeout=30)
app.execute("PRAGMA journal_mode=WAL")
app.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, v TEXT)")
cache = pc.SQLiteCache(db, table_name="cache")   # the application's database, a table of its own

@cache(name="price")
def price(i):
    return ("price", i)

problems = []
if how == "one-thread":
    # A cached call inside the application's transaction.
    for n in range(400):
        try:
            app.execute("BEGIN IMMEDIATE")
            app.execute("INSERT INTO orders (v) VALUES (?)", ("y" * 3000,))
            assert price(n) == ("price", n)
            app.execute("COMMIT")
        except sqlite3.Error as e:
            problems.append(f"app: {e!r}")
            break
else:
    stop = time.monotonic() + 2

    def orders():
        con = sqlite3.connect(db, isolation_level=None, timeout=30)
        n = 0
        while time.monotonic() < stop and not problems:
            try:
                con.execute("BEGIN IMMEDIATE")
                for _ in range(20):
                    con.execute("INSERT INTO orders (v) VALUES (?)", ("y" * (n % 1000),))
                con.execute("COMMIT")
                n += 1
            except sqlite3.Error as e:
                problems.append(f"app: {e!r}")

    def prices(seed):
        i = seed * 10**6
        while time.monotonic() < stop and not problems:
            i += 1
            if price(i) != ("price", i):
                problems.append("wrong value")

    ts = [threading.Thread(target=orders), threading.Thread(target=prices, args=(1,))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
try:
    check = sqlite3.connect(db).execute("PRAGMA integrity_check").fetchall()
except sqlite3.Error as e:
    check = [(repr(e),)]
print(repr((problems[:3], [r[0][:150] for r in check[:3]])))
"""


@pytest.mark.parametrize("how", ["one-thread", "threads"])
# fixed in 29cc91b: the cache never writes to a file another SQLite of this process opens
def test_sqlite_cache_on_the_applications_own_database_file(how, tmp_path):
    """BUG (critical: the application's own data is corrupted; every run):
    ``SQLiteCache(path, table_name=...)`` invites keeping the cache in the
    application's database (Django's ``db.sqlite3``, an ORM's
    ``sqlite:///app.db``; ``SQLAlchemyCache("sqlite:///app.db")`` runs on
    the same Rust backend). The extension links its own (bundled) SQLite,
    while Python's ``sqlite3`` module uses the system's libsqlite3: two
    copies of SQLite in one process. SQLite's locks are POSIX advisory
    locks, which belong to the process, so neither copy sees the other's
    locks (and closing a descriptor in one copy drops the other's): the
    SQLite documentation's "How To Corrupt An SQLite Database File", 2.2.1.
    Measured: picocache stores while the application holds ``BEGIN
    IMMEDIATE`` (no wait); one thread calling a cached function inside its
    own transactions gets ``sqlite3.OperationalError: locking protocol`` on
    COMMIT at the 329th transaction (5 of 5 runs, always the 329th; before
    it, the cache's stores are silently lost: "namespace ... vanished"); one application
    thread inserting while another calls the cached function: within 2 s,
    ``database disk image is malformed`` / ``file is not a database`` for
    the application and ``PRAGMA integrity_check`` failing (3 of 3 runs).
    Across processes (spawn) the same load is fine (integrity ok). No wrong
    cached value was returned (seals). Suggested fix: use the SQLite the
    process already has (link the extension dynamically against the
    libsqlite3 Python's ``_sqlite3`` uses, when loaded), or refuse (step
    aside with a warning) a database that this process has open through
    another descriptor (``/proc/self/fd`` names the same inode, at open and
    when a connection is made), and document that the cache's database must
    not be one the process opens otherwise."""
    r = subprocess.run([PY, "-c", textwrap.dedent(_SHARED_DB), str(tmp_path / "app.db"), how],
                       capture_output=True, text=True, env=child_env(), timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    problems, check = eval(r.stdout.strip().splitlines()[-1])
    print(how, problems, check)
    assert problems == [] and check == ["ok"]


# ---------------------------------------------------------------------------
# 7. A LocalCache holder that dies while a child it forked lives on
# ---------------------------------------------------------------------------

_FORKING_HOLDER = """
import itertools, os, sys, threading, time
import picocache as pc
store, what = sys.argv[1], sys.argv[2]
c = pc.LocalCache(store, lease_timeout=4)

@c(name="slow")
def slow(x):
    print("computing", flush=True)
    time.sleep(60)
    return x

@c(name="w", maxsize=2)
def w(i):
    return bytes([i % 256]) * 30_000_000

if what == "lease":
    threading.Thread(target=slow, args=(1,), daemon=True).start()   # holds the lease of slow(1)
else:
    def loop():
        for i in itertools.count():
            w(i)                                                    # holds the writer lock often
    threading.Thread(target=loop, daemon=True).start()
    print("computing", flush=True)
time.sleep(0.5)
pid = os.fork()
if pid == 0:                 # a worker that lives on (it uses the cache: its handles are reopened)
    @c(name="other")
    def other(x):
        return x
    other(1)
    time.sleep(60)
    os._exit(0)
print("child", pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("what", ["lease", "writer-lock"])
# fixed in 064e03d: a forked child lets go of the lock files' descriptions
def test_a_killed_holder_with_a_forked_child_alive_releases_its_locks(what, tmp_path):
    """BUG (a documented promise broken; availability; every time): README:
    "the lease of a process that died (SIGKILL, the OOM killer) is taken
    over at once on a LocalCache". The engine's leases are ``F_OFD_SETLK``
    locks and its writer lock a ``flock``: both belong to the open file
    description, which a forked child shares (it inherits the descriptors;
    the fork hook reopens the child's handles but leaves the inherited
    descriptors open). So when a process that forked a long-lived child
    (a ``multiprocessing`` fork worker, a preforking server's worker, a
    daemon) is killed while it holds a key's lease, the lease outlives it
    as long as the child lives: the next caller waits the whole
    ``lease_timeout`` (6.1 s measured with ``lease_timeout=6``; 60 s by
    default), where it waits 0.1 s if no child lives (the SQLite store,
    child or not: 0.2 s). Here ``lease_timeout=4``: the next caller must be
    done within 2.5 s. Killed while it holds the writer lock (mid-store), every write of
    every process fails for as long as the child lives: each miss waits 3 s
    and warns, a cache opened then is "unreachable now", ``strict=True``
    raises (measured: the lock still held 0.5 s after the kill, the next
    miss 3.0 s). The child here even used the cache after the fork.
    Suggested fix: in the engine's at-fork child hook, close the child's
    inherited descriptors of the ``lock`` and ``leases`` files (closing a
    descriptor does not release an OFD lock its parent holds) before
    reopening, or open them with a fresh description per process before
    locking; the same for any other file the store locks."""
    store = str(tmp_path / "s")
    holder = subprocess.Popen([PY, "-c", textwrap.dedent(_FORKING_HOLDER), store, what],
                              stdout=subprocess.PIPE, text=True, env=child_env())
    child = None
    try:
        assert holder.stdout.readline().strip() == "computing"
        child = int(holder.stdout.readline().split()[1])
        if what == "writer-lock":
            import fcntl
            for _ in range(200):         # kill the holder while it holds the writer lock
                with open(os.path.join(store, "lock"), "rb") as f:
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        fcntl.flock(f, fcntl.LOCK_UN)
                    except BlockingIOError:
                        holder.kill()
                        break
                time.sleep(0.01)
            else:
                pytest.skip("never saw the writer lock held")
        holder.kill()
        holder.wait()
        t0 = time.monotonic()
        r = run_code(f"""
            import picocache as pc
            c = pc.LocalCache({store!r}, lease_timeout=4, strict=True)
            @c(name="slow")
            def slow(x):
                return ("mine", x)
            assert slow(1) == ("mine", 1)
        """, timeout=60)
        took = time.monotonic() - t0
        print(f"{what}: the next caller after the holder was killed took {took:.2f} s "
              f"(lease_timeout=4; its forked child alive: {os.path.exists(f'/proc/{child}')})")
        assert r.returncode == 0, r.stderr[-1500:]
        assert took < 2.5
    finally:
        holder.kill()
        holder.wait()
        if child:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


# ---------------------------------------------------------------------------
# 8. Unequal arguments that share a key: NaNs
# ---------------------------------------------------------------------------


def _nan_bits(x):
    import struct

    if isinstance(x, complex):
        return struct.pack("<dd", x.real, x.imag).hex()
    return struct.pack("<d", x).hex()


@pytest.mark.parametrize("typed", [False, True])  # fixed in 2980a9f: NaNs keyed by their bits
def test_nans_of_other_signs_or_payloads_are_other_keys(typed, tmp_path):
    """BUG (wrong value; low severity; every time, every backend: the key
    encoding is shared): the canonical key of a float NaN is the same bytes
    (``0166000000000000f87f``) whatever its sign and payload, so after
    ``f(float("nan"))``, ``f(-float("nan"))`` returns the first call's
    result: ``math.copysign(1.0, x)`` gives 1.0 for -nan,
    ``struct.pack("<d", x)`` the bytes of +nan; the same for a NaN with
    another payload, for ``complex(-nan, 0)`` and for NaNs inside tuples;
    ``typed=True`` too. NaN equals nothing, so ``functools.lru_cache`` never
    serves one NaN object's result for another (it misses), and these are
    not "equal arguments" that README's keys may merge (as ``0.0`` and
    ``-0.0`` are). numpy arrays and numpy scalars keep the sign (their
    bytes). Suggested fix: encode a NaN by its 64 bits (sign and payload),
    not a canonical NaN; keep ``-0.0 == 0.0`` merged as now."""
    import struct

    cache = pc.LocalCache(tmp_path / "s")

    @cache(typed=typed)
    def bits(x):
        return _nan_bits(x)

    @cache(typed=typed)
    def tbits(t):
        return [_nan_bits(x) for x in t]

    nan = float("nan")
    payload = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    args = [nan, -nan, payload, complex(nan, 0), complex(-nan, 0)]
    for rep in range(2):
        for a in args:
            assert bits(a) == _nan_bits(a), (rep, _nan_bits(a))
        for a in args[:3]:
            assert tbits((a,)) == [_nan_bits(a)], (rep, _nan_bits(a))
