"""Opening a cache's store when the cache is constructed.

A store that cannot be opened for a reason of configuration (a path that is
not a directory or cannot be created, a database file that is not SQLite, an
unknown URL scheme, a refused password, a database or Redis db that does not
exist, bad parameters) raises at construction: the error names the class,
the path or URL (password hidden) and the cause. ``strict=False`` given to
the constructor turns that into one warning, and the cache steps aside:
every call runs its function uncached.

A server that is merely unreachable now (connection refused or timed out, a
name that does not resolve, a server still loading its data) is not a
configuration error: a cache must not break an application's import because
Redis restarts. The constructor warns once; the store is opened again at the
first call, then after 1, 2, 4 ... 30 s while it keeps failing, and calls run
their function uncached (or raise, with ``strict=True``) until it answers.
"""

from __future__ import annotations

import os
import stat

from . import _native
from ._core import logger  # (logging is imported at the first message)

TYPE_CHECKING = False  # (typing is not imported at run time: see _core)
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

#: Server replies that mean "not now" rather than "never".
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN",
                      "BusyLoading", "TryAgain", "MasterDown", "ClusterDown")


#: Query parameters of a URL that carry a password (libpq's and others').
_SECRET_PARAMS = ("password", "passwd", "pwd", "pass", "sslpassword")


def _split_auth(url: str) -> tuple:
    """(scheme, user information or "", what follows it) of ``url``; the
    user information is None if the URL has none.

    A password may hold characters a URL should have percent-encoded
    (``/``, ``#``, ``?``, ``@``): when the text before the first ``/``
    after the scheme is ``user:...`` with no ``@`` (the password runs on
    past a ``/``), everything up to the last ``@`` is taken as the user
    information, so no part of such a password is shown either."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return scheme, None, url
    head = rest.split("/", 1)[0]
    if "@" in head:
        auth, _, host = head.rpartition("@")
        return scheme, auth, host + rest[len(head):]
    if ":" in head and "@" in rest:
        auth, _, after = rest.rpartition("@")
        return scheme, auth, after
    return scheme, None, rest


def redact(url: str) -> str:
    """``url`` with its password (in the user information or a query
    parameter such as ``password=``) replaced by ``***``."""
    scheme, auth, after = _split_auth(url)
    if auth is None and "://" not in url:
        return url
    if auth is not None and ":" in auth:
        url = f"{scheme}://{auth.split(':', 1)[0]}:***@{after}"
    base, q, query = url.partition("?")
    if not q:
        return url
    query, h, frag = query.partition("#")
    parts = []
    for part in query.split("&"):
        k, eq, v = part.partition("=")
        parts.append(f"{k}=***" if eq and k.lower() in _SECRET_PARAMS else part)
    return f"{base}?{'&'.join(parts)}{h}{frag}"


def url_secrets(url: str) -> list:
    """The passwords ``url`` holds (as written and percent-decoded)."""
    _, auth, after = _split_auth(url)
    out = []
    if auth is not None and ":" in auth:
        out.append(auth.split(":", 1)[1])
    query = after.partition("?")[2].partition("#")[0]
    for part in query.split("&"):
        k, eq, v = part.partition("=")
        if eq and k.lower() in _SECRET_PARAMS:
            out.append(v)
    if any("%" in s or "+" in s for s in out):
        from urllib.parse import unquote, unquote_plus

        out += [f(s) for s in out for f in (unquote, unquote_plus)]
    return [s for s in set(out) if len(s) >= 2]


def scrub(text: str, secrets: list) -> str:
    """``text`` with each of ``secrets`` replaced by ``***`` (a message of
    another library may quote a URL whole)."""
    for s in sorted(secrets, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def is_transient(e: BaseException) -> bool:
    """Whether an error opening a store may go away by itself (the server is
    down, restarting or busy; the disk is full; another process holds the
    store's lock) rather than being a configuration mistake."""
    if "certificate" in str(e):
        return False  # a TLS certificate refused: configuration, not a server away
    if isinstance(e, (_native.CacheUnavailable, _native.CacheFull)):
        return True
    # Only a Redis server's reply codes (LOADING, BUSY ... or the client's
    # names for them) mean "not now", and only as whole words: a SQL
    # server's message can name a user or database spelled like one.
    text = str(e)
    if not text.startswith("redis"):
        return False
    words = set(text.replace('"', " ").replace(":", " ").replace(",", " ").split())
    return any(reply in words for reply in _TRANSIENT_REPLIES)


def _first_existing(path: str) -> str:
    p = path
    while not os.path.lexists(p):
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    return p


def check_local_path(path: str) -> Optional[str]:
    """Why a local store cannot be opened at ``path`` (None: try it)."""
    if os.path.lexists(path):
        if not os.path.isdir(path):
            return f"{path} exists and is not a directory (a store is a directory)"
        return None
    base = _first_existing(path)
    if not os.path.isdir(base):
        return f"{base} is not a directory, so the store directory {path} cannot be created"
    if not os.access(base, os.X_OK):
        return (f"{base} cannot be searched (no execute permission on the directory), "
                f"so the store directory {path} cannot be opened or created")
    if not os.access(base, os.W_OK | os.X_OK):
        return f"{base} is not writable, so the store directory {path} cannot be created"
    return None


def check_sqlite_path(path: str) -> Optional[str]:
    """Why an SQLite database cannot be opened at ``path`` (None: try it)."""
    if os.path.isdir(path):
        return f"{path} is a directory, not an SQLite database file"
    if os.path.exists(path):
        if not stat.S_ISREG(os.stat(path).st_mode):
            # (A FIFO would block the read below; a device is no database.)
            return f"{path} is not a regular file, so it cannot be an SQLite database"
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError as e:
            return f"{path} cannot be read: {e.strerror or e}"
        if head and head != b"SQLite format 3\x00":
            return f"{path} is not an SQLite database (its first bytes are not SQLite's header)"
        return None
    parent = os.path.dirname(path) or "."
    if not os.path.exists(parent):
        return f"the directory {parent} does not exist (SQLite creates the file, not its directory)"
    if not os.path.isdir(parent):
        return f"{parent} is not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"the directory {parent} is not writable, so {path} cannot be created"
    return None


def open_at_construction(cache: Any, where: str, open_fn: Callable[[], Any],
                         problem: Optional[str] = None) -> Any:
    """Opens ``cache``'s store now: returns it, or None if it is unreachable
    now (warned) or the cache steps aside (``strict=False`` given, warned).
    Raises a ``CacheError`` naming the class, ``where`` and the cause for a
    configuration error. ``problem``: a configuration error found before
    trying (by ``check_local_path`` and the like)."""
    cls = type(cache).__name__
    explicit_lenient = getattr(cache, "_strict_given", None) is False
    # The passwords this cache was given: never shown, even where another
    # library's message quotes its URL.
    secrets = []
    url = getattr(cache, "url", None)
    if isinstance(url, str):
        secrets += url_secrets(url)
    password = getattr(cache, "_password", None)
    if isinstance(password, str) and len(password) >= 2:
        secrets.append(password)
    error: Optional[BaseException] = None
    if problem is not None:
        error = _native.CacheInvalidArgument(scrub(problem, secrets))
    else:
        try:
            return open_fn()
        except _native.CacheError as e:
            if is_transient(e):
                logger.warning("picocache: %s at %s is unreachable now (%s); its functions run uncached "
                               "and the store is tried again at the next call, then after 1, 2, 4 ... 30 s",
                               cls, where, scrub(str(e), secrets))
                return None
            error = e
        except (TypeError, ValueError, OverflowError) as e:
            error = _native.CacheInvalidArgument(str(e))
    message = scrub(f"{cls}: cannot open the store at {where}: {error}", secrets)
    if explicit_lenient:
        logger.warning("picocache: %s; strict=False: every function of this cache runs uncached", message)
        cache._stepped_aside = _native.CacheUnavailable(message)
        return None
    raise type(error)(message + " (strict=False warns instead and runs the functions uncached)") from None


def strict_given(kwargs: dict) -> Optional[bool]:
    """The ``strict=`` a constructor was given (None: not given)."""
    v = kwargs.get("strict")
    return None if v is None else bool(v)
