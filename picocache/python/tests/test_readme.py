"""Runs every ```python block of the repository's README.md and of
picocache/python/README.md, each in a fresh interpreter in an empty directory.
A block that reads a PICOCACHE_*_URL variable that is not set is skipped (the
reason printed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_README = os.path.join(HERE, "..", "README.md")
ROOT_README = os.path.join(HERE, "..", "..", "..", "README.md")

BLOCK = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return BLOCK.findall(f.read())


def cases():
    out = []
    for label, path in (("root", ROOT_README), ("package", PKG_README)):
        found = blocks(path)
        if not found:
            out.append(pytest.param(label, None, id=f"{label}-none"))
        for i, code in enumerate(found):
            out.append(pytest.param(label, code, id=f"{label}-{i}"))
    return out


@pytest.mark.parametrize("label,code", cases())
def test_readme_block(label, code, tmp_path):
    if code is None:
        msg = f"SKIPPED LOUDLY: no ```python blocks in the {label} README.md yet"
        print(msg, file=sys.stderr)
        pytest.skip(msg)
    for var in re.findall(r"PICOCACHE_[A-Z]+_URL", code):
        if not os.environ.get(var):
            msg = f"SKIPPED LOUDLY: this README block needs {var}, which is not set"
            print(msg, file=sys.stderr)
            pytest.skip(msg)
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env.pop("PICOCACHE_DIR", None)
    # Twice in the same directory: a snippet runs as written any number of
    # times (the second run finds the first one's store).
    for run in (1, 2):
        r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, (f"README block failed (run {run}):\n{code}\n--- stdout\n{r.stdout}"
                                   f"\n--- stderr\n{r.stderr}")
        assert "WARNING" not in r.stderr and "failed for" not in r.stderr, r.stderr
