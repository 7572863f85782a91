"""One owner of SIGTERM and SIGINT per event loop, shared by every run loop of keel.

``loop.add_signal_handler`` keeps one handler per signal: when a program runs
a :class:`~keel.service.Service` and a :class:`~keel.schedule.Scheduler`
together, whichever installed its handler last would get the signal and the
other would keep running. Here each run loop subscribes a callback instead;
the first subscription installs the loop's handlers, a signal calls every
subscriber in order, and the last one to leave removes the handlers (SIGINT
then raises ``KeyboardInterrupt`` again, as before).

Imports nothing of keel: every layer may use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import weakref
from collections.abc import Callable, Iterator

__all__ = ["STOP_SIGNALS", "on_stop_signal"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that ask a keel process to stop cleanly."""

log = logging.getLogger("keel.signals")

Callback = Callable[[signal.Signals], object]
_subscribers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Callback]] = (
    weakref.WeakKeyDictionary()
)


@contextlib.contextmanager
def on_stop_signal(callback: Callback) -> Iterator[bool]:
    """Call ``callback(signal)`` on SIGTERM and SIGINT while the block runs.

    Every subscriber of the running loop is called for each signal, so all the
    run loops of one program stop together. Yields whether the handlers could
    be installed (False off the main thread or on platforms without them).
    """
    loop = asyncio.get_running_loop()
    callbacks = _subscribers.setdefault(loop, [])
    installed = bool(callbacks) or _install(loop)
    if installed:
        callbacks.append(callback)
    try:
        yield installed
    finally:
        if installed:
            callbacks.remove(callback)
            if not callbacks:
                _uninstall(loop)


def _install(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, _dispatch, loop, sig)
    except (NotImplementedError, RuntimeError, ValueError):
        _uninstall(loop)
        return False
    return True


def _uninstall(loop: asyncio.AbstractEventLoop) -> None:
    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(sig)


def _dispatch(loop: asyncio.AbstractEventLoop, sig: signal.Signals) -> None:
    for callback in list(_subscribers.get(loop, ())):
        try:
            callback(sig)
        except Exception:  # one subscriber's bug must not keep the others running
            log.exception("a stop-signal subscriber failed")
