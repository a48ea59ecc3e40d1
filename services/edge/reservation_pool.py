"""Reservations admitted ahead of the calls that will use them.

Admission is one database transaction per call (controldb.money), the largest stage on a
call's path: 75 µs warm, about 190 µs at 50 calls/s on a core that idled between calls.
A busy key's next call almost always has the same worst case as its last (the same model,
no max_tokens or the same one, a prompt of about the same size), so the edge admits that
worst case again as soon as a call has gone on, while the call waits for its upstream, and
keeps the reservation on a shelf for the key's next call. That call takes it from memory.

A refill is a transaction (BEGIN, LIMITS_QUERY, COMMIT) on the edge's event loop, whatever
it admits, so the pool admits several reservations to one (Money.admit_many):
- a busy key's shelf aims to hold the calls the key makes in SHELF_HORIZON_S (from the
  smoothed time between its calls), and is refilled only once it is down to half of that,
  back to full: at 200 calls/s a transaction admits four, where it admitted one per call;
- calls admitted while a refill still waits out its delay add to that refill.

Each reservation on a shelf was admitted by the same rule and the same transaction as any
call (LIMITS_QUERY, decide_admission), so caps and the balance can never be overrun: money
is held before a call is let through, exactly as before. What changes, and why it is
bounded:
- A shelved reservation is held from the account's other calls until it is used or given
  back. A shelf is filled only for a key that made two calls within USE_WITHIN_S, holds at
  most MAX_SHELF, only while the admission left room for HEADROOM_FACTOR times what the
  shelf would hold. A reservation no call took within CLAIM_WITHIN_GAPS of its key's gaps
  between calls (at least CLAIM_WITHIN_MIN_S, at most USE_WITHIN_S) is given back; its row
  says by when (`shelved_until`). A call refused for lack of money is asked again once,
  after this process's shelves for that account are emptied and after the latest
  `shelved_until` of the account's rows, so that no edge refuses a call for the room
  another edge's shelf holds for calls that do not come (edge.admission).
- A call may use a reservation up to WORST_CASE_SLACK larger than its own worst case; it
  is billed what it used (never more than the reservation), and the rest is released when
  it settles, as for every call.
- A change of cap, balance or markup tier reaches a shelved reservation's call at most
  USE_WITHIN_S late, as it would reach a call already in flight.
- A key with an rpm_limit is never shelved for: each of its calls is counted as it comes.
- An edge killed without its shutdown leaves its shelves held until they expire, like the
  calls it had in flight (AIG_RESERVATION_TTL_S).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from controldb import AuthenticatedKey
from controldb.admission import RoomToKeep
from controldb.money import Admission, LimitExceeded, Money, MoneyError
from controldb.ratelimit import RateLimited

from .metrics import GIVEN_BACK_AHEAD, HELD_AHEAD, HELD_AHEAD_NANO_USD, TAKEN_AHEAD

log = logging.getLogger("aig.edge.admission")

# A key whose calls come further apart than this gets no shelf, and a shelved reservation
# is given back if no call took it within this long at most.
USE_WITHIN_S = 2.0
# A shelved reservation is given back once its key has gone this many of its smoothed gaps
# between calls without taking it (a shelf holds at most MAX_SHELF gaps' worth), and not
# before CLAIM_WITHIN_MIN_S: a burst's last refill is back within 50 ms, not 2 s. Another
# edge refused for the room it holds waits that long (edge.admission), and no longer.
CLAIM_WITHIN_GAPS = 32
CLAIM_WITHIN_MIN_S = 0.05
# A shelf holds at most this many reservations.
MAX_SHELF = 16
# A busy key's shelf aims to hold the calls it makes in this long (at least one; more when
# its calls find it empty), and is refilled once down to half of that: a refill admits the
# calls of about SHELF_HORIZON_S / 2 in one transaction. Longer batches more and holds more.
SHELF_HORIZON_S = 0.04
# The time between a key's calls is smoothed over about this many calls.
GAP_SMOOTHING = 8
# Shelve only while the admission left this many times the shelf's worth of room.
HEADROOM_FACTOR = 8
# A call may take a reservation whose worst case is larger than its own by up to 1/8.
WORST_CASE_SLACK_DIVISOR = 8
# Quiet keys' shelves are forgotten once this many keys have one.
PRUNE_AT = 1024
# The refill waits a random time in this range: long enough that the call which set it off
# has gone upstream (with the router in another process on the same core, a refill 1 ms
# after the call took that core from the router while it was still sending the call on;
# the router's part takes ~1.5 ms on a slow core), and random so that calls arriving at a
# fixed period do not find every refill in their way (at 200 calls/s a fixed 5 ms did).
REFILL_DELAY_S = (0.002, 0.006)


@dataclass(slots=True, eq=False)
class _DelayedRefill:
    """A refill waiting out its REFILL_DELAY_S: nothing admitted yet, so it can be called off."""

    count: int
    handle: asyncio.TimerHandle = field(init=False)  # set as soon as the timer is armed


@dataclass(slots=True)
class _Shelf:
    account_id: str
    key_id: str
    worst_case_nano_usd: int  # upstream nano-USD: what each reservation on it was admitted for
    # Each with the monotonic time by which a call must take it, or it is given back.
    reservations: deque[tuple[Admission, float]] = field(default_factory=deque)
    refilling: int = 0  # reservations being admitted for it right now
    refills: set[asyncio.Task[None]] = field(default_factory=set)
    # The refill still waiting out its delay: the calls admitted meanwhile add to it, so a
    # busy key's reservations are admitted several to a transaction.
    delayed: _DelayedRefill | None = None
    # The one timer that gives back what goes stale (not one per reservation), and the
    # time it is set for, on the pool's clock.
    expiry: asyncio.TimerHandle | None = None
    expiry_at: float = 0.0
    # How many it aims to hold at least: doubled when calls find it empty while it refills,
    # halved when reservations on it go unused.
    size: int = 1
    last_call: float = -USE_WITHIN_S - 1.0  # monotonic time of the key's last admitted call
    gap_s: float | None = None  # the smoothed time between its calls, while it is busy


class ReservationPool:
    def __init__(
        self,
        money: Money,
        *,
        use_within_s: float = USE_WITHIN_S,
        max_shelf: int = MAX_SHELF,
        horizon_s: float = SHELF_HORIZON_S,
        refill_delay_s: tuple[float, float] = REFILL_DELAY_S,
        claim_within_min_s: float = CLAIM_WITHIN_MIN_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`horizon_s` is SHELF_HORIZON_S; 0 sizes shelves by their empty finds alone.
        `refill_delay_s` is REFILL_DELAY_S, the range a refill's delay is drawn from.
        `claim_within_min_s` is CLAIM_WITHIN_MIN_S; `use_within_s` or more keeps every
        shelved reservation for `use_within_s`, whatever its key's pace."""
        self._money = money
        self._use_within_s = use_within_s
        self._claim_within_min_s = min(claim_within_min_s, use_within_s)
        self._max_shelf = max_shelf
        self._horizon_s = horizon_s
        self._refill_delay_s = refill_delay_s
        self._clock = clock
        self._shelves: dict[str, _Shelf] = {}  # by key id
        self._prune_at = PRUNE_AT
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    @property
    def keys(self) -> int:
        """How many keys this process keeps a shelf for (full or empty)."""
        return len(self._shelves)

    def take(self, key: AuthenticatedKey, worst_case_nano_usd: int) -> Admission | None:
        """A shelved reservation that covers this worst case, or None."""
        shelf = self._shelves.get(key.key_id)
        if shelf is None or not _covers(shelf.worst_case_nano_usd, worst_case_nano_usd):
            return None
        now = self._clock()
        while shelf.reservations:
            admission, claim_by = shelf.reservations.popleft()
            _unshelved(admission)
            if claim_by > now:
                TAKEN_AHEAD.inc()
                return admission
            self._give_back(admission)
        if shelf.refilling:
            # Calls come faster than one reservation ahead keeps up with: hold more.
            shelf.size = min(self._max_shelf, shelf.size * 2)
        return None

    def admitted(
        self, key: AuthenticatedKey, worst_case_nano_usd: int, admission: Admission
    ) -> None:
        """After each admitted call of `key`: refill its shelf if the key is busy and the
        account has room to spare."""
        if self._closed or admission.rate is not None:
            return
        now = self._clock()
        shelf = self._shelves.get(key.key_id)  # a key never moves to another account
        if shelf is None:
            if len(self._shelves) >= self._prune_at:
                self._prune(now)
            shelf = _Shelf(key.account_id, key.key_id, worst_case_nano_usd, last_call=now)
            self._shelves[key.key_id] = shelf
            return  # one call is not yet a busy key
        gap = now - shelf.last_call
        shelf.last_call = now
        busy = gap <= self._use_within_s
        if busy:
            previous = shelf.gap_s
            shelf.gap_s = gap if previous is None else previous + (gap - previous) / GAP_SMOOTHING
        else:
            shelf.gap_s = None  # a key that went quiet starts its pace afresh
        if not _covers(shelf.worst_case_nano_usd, worst_case_nano_usd):
            if shelf.reservations or shelf.refilling:
                return  # a call of another size: keep serving the shelf's own
            shelf.worst_case_nano_usd = worst_case_nano_usd
        if not busy:
            return
        full = self._full_shelf(shelf)
        held = len(shelf.reservations) + shelf.refilling
        if held > full // 2:
            return  # not yet down to half: one refill later admits more at once
        wanted = full - held
        # As many as this admission's room allows beside what the shelf holds; the refill's
        # transaction asks the same of the room it finds then.
        wanted = min(wanted, RoomToKeep(HEADROOM_FACTOR, held).room_for(admission))
        if wanted <= 0:
            return
        shelf.refilling += wanted
        if shelf.delayed is not None:
            shelf.delayed.count += wanted
            return
        delayed = _DelayedRefill(wanted)
        delay = random.uniform(*self._refill_delay_s)
        delayed.handle = asyncio.get_running_loop().call_later(
            delay, self._start_refill, shelf, delayed
        )
        shelf.delayed = delayed

    def _full_shelf(self, shelf: _Shelf) -> int:
        """How many the shelf aims to hold: the key's calls within the horizon at its pace,
        or its `size` if more."""
        paced = 0
        if shelf.gap_s is not None and self._horizon_s > 0:
            paced = int(self._horizon_s / max(shelf.gap_s, 1e-6))
        return min(self._max_shelf, max(shelf.size, paced))

    def _claim_within(self, shelf: _Shelf) -> float:
        """How long a reservation admitted now may wait on the shelf for a call: CLAIM_WITHIN_GAPS
        of the key's gaps, within [claim_within_min_s, use_within_s]."""
        paced = self._use_within_s if shelf.gap_s is None else CLAIM_WITHIN_GAPS * shelf.gap_s
        return min(self._use_within_s, max(self._claim_within_min_s, paced))

    def _prune(self, now: float) -> None:
        """Forgets the shelves of keys gone quiet, so a process that has seen many keys over
        its life keeps only the busy ones."""
        quiet_before = now - self._use_within_s
        for key_id, shelf in list(self._shelves.items()):
            if not (shelf.reservations or shelf.refilling) and shelf.last_call < quiet_before:
                del self._shelves[key_id]
        self._prune_at = max(PRUNE_AT, 2 * len(self._shelves))

    async def give_back_account(self, account_id: str) -> bool:
        """Releases every shelved reservation of `account_id`, once the refills under way
        have ended (one may have just been admitted); True if there were any. Refills still
        waiting to start are called off: one admitted while the caller retries could take
        the very room the caller was given back."""
        shelves = [shelf for shelf in self._shelves.values() if shelf.account_id == account_id]
        for shelf in shelves:
            if shelf.delayed is not None:
                shelf.delayed.handle.cancel()
                shelf.refilling -= shelf.delayed.count
                shelf.delayed = None
        refills = [task for shelf in shelves for task in shelf.refills]
        if refills:
            await asyncio.gather(*refills, return_exceptions=True)
        released = [admission for shelf in shelves for admission, _ in _drain(shelf.reservations)]
        for admission in released:
            await self._release(admission)
        return bool(released)

    async def refills_settled(self) -> None:
        """Returns once no refill is waiting out its delay or running: what a caller counting
        the transactions (a test, a benchmark) waits for."""
        while True:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            elif any(shelf.delayed is not None for shelf in self._shelves.values()):
                await asyncio.sleep(0.001)
            else:
                return

    async def aclose(self) -> None:
        """Stops refilling, waits for refills under way, and gives every reservation back."""
        self._closed = True
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for shelf in self._shelves.values():
            if shelf.expiry is not None:
                shelf.expiry.cancel()
            for admission, _ in _drain(shelf.reservations):
                await self._release(admission)
        self._shelves.clear()

    # -- filling and emptying ------------------------------------------------------------

    def _start_refill(self, shelf: _Shelf, delayed: _DelayedRefill) -> None:
        shelf.delayed = None
        count = delayed.count
        if self._closed:
            shelf.refilling -= count
            return
        task = self._track(self._refill(shelf, count))
        shelf.refills.add(task)
        task.add_done_callback(shelf.refills.discard)

    async def _refill(self, shelf: _Shelf, count: int) -> None:
        # Their rows' shelved_until is the transaction's time plus this; the shelf gives
        # them back by the same time counted from before it, so never after the row says.
        claim_within = self._claim_within(shelf)
        claim_by = self._clock() + claim_within
        try:
            try:
                # One transaction for them all; it may grant fewer than asked, or none.
                # Only while the room left is HEADROOM_FACTOR times what the shelf would
                # hold: none is admitted only to be given back at once.
                admissions = await self._money.admit_many(
                    shelf.account_id,
                    shelf.key_id,
                    shelf.worst_case_nano_usd,
                    count,
                    RoomToKeep(
                        HEADROOM_FACTOR,
                        len(shelf.reservations),
                        shelved_for=timedelta(seconds=claim_within),
                    ),
                )
            except (LimitExceeded, RateLimited, MoneyError):
                return  # a cap, the balance, the rate, the key gone: the calls will hear of it
            except Exception as error:  # the database: the calls admit on their own
                log.warning("reserving ahead failed: %s", type(error).__name__)
                return
            for taken, admission in enumerate(admissions):
                # While this refill counts in `refilling`, the shelf keeps its worst case
                # and is not pruned. admit_many left the room (and admitted nothing for a
                # key with an rpm_limit); what may have changed while it ran is closing, or
                # the shelf itself (another refill's reservations on it).
                room = RoomToKeep(HEADROOM_FACTOR, len(shelf.reservations))
                stale = self._closed or not room.kept_by(admission, 1)
                if stale:
                    for unused in admissions[taken:]:
                        await self._release(unused)
                    return
                shelf.reservations.append((admission, claim_by))
                HELD_AHEAD.inc()
                HELD_AHEAD_NANO_USD.inc(admission.amount_nano_usd)
                shelf.refilling -= 1
                count -= 1
                self._expire_at(shelf, claim_by)
        finally:
            shelf.refilling -= count

    def _expire(self, shelf: _Shelf) -> None:
        """Gives back the reservations nobody took in time, shrinks the shelf, and comes
        back when the next left would go stale. A refill's reservations may have to be
        taken sooner than an earlier one's (its key's pace quickened), so every one is
        looked at: a shelf holds at most MAX_SHELF."""
        now = self._clock()
        kept = [(admission, by) for admission, by in shelf.reservations if by > now]
        if len(kept) < len(shelf.reservations):
            for admission, by in shelf.reservations:
                if by <= now:
                    _unshelved(admission)
                    self._give_back(admission)
            shelf.reservations = deque(kept)
            shelf.size = max(1, shelf.size // 2)
        shelf.expiry = None
        if kept and not self._closed:
            self._expire_at(shelf, min(by for _, by in kept))

    def _expire_at(self, shelf: _Shelf, when: float) -> None:
        """Has the shelf's timer look for stale reservations at `when`, unless it already
        does so sooner."""
        if shelf.expiry is not None:
            if shelf.expiry_at <= when:
                return
            shelf.expiry.cancel()
        wait = max(0.0, when - self._clock())
        shelf.expiry = asyncio.get_running_loop().call_later(wait, self._expire, shelf)
        shelf.expiry_at = when

    def _give_back(self, admission: Admission) -> None:
        self._track(self._release(admission))

    async def _release(self, admission: Admission) -> None:
        GIVEN_BACK_AHEAD.inc()
        try:
            await self._money.release(admission.reservation_id)
        except Exception as error:  # it expires on its own (AIG_RESERVATION_TTL_S)
            log.warning("releasing a reservation held ahead failed: %s", type(error).__name__)

    def _track(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _covers(shelved_worst_case: int, worst_case: int) -> bool:
    """Whether a reservation admitted for `shelved_worst_case` may hold a call whose worst
    case is `worst_case`: at least as large, by at most 1/WORST_CASE_SLACK_DIVISOR."""
    return worst_case <= shelved_worst_case <= worst_case + worst_case // WORST_CASE_SLACK_DIVISOR


def _drain(reservations: deque[tuple[Admission, float]]) -> list[tuple[Admission, float]]:
    drained = list(reservations)
    reservations.clear()
    for admission, _ in drained:
        _unshelved(admission)
    return drained


def _unshelved(admission: Admission) -> None:
    """A reservation left its shelf (taken by a call, or about to be given back)."""
    HELD_AHEAD.dec()
    HELD_AHEAD_NANO_USD.dec(admission.amount_nano_usd)
