"""Running a snippet in a fresh interpreter that imports the picocache under
test (the adversarial tests' children)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import picocache as pc

PY = sys.executable


def child_env() -> dict:
    """The environment of a child: this one, with the package under test first on its path."""
    env = dict(os.environ)
    pkg = os.path.dirname(os.path.dirname(pc.__file__))
    env["PYTHONPATH"] = pkg + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_code(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Runs ``code`` (dedented) with ``args``; its output is captured as text."""
    return subprocess.run([PY, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=child_env(), timeout=timeout)
