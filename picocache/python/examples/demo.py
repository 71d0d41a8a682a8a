"""PicoCache demo: a slow function memoized on LocalCache, run in two processes.

    python picocache/python/examples/demo.py

The first process computes (about 1 s); the second finds the result in the
store and returns at once. Run the script again: every call is a hit.
"""

import subprocess
import sys
import time

from picocache import LocalCache

cache = LocalCache()  # ./.picocache (or $PICOCACHE_DIR)


@cache(maxsize=1024)
def slow_square(x):
    time.sleep(1.0)
    return x * x


def child() -> None:
    t = time.perf_counter()
    value = slow_square(12)
    print(f"  process {sys.argv[2]}: slow_square(12) = {value} in {time.perf_counter() - t:.3f} s;"
          f" {slow_square.cache_info()}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        child()
    else:
        print(f"store: {cache.path}")
        for n in (1, 2):
            subprocess.run([sys.executable, __file__, "child", str(n)], check=True)
