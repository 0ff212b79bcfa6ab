"""What the ssl module cannot set on a server context: TLS 1.3 cipher suites and session
ticket keys, set through OpenSSL's own calls with ctypes.

`ssl.SSLContext` offers neither `SSL_CTX_set_ciphersuites` nor the ticket keys
(`SSL_CTX_set_tlsext_ticket_keys`). Both are called on the SSL_CTX* that CPython's
PySSLContext holds right after its object header (3.7 to 3.14), from the libssl the ssl
module itself runs on. That layout is checked once on a throwaway context (the pointer
found must give back the context's own options) before anything is written through it;
where the check fails, contexts keep OpenSSL's defaults.

Session ticket keys: OpenSSL makes random ones per context, so every reload, and every
worker of `global.workers`, would have its own, and a client resuming a session with a
ticket from another one gets a full handshake (a signature, the certificate chain sent
again). Instead each bind's keys derive from one secret per run and the bind's address:
the secret is made at the first TLS context of the process, or handed down by the
supervisor to its workers in `TICKET_SECRET_ENV`, so tickets survive reloads and cross
workers as in nginx (keys made before the fork) and HAProxy (one process), while a ticket
from one bind is no good on another. Like OpenSSL's own keys, the secret lives as long as
the process (the supervisor's, with workers) and is never written to disk.
"""

from __future__ import annotations

import _ssl
import ctypes
import functools
import hashlib
import os
import ssl
import sys

TICKET_SECRET_ENV = "LBPROXY_TLS_TICKET_SECRET"   # hex, from the supervisor to its workers
TICKET_SECRET_SIZE = 32
TICKET_KEYS_SIZE = 80     # key name 16, HMAC secret 32, AES key 32 (OpenSSL 1.1 and later)
_SET_TICKET_KEYS = 59     # SSL_CTRL_SET_TLSEXT_TICKET_KEYS


class _LibSSL:
    """The calls used here, typed, from the libssl the ssl module runs on."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.set_ciphersuites = library.SSL_CTX_set_ciphersuites
        self.set_ciphersuites.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self.set_ciphersuites.restype = ctypes.c_int
        self.ctrl = library.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long
        self.get_options = library.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64


@functools.cache
def _libssl() -> _LibSSL | None:
    """The calls, once the layout is proved on a throwaway context; None where it is not."""
    if not (3, 11) <= sys.version_info[:2] <= (3, 14):
        return None
    try:
        calls = _LibSSL(ctypes.CDLL(_ssl.__file__))   # its libssl's symbols resolve through it
    except (OSError, AttributeError):
        return None
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    probe.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    return calls if calls.get_options(_ssl_ctx_of(probe)) == probe.options else None


def _ssl_ctx_of(context: ssl.SSLContext) -> int:
    """The SSL_CTX* of `context` (see the module's text)."""
    return ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value or 0


def set_ciphersuites(context: ssl.SSLContext, suites: str) -> bool:
    """Order `context`'s TLS 1.3 cipher suites as `suites` ("A:B:C"); False where that
    cannot be done (OpenSSL's order then stays)."""
    calls = _libssl()
    return calls is not None and calls.set_ciphersuites(_ssl_ctx_of(context),
                                                        suites.encode()) == 1


@functools.cache
def ticket_secret() -> bytes:
    """This run's secret: the supervisor's (TICKET_SECRET_ENV, taken out of the environment
    so that no process started later inherits it), else a new one."""
    try:
        secret = bytes.fromhex(os.environ.pop(TICKET_SECRET_ENV, ""))
    except ValueError:
        secret = b""
    return secret if len(secret) == TICKET_SECRET_SIZE else os.urandom(TICKET_SECRET_SIZE)


def share_ticket_keys(context: ssl.SSLContext, scope: str) -> bool:
    """Give `context` the ticket keys of `scope` (its bind's address) in this run; False
    where that cannot be done (the context then keeps OpenSSL's own, its alone)."""
    calls = _libssl()
    if calls is None:
        return False
    keys = hashlib.shake_256(ticket_secret() + b"\0" + scope.encode()).digest(TICKET_KEYS_SIZE)
    buffer = ctypes.create_string_buffer(keys, TICKET_KEYS_SIZE)
    return calls.ctrl(_ssl_ctx_of(context), _SET_TICKET_KEYS, TICKET_KEYS_SIZE, buffer) == 1
