"""Static types of the decorator API, for type checkers (mypy, pyright).

Nothing here runs: the names exist only under ``TYPE_CHECKING``, so the
package needs no ``typing_extensions`` at run time. A decorated function
keeps its parameters and return type (``CachedFunction[P, R]``), with the
``lru_cache`` methods beside them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, TypeVar, overload

if TYPE_CHECKING:
    from typing_extensions import ParamSpec, Protocol

    from ._core import CacheInfo

    P = ParamSpec("P")
    R = TypeVar("R")

    class CachedFunction(Protocol[P, R]):
        """What a cache object's decorator returns."""

        __wrapped__: Callable[P, R]

        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...

        def cache_info(self) -> CacheInfo: ...

        def cache_clear(self) -> None: ...

        def clear(self) -> None: ...

        def cache_parameters(self) -> Dict[str, Any]: ...

        def cache_stats(self) -> Dict[str, int]: ...

        def map(self, iterable: Iterable[Any], *, executor: Any = None) -> List[R]: ...

        def starmap(self, iterable: Iterable[Iterable[Any]], *, executor: Any = None) -> List[R]: ...

        # A method: the bound call is not checked against the parameters
        # (as with functools.lru_cache).
        @overload
        def __get__(self, instance: None, owner: Any) -> CachedFunction[P, R]: ...

        @overload
        def __get__(self, instance: object, owner: Any) -> Callable[..., R]: ...

    Decorator = Callable[[Callable[P, R]], CachedFunction[P, R]]
