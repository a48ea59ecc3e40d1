"""The catalog in force, replaced while the service runs when its file changes.

Both the edge and the router hold a `LiveCatalog`. A change to the file (seen by polling
its modification time, or at once on SIGHUP) is loaded and validated completely first —
the router also resolves every provider row against its types — and only then swapped in.
A file that fails validation is refused with a log line naming the defect, and the old
catalog keeps serving. A call reads `current` once and keeps that version to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from .models import Catalog, configured_catalog_path, load_catalog

T = TypeVar("T")
Found = TypeVar("Found")
log = logging.getLogger("catalog")

# How often the file's modification time is checked; a stat() is microseconds.
DEFAULT_POLL_S = 2.0


class LiveCatalog(Generic[T]):
    """Holds what `build` made of the catalog file, rebuilt when the file changes."""

    def __init__(self, build: Callable[[Catalog], T], path: Path | None = None) -> None:
        self._build = build
        self.path = path if path is not None else configured_catalog_path()
        self._stamp = self._file_stamp()
        self.current: T = build(load_catalog(self.path))
        self.version = 1
        self._fixed = False

    @classmethod
    def fixed(cls, value: T) -> LiveCatalog[T]:
        """A holder that never reloads (for tests and tools)."""
        live: LiveCatalog[T] = cls.__new__(cls)
        live.current, live.version, live.path = value, 1, Path()
        live._stamp = None
        live._fixed = True
        return live

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def reload(self) -> bool:
        """Loads the file again; True if it was valid and is now in force."""
        self._stamp = self._file_stamp()
        try:
            built = self._build(load_catalog(self.path))
        except (OSError, ValueError) as exc:
            log.error("catalog reload refused, the previous catalog stays in force: %s", exc)
            return False
        self.current = built
        self.version += 1
        log.info("catalog reloaded from %s (version %d)", self.path, self.version)
        return True

    def reload_if_changed(self) -> bool:
        if self._fixed or self._file_stamp() == self._stamp:
            return False
        return self.reload()

    def find(self, lookup: Callable[[T], Found | None]) -> tuple[T, Found | None]:
        """`lookup` in the catalog in force; if it finds nothing and the file changed since
        the last poll, in the file's catalog. The edge and the router poll on their own, so
        without this a name just added to the file could pass one and be a 404 at the other
        until its next poll. A miss costs one stat()."""
        current = self.current
        found = lookup(current)
        if found is None and self.reload_if_changed():
            current = self.current
            found = lookup(current)
        return current, found

    async def watch(self, poll_s: float = DEFAULT_POLL_S) -> None:
        """Reloads on SIGHUP and whenever the file changes; runs until cancelled."""
        hangup = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Off the main thread (in-process tests) there is no signal handler; polling works.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, hangup.set)
        while True:
            try:
                await asyncio.wait_for(hangup.wait(), timeout=poll_s)
            except TimeoutError:
                self.reload_if_changed()
                continue
            hangup.clear()
            self.reload()


def poll_interval_from_env(env: dict[str, str] | None = None) -> float:
    values = os.environ if env is None else env
    return float(values.get("AIG_CATALOG_POLL_S", str(DEFAULT_POLL_S)))
