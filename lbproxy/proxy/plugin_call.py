"""Running a plugin's http_request action (lbproxy.ext.action) for one request.

A plain function runs at once: None lets the request go on, an ext.Response answers it.
An `async def` one returns a coroutine: it runs as a task while the request's rule
evaluation is suspended (the action returns SUSPENDED, as auth_request does), bounded by
the frontend's client timeout; when it ends, the request goes on with the rules after it,
or is answered. If the client leaves first, the task is cancelled. Any exception, a
wrong return value or the timeout answers 500 and is logged (lbproxy.extensions.failed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from lbproxy.ext import Request, Response
from lbproxy.extensions import PluginAction, failed
from lbproxy.http.answers import Answer, error_answer
from lbproxy.http.termination import PLUGIN_FAILED
from lbproxy.routing.actions import ANSWERED, CONTINUE, SUSPENDED

if TYPE_CHECKING:
    from lbproxy.proxy.exchange import Exchange


def run_action(exchange: Exchange, plugin: PluginAction, args: Any) -> int:
    try:
        result = plugin.function(Request(exchange), args)
    except Exception as exc:          # noqa: BLE001 (whatever a plugin raises: 500, logged)
        return _failed(exchange, plugin.name, exc)
    if plugin.is_async:
        exchange.waiting = PluginCall(exchange, plugin.name, result)
        return SUSPENDED
    return _outcome(exchange, plugin.name, result)


def _outcome(exchange: Exchange, name: str, result: object) -> int:
    if result is None:
        return CONTINUE
    if not isinstance(result, Response):
        return _failed(exchange, name, TypeError(
            f"an action returns None or ext.Response, not {type(result).__name__}"))
    exchange.set_termination("L")
    exchange.respond(_answer(result))
    return ANSWERED


def _answer(response: Response) -> Answer:
    body = response.body.encode() if isinstance(response.body, str) else bytes(response.body)
    content_type = b"text/plain"
    headers = []
    for name, value in response.headers:
        if name.lower() == "content-type":
            content_type = value.encode("latin-1")
        elif name.lower() != "content-length":
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
    return Answer(response.status, body, content_type, tuple(headers))


def _failed(exchange: Exchange, name: str, exc: BaseException) -> int:
    failed(name, exc)
    answer_failed(exchange)
    return ANSWERED


def answer_failed(exchange: Exchange) -> None:
    """A plugin failed for `exchange` (and was logged): it gets 500, `plugin-failed`."""
    exchange.set_termination("P", PLUGIN_FAILED)
    exchange.respond(error_answer(500))


class PluginCall:
    """An async action under way for a suspended request: a task, and a timer that
    cancels it when the frontend's client timeout passes (cheaper than wait_for's extra
    task per call)."""

    __slots__ = ("exchange", "name", "task", "timer", "timed_out")

    def __init__(self, exchange: Exchange, name: str, coroutine: Coroutine[Any, Any, Any]
                 ) -> None:
        self.exchange = exchange
        self.name = name
        self.timed_out = False
        loop = asyncio.get_running_loop()
        self.task = loop.create_task(coroutine)
        self.task.add_done_callback(self._done)
        self.timer = loop.call_later(exchange.frontend.timeout_client, self._time_out)

    def cancel(self) -> None:
        """The client left: nothing waits for the result any more."""
        self.timer.cancel()
        self.task.remove_done_callback(self._done)
        self.task.cancel()

    def _time_out(self) -> None:
        self.timed_out = True
        self.task.cancel()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.timer.cancel()
        exchange = self.exchange
        exchange.waiting = None
        if task.cancelled():
            if self.timed_out:
                _failed(exchange, self.name, TimeoutError(
                    f"the action took longer than the frontend's client timeout "
                    f"({exchange.frontend.timeout_client:g} s) and was cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            _failed(exchange, self.name, exc)
            return
        if _outcome(exchange, self.name, task.result()) == CONTINUE:
            exchange.resume_routing()
