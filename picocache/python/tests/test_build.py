"""The built extension links no OpenSSL (issue 15: the Redis client's TLS is
rustls, so neither a source build nor the wheel needs libssl)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

import picocache._native as native


def test_the_extension_links_no_openssl():
    ldd = shutil.which("ldd")
    if ldd is None:
        pytest.skip("no ldd on this system")
    out = subprocess.run([ldd, native.__file__], capture_output=True, text=True, timeout=60).stdout
    assert "libc.so" in out, out  # ldd did read it
    assert "libssl" not in out and "libcrypto" not in out, out
