"""Sleeps that end when they should: the sandbox's first-byte latency and its stream pacing.

The sandbox is the fixed-latency upstream every gateway overhead in `bench/` is measured
against, so its latency must not depend on who calls it. asyncio's timers are only as fine
as the event loop's clock: uvloop counts whole milliseconds, so a 20 ms `asyncio.sleep`
ends anywhere from 19.3 to 20.8 ms later, and asyncio's own loop rounds every wait up to
the next millisecond. Where in that window a sleep ends depends on how its start lines up
with the loop's clock, which depends on the traffic: at 50 calls/s the sandbox slept
0.2 ms longer for direct calls than for the gateway's, at 200/s 0.1 ms shorter, and every
overhead measured against it moved by as much (bench/README.md).

On Linux one timerfd per event loop, armed at the earliest pending deadline on the
monotonic clock in nanoseconds, wakes the loop instead. The kernel's timer slack (50 µs
for an ordinary thread) is what is left. Elsewhere, `asyncio.sleep`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import heapq
import itertools
import os
import time
import weakref

_CLOCK_MONOTONIC = 1  # the clock of time.monotonic_ns
_TFD_TIMER_ABSTIME = 1
# Linux defines TFD_NONBLOCK and TFD_CLOEXEC as O_NONBLOCK and O_CLOEXEC.
_TFD_FLAGS = os.O_NONBLOCK | os.O_CLOEXEC
_NS_PER_S = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _load_timerfd() -> ctypes.CDLL | None:
    # Python has os.timerfd_create only from 3.13; the C library has had it since glibc 2.8.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.timerfd_settime.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        ]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_timerfd()


def _raise_errno(call: str) -> None:
    errno = ctypes.get_errno()
    raise OSError(errno, f"{call}: {os.strerror(errno)}")


class _DeadlineTimer:
    """Every sleep on one event loop: a heap of deadlines and one timerfd armed at the first.

    Only its pending sleeps' futures refer to its loop (the loop holds the timer, through
    its reader), so once none is pending the registry below can forget both together.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, libc: ctypes.CDLL) -> None:
        self._libc = libc
        fd = libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_FLAGS)
        if fd < 0:
            _raise_errno("timerfd_create")
        self.fd: int = fd
        # (deadline in ns, order of arrival, the sleeper's future)
        self._pending: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._armed_at: int | None = None
        try:
            loop.add_reader(fd, self._expired)
        except BaseException:
            os.close(fd)
            raise

    async def sleep_until(self, deadline_ns: int) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._pending, (deadline_ns, next(self._order), woken))
        if self._armed_at is None or deadline_ns < self._armed_at:
            self._arm(deadline_ns)
        try:
            await woken
        except asyncio.CancelledError:
            # Its future holds the loop: left in the heap it would keep a loop shut down
            # mid-sleep alive, with the timer's fd. Cancellations are rare (a client
            # gone mid-stream), so the heap is rebuilt, and the timer left armed: an
            # expiry with nothing due re-arms for what is.
            self._pending = [entry for entry in self._pending if entry[2] is not woken]
            heapq.heapify(self._pending)
            raise

    def _arm(self, deadline_ns: int) -> None:
        # An absolute deadline already past fires at once; a zero one would disarm, and
        # the monotonic clock is never zero.
        spec = _Itimerspec()
        spec.it_value.tv_sec, spec.it_value.tv_nsec = divmod(deadline_ns, _NS_PER_S)
        if self._libc.timerfd_settime(self.fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None):
            _raise_errno("timerfd_settime")
        self._armed_at = deadline_ns

    def _expired(self) -> None:
        # The expiry count: reading it clears the fd's readiness. None to read when the
        # timer was re-armed between its expiry and this callback.
        with contextlib.suppress(BlockingIOError):
            os.read(self.fd, 8)
        now = time.monotonic_ns()
        while self._pending and self._pending[0][0] <= now:
            woken = heapq.heappop(self._pending)[2]
            if not woken.done():
                woken.set_result(None)
        self._armed_at = None
        if self._pending:
            self._arm(self._pending[0][0])


_timers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DeadlineTimer | None] = (
    weakref.WeakKeyDictionary()
)


def _timer_for(loop: asyncio.AbstractEventLoop) -> _DeadlineTimer | None:
    try:
        return _timers[loop]
    except KeyError:
        pass
    timer: _DeadlineTimer | None = None
    if _libc is not None:
        try:
            timer = _DeadlineTimer(loop, _libc)
        except (OSError, NotImplementedError):
            timer = None  # no timerfd here, or a loop without add_reader
        else:
            weakref.finalize(loop, os.close, timer.fd)
    _timers[loop] = timer
    return timer


async def precise_sleep(seconds: float) -> None:
    """Returns no sooner than `seconds` from now, later only by the kernel's timer slack and
    the time the loop takes to get to it (on Linux; where there is no timerfd, as
    `asyncio.sleep` does)."""
    deadline_ns = time.monotonic_ns() + round(seconds * _NS_PER_S)
    timer = _timer_for(asyncio.get_running_loop())
    if timer is None:
        await asyncio.sleep(seconds)
        return
    await timer.sleep_until(deadline_ns)
