"""What plugins added: actions and balancers by name, for the configuration to accept.

Fetches and converters go into the routing package's own tables (lbproxy.ext puts them
there); actions and balancers are named by keys the configuration loader validates, and
that loader imports nothing of the data plane, so their names live here, in a module
that imports nothing of lbproxy. A failing plugin is reported through `failed`, which
logs its traceback the first time and then counts, so a broken plugin under load writes
one traceback, not thousands.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("lbproxy.plugins")

REPEAT_EVERY = 10.0          # seconds between "still failing" lines of one plugin


@dataclass(frozen=True, slots=True)
class PluginAction:
    name: str
    function: Callable[..., Any]
    is_async: bool
    module: str
    check: Callable[[Any], None] | None     # validates the YAML arguments at load time


ACTIONS: dict[str, PluginAction] = {}
BALANCERS: dict[str, type] = {}      # name -> a subclass of lbproxy.ext.Balancer
FAILURES: dict[str, int] = {}        # plugin name -> exceptions raised so far
_last_said: dict[str, float] = {}


class PluginFailed(Exception):
    """A plugin raised while serving a request: that request is answered 500."""


def failed(name: str, exc: BaseException) -> None:
    """Note that plugin `name` raised `exc`: its traceback the first time, then a count
    at most every REPEAT_EVERY seconds."""
    count = FAILURES[name] = FAILURES.get(name, 0) + 1
    now = time.monotonic()
    if count == 1:
        _last_said[name] = now
        log.error("plugin %r failed: %s", name,
                  "".join(traceback.format_exception(exc)).rstrip())
    elif now - _last_said.get(name, 0.0) >= REPEAT_EVERY:
        _last_said[name] = now
        log.error("plugin %r failed again (%d failures so far): %s: %s", name, count,
                  type(exc).__name__, exc)
