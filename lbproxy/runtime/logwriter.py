"""The access log's writer thread: the event loop hands it chunks and never waits for it.

A write to stdout blocks when the pipe behind it is full (a log driver or journald that
stalled, a reader that stopped reading); a write to a file blocks on a slow disk. Done on
the event loop, either would freeze every connection and even SIGTERM. Here only this
thread waits. What queues behind it is bounded (`limit` bytes): a chunk that does not fit
is dropped and its lines counted, so the proxy keeps serving and /metrics says what was
lost. Each counter has one writer (the loop or the thread), so no lock is needed.
"""

from __future__ import annotations

import os
import threading
from queue import SimpleQueue

_STOP = (b"", 0, -1)     # (data, lines, fd): fd None for a chunk, else a new target


class LogWriter:
    def __init__(self, fd: int, owned: bool, limit: int) -> None:
        self.limit = limit
        self.queued = 0          # bytes handed to the thread (the loop's count)
        self.settled = 0         # bytes written or given up (the thread's count)
        self.dropped = 0         # lines dropped because too much was waiting (the loop's)
        self.failed = 0          # lines the target refused, e.g. EPIPE (the thread's)
        self.last_error = ""     # why the target last refused a write (the thread's)
        self.closed = False      # lines written after close are dropped
        self._fd = fd
        self._owned = owned      # a file we opened, closed when replaced; not stdout/stderr
        self._chunks: SimpleQueue[tuple[bytes, int, int | None]] = SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="lbproxy-access-log",
                                         daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self.queued - self.settled

    def write(self, data: bytes, lines: int) -> bool:
        """Queue `data` (`lines` lines); False, and the lines counted, when it does not fit."""
        if self.closed or self.queued - self.settled + len(data) > self.limit:
            self.dropped += lines
            return False
        self.queued += len(data)
        self._chunks.put((data, lines, None))
        return True

    def switch(self, fd: int) -> None:
        """After rotation: what is queued goes to the old file, later chunks to `fd`."""
        self._chunks.put((b"", 0, fd))

    def close(self, timeout: float) -> bool:
        """Write what is queued, waiting at most `timeout` seconds; False when the target
        did not take it in time (the thread is left to die with the process)."""
        if not self.closed:
            self.closed = True
            self._chunks.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        get = self._chunks.get
        while True:
            data, lines, fd = get()
            if fd is not None:
                if fd < 0:
                    self._release()
                    return
                self._release()
                self._fd, self._owned = fd, True
                continue
            self._write_all(data, lines)
            self.settled += len(data)

    def _write_all(self, data: bytes, lines: int) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view):]
            except InterruptedError:
                continue
            except OSError as exc:
                self.failed += lines
                self.last_error = exc.strerror or str(exc)
                return

    def _release(self) -> None:
        if self._owned:
            os.close(self._fd)
