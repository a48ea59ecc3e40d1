"""Process-wide tuning every service applies once it has started."""

from __future__ import annotations

import asyncio
import gc

# Young-generation collections every 50,000 net allocations instead of 700: a request
# allocates thousands of short-lived objects, and at the default the collector ran several
# times per call, each time walking the older generations' bookkeeping.
GEN0_THRESHOLD = 50_000

# ...and at least this often. At 50,000 net allocations a service can go a long time without
# a collection (a router at 100 calls/s: over eight minutes; only net allocations count, and
# a call's objects are mostly freed before it ends), while objects in reference cycles wait
# for one: a stream its client cancels leaves its CancelledError, tracebacks and frames in
# one cycle (about 90 objects each, in the edge). A timed collection of the two young
# generations looks only at what was allocated since the last one, a few hundred objects at
# these rates.
YOUNG_COLLECTION_EVERY_S = 10.0

# ...and the whole heap not frozen at start-up this often. An object that lived through two
# young collections (a stream longer than ~20 s) has moved to the oldest generation, and a
# cycle through it (that stream, cancelled by its client) survives every young collection;
# the allocation-driven full collection comes after a hundred young ones, in practice never.
FULL_COLLECTION_EVERY_S = 600.0


def freeze_startup_heap() -> None:
    """Moves everything alive after start-up (modules, the catalog, compiled SQL, the
    framework's routing tables) out of the collector's sight, and collects less often.

    Under load a full collection walked that whole heap again and again: in billing it was
    ~40% of the CPU (py-spy). Frozen objects are never collected, which is right for
    objects that live as long as the process; cycles made later are still collected (see
    `TimedCollections`).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


class TimedCollections:
    """Collects the two young generations every `young_every_s`, and everything not frozen
    every `full_every_s`, on the running event loop, so garbage in cycles is freed within
    those times however few net allocations a service makes. On the loop, not a thread:
    finalizers a collection runs (an unclosed transport's) expect the loop's thread."""

    def __init__(
        self,
        young_every_s: float = YOUNG_COLLECTION_EVERY_S,
        full_every_s: float = FULL_COLLECTION_EVERY_S,
    ) -> None:
        self._young_every_s = young_every_s
        self._full_every_s = full_every_s
        self._full_due = 0.0
        self._next: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._full_due = loop.time() + self._full_every_s
        self._next = loop.call_later(self._young_every_s, self._collect)

    def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() >= self._full_due:
            gc.collect()
            self._full_due = loop.time() + self._full_every_s
        else:
            gc.collect(1)
        self._next = loop.call_later(self._young_every_s, self._collect)

    def stop(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
