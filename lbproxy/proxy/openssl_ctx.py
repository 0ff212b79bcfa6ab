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
again). Instead each bind's keys derive from one secret per run, the bind's address and
the hour: the secret is made at the first TLS context of the process, or handed down by
the supervisor to its workers in `TICKET_SECRET_ENV`, so tickets survive reloads and cross
workers as in nginx (keys made before the fork) and HAProxy (one process), while a ticket
from one bind is no good on another. The keys change every TICKET_KEY_LIFETIME, at the same
wall-clock moment in every worker (`rotate_ticket_keys`, which the engine calls): a TLS 1.2
ticket carries its session's master secret, so whoever learns a key can read every
recorded session resumed with it, and a key that lived as long as the process would put
months of traffic behind one secret. A ticket from before the change gets a full
handshake. The secret itself is never written to disk.
"""

from __future__ import annotations

import _ssl
import ctypes
import functools
import hashlib
import os
import ssl
import sys
import time
import weakref

TICKET_SECRET_ENV = "LBPROXY_TLS_TICKET_SECRET"   # hex, from the supervisor to its workers
TICKET_SECRET_SIZE = 32
TICKET_KEYS_SIZE = 80     # key name 16, HMAC secret 32, AES key 32 (OpenSSL 1.1 and later)
TICKET_KEY_LIFETIME = 3600.0   # seconds; Cloudflare's rotation, stricter than nginx's (none)
_SET_TICKET_KEYS = 59     # SSL_CTRL_SET_TLSEXT_TICKET_KEYS
_now = time.time          # wall clock: workers must agree on the hour

# every context given ticket keys, with its scope, for rotate_ticket_keys (a reload's old
# contexts drop out by themselves)
_keyed: weakref.WeakKeyDictionary[ssl.SSLContext, str] = weakref.WeakKeyDictionary()


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
    """Give `context` the ticket keys of `scope` (its bind's address) in this run, this
    hour, and again at each rotation; False where that cannot be done (the context then
    keeps OpenSSL's own, its alone)."""
    if _libssl() is None:
        return False
    _keyed[context] = scope
    return _set_ticket_keys(context, scope, _period(_now()))


def rotate_ticket_keys() -> None:
    """Give every context its keys for the present period (see the module's text)."""
    period = _period(_now())
    for context, scope in list(_keyed.items()):
        _set_ticket_keys(context, scope, period)


def seconds_to_rotation() -> float:
    """How long until the keys' next change (a little after it, so that it has come)."""
    return TICKET_KEY_LIFETIME - _now() % TICKET_KEY_LIFETIME + 0.01


def _period(now: float) -> int:
    return int(now // TICKET_KEY_LIFETIME)


def _set_ticket_keys(context: ssl.SSLContext, scope: str, period: int) -> bool:
    calls = _libssl()
    if calls is None:
        return False
    material = b"\0".join((ticket_secret(), scope.encode(), str(period).encode()))
    keys = ctypes.create_string_buffer(hashlib.shake_256(material).digest(TICKET_KEYS_SIZE),
                                       TICKET_KEYS_SIZE)
    return calls.ctrl(_ssl_ctx_of(context), _SET_TICKET_KEYS, TICKET_KEYS_SIZE, keys) == 1
