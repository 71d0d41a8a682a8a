"""What names a cached function: its namespace in the store.

A namespace name is ``MODULE.QUALNAME``, then ``@VERSION`` if a version is
given, then ``#DIGEST`` unless nothing but the name tells the function apart:

- ``MODULE`` is the function's module. For the main module it is the name the
  module would have if imported when Python ran it with ``-m pkg.mod``
  (``pkg.mod``), else ``__main__:`` and the resolved path of the script, so a
  script run directly and its ``multiprocessing`` spawn workers (whose main
  module is ``__mp_main__``) agree, and two scripts with one file name in two
  directories do not. Code with no file (a notebook, ``python -c``, the REPL)
  is ``__main__``: only its code digest tells it apart.
- ``DIGEST`` (64 bits of BLAKE2b, 16 hex digits) covers what tells two definitions with one
  name apart (:func:`picocache._keys.function_identity`): the function's code
  (bytecode, constants, names, nested code objects; not line numbers, the
  file name or the docstring), its default arguments, and the contents of its
  closure, read at the first call. A changed body is a new namespace, so it
  never serves the old body's results. ``version=`` (on the decorator, or the
  cache's default) pins the name instead: the code is left out and entries
  survive edits until the version changes (closure contents and defaults
  still count; a lambda, which has no name to pin, keeps its code digest). ``name=`` on the decorator
  replaces the whole name: every function given that name shares entries.
- The digest depends on the Python version's bytecode: the same function
  under two Python minor versions has two namespaces (never a wrong value).

A closure, default or bound object that cannot be encoded as a key raises
``TypeError`` at the first call, naming it: such a function cannot be told
apart from its siblings, so it is not cached; pass ``name=`` to name it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from . import _native
from ._keys import fallback, function_identity, module_name


def function_name(func: Callable, version: Any = None, *, self_obj: object = None) -> str:
    """The namespace name of ``func`` (see the module docstring): module,
    qualified name, ``@version`` if given, and a digest of what tells this
    definition apart (its code unless ``version`` is given, its defaults, its
    closure's contents; ``self_obj``, the wrapper of a recursive function,
    is a self-reference in its closure).

    Raises ``TypeError`` if a closure variable, default or bound object
    cannot be encoded as a key."""
    qual = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or type(func).__qualname__
    name = f"{module_name(func)}.{qual}"
    if version is not None:
        name += f"@{version}"
    # A lambda has no name to pin: two lambdas with one version differ by code.
    pinned = version is not None and "<lambda>" not in qual
    ident = function_identity(func, with_code=not pinned, self_obj=self_obj)
    if pinned and len(ident) == 3 and ident[0] == "__function__":
        # Pinned, and neither defaults nor a closure: the name says it all.
        return name
    enc = _native.encode(ident, False, fallback)
    return name + "#" + hashlib.blake2b(enc, digest_size=8).hexdigest()
