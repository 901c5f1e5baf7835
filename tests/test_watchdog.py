"""The watchdog behind every delivery's deadline: one thread, callbacks at their time."""

import os
import threading
import time

import pytest

from emails.deadline import Watchdog

pytestmark = pytest.mark.no_database  # the PostgreSQL pass leaves these out


def test_callbacks_come_in_the_order_of_their_deadlines_and_a_cancelled_one_never():
    watchdog, called, done = Watchdog(), [], threading.Event()
    watchdog.arm(0.3, lambda: (called.append("late"), done.set()))
    cancelled = watchdog.arm(0.1, lambda: called.append("cancelled"))
    watchdog.arm(0.2, lambda: called.append("second"))
    watchdog.arm(0.05, lambda: called.append("first"))
    watchdog.cancel(cancelled)
    assert done.wait(10)
    assert called == ["first", "second", "late"]


def test_a_failing_callback_does_not_stop_later_ones():
    watchdog, done = Watchdog(), threading.Event()
    watchdog.arm(0.01, lambda: 1 / 0)
    watchdog.arm(0.05, done.set)
    assert done.wait(10)


def test_many_cancelled_deadlines_are_dropped_not_kept():
    watchdog = Watchdog()
    for _ in range(1000):  # sends that end long before their deadline
        watchdog.cancel(watchdog.arm(3600, lambda: None))
    assert len(watchdog._due) < 200


def test_a_forked_child_gets_a_watchdog_of_its_own():
    watchdog, done = Watchdog(), threading.Event()
    watchdog.arm(0.01, done.set)
    assert done.wait(10)  # the parent's thread runs
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here; arming starts its own
        fired = threading.Event()
        watchdog.arm(0.01, fired.set)
        os._exit(0 if fired.wait(10) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    started = time.monotonic()
    watchdog.arm(0.01, done.clear)
    while done.is_set() and time.monotonic() - started < 10:
        time.sleep(0.01)
    assert not done.is_set()  # and the parent's still works
