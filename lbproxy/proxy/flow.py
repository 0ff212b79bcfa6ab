"""Back-pressure on one transport: reading paused for any of several reasons.

Each side of an exchange may need the other to stop reading: a pipelined request waits
for the one before it, a server does not take the request body as fast as the client
sends it, a client does not read the response as fast as the server sends it. Each
reason is a bit; reading stops at the first and resumes when the last one clears, so
the reasons never undo each other (uvicorn's flow_control.py, HAProxy's channel flags).
"""

from __future__ import annotations

import asyncio

# Why a client connection stops reading.
PIPELINE = 1        # a pipelined request waits for the one before it
SERVER_SLOW = 2     # the server does not read the request body fast enough
BODY_BUFFERED = 4   # request body held while no server connection is ready
HELD = 8            # bytes after an Upgrade request wait for the server's answer
# Why a server connection stops reading.
CLIENT_SLOW = 16    # the client does not read the response fast enough


class FlowControl:
    __slots__ = ("transport", "paused")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.paused = 0                 # reasons, as bits

    def pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def resume(self, reason: int) -> None:
        was = self.paused
        self.paused = was & ~reason
        if was and not self.paused and self.transport is not None:
            self.transport.resume_reading()

    def clear(self) -> None:
        """Forget every reason (a pooled connection taken up by another exchange)."""
        if self.paused and self.transport is not None:
            self.transport.resume_reading()
        self.paused = 0
