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


def freeze_startup_heap() -> None:
    """Moves everything alive after start-up (modules, the catalog, compiled SQL, the
    framework's routing tables) out of the collector's sight, and collects less often.

    Under load a full collection walked that whole heap again and again: in billing it was
    ~40% of the CPU (py-spy). Frozen objects are never collected, which is right for
    objects that live as long as the process; cycles made later are still collected (see
    `YoungCollections`).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)


class YoungCollections:
    """Collects the young generations every `interval_s` on the running event loop, so
    garbage in cycles is freed within that time however few net allocations a service
    makes. On the loop, not a thread: finalizers the collection runs (an unclosed
    transport's) expect the loop's thread."""

    def __init__(self, interval_s: float = YOUNG_COLLECTION_EVERY_S) -> None:
        self._interval_s = interval_s
        self._next: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._next = asyncio.get_running_loop().call_later(self._interval_s, self._collect)

    def _collect(self) -> None:
        gc.collect(1)
        self.start()

    def stop(self) -> None:
        if self._next is not None:
            self._next.cancel()
            self._next = None
