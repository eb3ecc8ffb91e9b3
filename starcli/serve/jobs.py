"""The server's requests, run one after another on one thread that owns the model.

A handler submits a function of ``emit``; the worker thread runs it when the requests before it
are done, and the handler reads the function's events as they come, then its result or error.
Requests queue rather than batch: one model and one set of ranks answer one request at a time.
A ticket whose client went away is cancelled: skipped while it waits, stopped at the next token
(or pass of phase 1) while it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from .. import events
from ..errors import Cancelled, RunError, StarcliError, one_line


class Ticket:
    """One request's place in the queue: its events, its end, and its cancel flag."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancel_flag = threading.Event()

    def cancel(self) -> None:
        self.cancel_flag.set()

    @property
    def cancelled(self) -> bool:
        return self.cancel_flag.is_set()

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed: nobody is listening any more
            pass

    def emit(self, event: events.Event) -> None:
        self._put(("event", event))

    async def stream(self) -> AsyncIterator[events.Event]:
        """The request's events, then its result: returned as the last item ``("result", value)``;
        a failure is raised (``StarcliError``)."""
        while True:
            kind, value = await self.queue.get()
            if kind == "event":
                yield value
            elif kind == "error":
                raise value
            else:
                yield ("result", value)
                return


class JobQueue:
    def __init__(self, before_each: Callable[[Ticket], None] | None = None):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="starcli-model")
        self.before_each = before_each  # tells the executor which ticket's cancel flag to watch
        self.waiting = 0
        self.closing = False

    def submit(self, work: Callable[[events.Emit], Any]) -> Ticket:
        """Queue ``work(emit)``; its events, result or error arrive on the returned ticket."""
        ticket = Ticket(asyncio.get_running_loop())
        if self.closing:
            raise Cancelled("the server is stopping")
        self.waiting += 1
        self.pool.submit(self._run, ticket, work)
        return ticket

    def _run(self, ticket: Ticket, work: Callable[[events.Emit], Any]) -> None:
        self.waiting -= 1
        try:
            if ticket.cancelled or self.closing:
                raise Cancelled("the request was cancelled" if ticket.cancelled else "the server is stopping")
            if self.before_each is not None:
                self.before_each(ticket)
            ticket._put(("result", work(ticket.emit)))
        except StarcliError as exc:
            ticket._put(("error", exc))
        except Exception as exc:  # noqa: BLE001 - a defect, still reported to the request, never fatal
            ticket._put(("error", RunError(f"internal error: {one_line(exc)}")))

    def close(self, cancel_running: Callable[[], None] | None = None) -> None:
        """Refuse new requests, cancel those waiting, and wait for the running one."""
        self.closing = True
        if cancel_running is not None:
            cancel_running()
        self.pool.shutdown(wait=True, cancel_futures=False)
