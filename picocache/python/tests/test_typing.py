"""Type checkers see through the decorator (issue 15): a decorated function
keeps its parameters and return type, `mypy --strict` accepts the decorator,
a wrong argument type is flagged, and CacheInfo's fields are typed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SAMPLE = textwrap.dedent("""
    import asyncio
    from picocache import CacheInfo, LocalCache, RedisCache

    cache = LocalCache("store")


    @cache
    def add(a: int, b: int) -> int:
        return a + b


    @cache()
    def empty(x: int) -> int:
        return x


    @cache(maxsize=256, typed=True)
    def name(x: str) -> str:
        return x


    @cache(128, True)
    def pos(x: float) -> float:
        return x


    @RedisCache("redis://localhost:6379/0")(ttl=60)
    async def fetch(url: str) -> bytes:
        return url.encode()


    class Repo:
        @cache
        def stars(self, year: int) -> int:
            return year


    reveal_type(add)
    reveal_type(add(1, 2))
    reveal_type(empty(1))
    reveal_type(name("a"))
    reveal_type(pos(1.0))
    reveal_type(asyncio.run(fetch("u")))
    reveal_type(Repo().stars(2024))
    info: CacheInfo = add.cache_info()
    reveal_type(info.hits)
    reveal_type(info.maxsize)
    add.cache_clear()
    add("a", "b")
""")


def test_mypy_strict_sees_the_decorated_signatures(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "sample.py").write_text(SAMPLE)
    r = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "sample.py"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = r.stdout
    revealed = [line.split("Revealed type is ", 1)[1].strip('"') for line in out.splitlines()
                if "Revealed type is" in line]
    assert revealed == [
        "picocache._typing.CachedFunction[[a: int, b: int], int]",
        "int", "int", "str", "float", "bytes", "int", "int", "int | None",
    ], out
    errors = [line for line in out.splitlines() if ": error:" in line]
    # Exactly the two bad arguments of the last line, nothing about the decorators.
    assert len(errors) == 2 and all('incompatible type "str"; expected "int"' in e for e in errors), out


# -- pyright (issue 15): a program that must pass, in strict mode, and one that
# must fail with exactly these errors. pyright comes from pip (tests/
# requirements.txt: pyright[nodejs], whose node is a wheel too: no npm, no
# download at run time).

PASSING = "# pyright: strict\n" + SAMPLE.rstrip("\n").rsplit("\n", 1)[0] + "\n"

FAILING = textwrap.dedent("""
    import asyncio
    from picocache import LocalCache

    cache = LocalCache("store")


    @cache
    def add(a: int, b: int) -> int:
        return a + b


    @cache(maxsize=16)
    async def fetch(url: str) -> bytes:
        return url.encode()


    add("a", 2)
    add(1)
    text: str = add(1, 2)
    data: str = asyncio.run(fetch("u"))
    x = fetch(1)
    add.no_such_method()
    cache(maxsize="big")
""")

#: (line, rule) of every error FAILING must give.
FAILING_ERRORS = [
    (17, "reportArgumentType"),       # add("a", 2)
    (18, "reportCallIssue"),          # add(1)
    (19, "reportAssignmentType"),     # text: str = add(1, 2)
    (20, "reportAssignmentType"),     # data: str = asyncio.run(fetch("u"))
    (21, "reportArgumentType"),       # fetch(1)
    (22, "reportAttributeAccessIssue"),  # add.no_such_method()
    (23, "reportArgumentType"),       # cache(maxsize="big")
]


def _pyright(tmp_path, source: str) -> dict:
    import json
    import shutil

    exe = shutil.which("pyright", path=os.path.dirname(sys.executable)) or shutil.which("pyright")
    if exe is None:
        msg = "SKIPPED LOUDLY: pyright is not installed (pip install -r tests/requirements.txt)"
        print(msg, file=sys.stderr)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    (tmp_path / "prog.py").write_text(source)
    r = subprocess.run([exe, "--outputjson", "--pythonpath", sys.executable, "prog.py"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=600)
    assert r.stdout.startswith("{"), (r.stdout, r.stderr)
    return json.loads(r.stdout)


def test_pyright_strict_accepts_the_sample_and_sees_the_signatures(tmp_path):
    out = _pyright(tmp_path, PASSING)
    diags = out["generalDiagnostics"]
    errors = [d for d in diags if d["severity"] != "information"]
    assert errors == [], errors
    revealed = [d["message"].split('" is "', 1)[1].rstrip('"') for d in diags if d["severity"] == "information"]
    assert revealed == [
        "CachedFunction[(a: int, b: int), int]",
        "int", "int", "str", "float", "bytes", "int", "int", "int | None",
    ], revealed


def test_pyright_flags_exactly_the_misuses(tmp_path):
    out = _pyright(tmp_path, FAILING)
    got = [(d["range"]["start"]["line"], d.get("rule")) for d in out["generalDiagnostics"]
           if d["severity"] == "error"]
    assert got == FAILING_ERRORS, json_lines(out)


def json_lines(out: dict) -> str:
    return "\n".join(f'{d["range"]["start"]["line"]}: {d["severity"]} {d.get("rule")}: {d["message"]}'
                     for d in out["generalDiagnostics"])


def test_stubtest_keeps_the_native_stub_true_to_the_module():
    """mypy.stubtest imports the built picocache._native and compares every
    name, class and signature (PyO3 gives each its text signature) with
    _native.pyi: a function added, removed or changed on one side fails."""
    pytest.importorskip("mypy")
    r = subprocess.run([sys.executable, "-m", "mypy.stubtest", "picocache._native"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
