# cython: language_level=3
"""TLS termination in C: a protocol between uvloop's TCP transport and the client protocol
that drives OpenSSL itself, over memory BIOs.

asyncio's TLS (uvloop's SSLProtocol) drives `ssl.SSLObject` through its Python methods:
every record read or written is a Python call that releases and takes the GIL, every
"needs more data" a Python exception made and caught, every handshake a Python state
machine with futures and timers; that glue, not OpenSSL, is most of what a TLS handshake
costs lbproxy beyond what it costs HAProxy. This layer keeps the `ssl.SSLObject` (so the
SNI callback, ALPN, `ssl_object` in `get_extra_info` and everything that reads the
session behave as with asyncio) but calls libssl directly on the SSL* inside it:
`SSL_do_handshake`, `SSL_read_ex`, `SSL_write_ex` and the BIOs, with no Python object
made per record and no exception per read.

Reaching the SSL* inside the SSLObject relies on CPython's layout of `_ssl._SSLSocket`
(the SSL* after the object header and one pointer, unchanged from 3.7 to 3.14), so
`layout_holds()` proves it once on a throwaway object: the SSL* found there must carry
that very object as its app data (CPython's `SSL_set_app_data`), and the libssl this
module links must be the one `ssl` runs on. Otherwise, or when this module was not built
(it links libssl.so.3), TLS binds use asyncio's TLS as before (lbproxy/proxy/listener.py).

Behaviour matches asyncio's TLS transport where the client protocol can tell: the
protocol hears of the connection only after the handshake (a failed one is dropped
quietly), `close()` sends close_notify after what is buffered, a close_notify or a FIN
from the client ends the connection, there is no half-close (`can_write_eof()` is
False). One difference: close() does not wait for the client's close_notify (nginx and
HAProxy do not either); and the handshake must finish within `handshake_timeout`.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, \
    PyBytes_GET_SIZE

import ssl
import sys

cdef extern from *:
    """
    /* libssl's C API, declared here so that building needs no OpenSSL headers */
    typedef struct ssl_st SSL;
    typedef struct bio_st BIO;
    int SSL_do_handshake(SSL *s);
    int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes);
    int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written);
    int SSL_get_error(const SSL *s, int ret_code);
    int SSL_shutdown(SSL *s);
    int SSL_pending(const SSL *s);
    BIO *SSL_get_rbio(const SSL *s);
    BIO *SSL_get_wbio(const SSL *s);
    void *SSL_get_ex_data(const SSL *s, int idx);
    int BIO_write(BIO *b, const void *data, int dlen);
    int BIO_read(BIO *b, void *data, int dlen);
    size_t BIO_ctrl_pending(BIO *b);
    void ERR_clear_error(void);
    unsigned long OpenSSL_version_num(void);

    /* the head of CPython's PySSLSocket (Modules/_ssl.c) */
    typedef struct { PyObject_HEAD PyObject *socket; SSL *ssl; } lbproxy_PySSLSocketHead;
    static SSL *lbproxy_ssl_of(PyObject *sslsock) {
        return ((lbproxy_PySSLSocketHead *)sslsock)->ssl;
    }
    """
    ctypedef struct SSL
    ctypedef struct BIO
    int SSL_do_handshake(SSL *s)
    int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
    int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
    int SSL_get_error(const SSL *s, int ret_code)
    int SSL_shutdown(SSL *s)
    int SSL_pending(const SSL *s)
    BIO *SSL_get_rbio(const SSL *s)
    BIO *SSL_get_wbio(const SSL *s)
    void *SSL_get_ex_data(const SSL *s, int idx)
    int BIO_write(BIO *b, const void *data, int dlen)
    int BIO_read(BIO *b, void *data, int dlen)
    size_t BIO_ctrl_pending(BIO *b)
    void ERR_clear_error()
    unsigned long OpenSSL_version_num()
    SSL *lbproxy_ssl_of(object sslsock)

cdef enum:
    SSL_ERROR_WANT_READ = 2
    SSL_ERROR_ZERO_RETURN = 6
    READ_CHUNK = 65536            # plaintext handed to the protocol per data_received
    MAX_BIO_IO = 1 << 30          # BIO_read/BIO_write take an int length

# Decrypted bytes land here and are copied into the bytes handed over before any call out,
# so a callback that makes another connection read finds it free.
cdef char read_buffer[READ_CHUNK]


def layout_holds():
    """Whether this module can reach the SSL* of this interpreter's SSLObjects (see the
    module's text): checked once, before any connection uses it."""
    if not (3, 11) <= sys.version_info[:2] <= (3, 14):
        return False
    if OpenSSL_version_num() != ssl.OPENSSL_VERSION_NUMBER:
        return False
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
    sslsock = probe._sslobj
    return SSL_get_ex_data(lbproxy_ssl_of(sslsock), 0) == <void *>sslsock


cdef class TLSLayer:
    """The protocol of one accepted TLS connection to uvloop's TCP transport, and the
    transport of the client protocol it carries once the handshake is done."""

    cdef object context, app, tcp, loop, ssl_object, timer
    cdef double handshake_timeout
    cdef SSL *ssl
    cdef BIO *incoming
    cdef BIO *outgoing
    cdef bint handshaken, closing, paused, resume_scheduled

    def __init__(self, context, app, loop, double handshake_timeout):
        self.context = context
        self.app = app
        self.loop = loop
        self.handshake_timeout = handshake_timeout

    # --- the TCP transport's protocol -------------------------------------------------------

    def connection_made(self, tcp):
        self.tcp = tcp
        self.ssl_object = self.context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(),
                                                server_side=True)
        sslsock = self.ssl_object._sslobj
        self.ssl = lbproxy_ssl_of(sslsock)
        self.incoming = SSL_get_rbio(self.ssl)
        self.outgoing = SSL_get_wbio(self.ssl)
        if self.handshake_timeout > 0:
            self.timer = self.loop.call_later(self.handshake_timeout, self._handshake_expired)

    def data_received(self, data):
        if self.ssl == NULL or self.closing:
            return
        if not _bio_write(self.incoming, data):
            self.abort()
            return
        if not self.handshaken:
            self._handshake()
            if not self.handshaken:
                return
        self._read()

    def eof_received(self):
        """A FIN ends the connection, close_notify or not (asyncio's TLS does the same);
        returning None lets the TCP transport close and report connection_lost."""
        if self.handshaken and not self.closing:
            self.app.eof_received()

    def connection_lost(self, exc):
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.closing = True
        self.ssl = NULL       # owned by ssl_object, dropped below
        self.ssl_object = None
        app, self.app = self.app, None
        if self.handshaken:
            app.connection_lost(exc)

    def pause_writing(self):
        if self.handshaken and self.app is not None:
            self.app.pause_writing()

    def resume_writing(self):
        if self.handshaken and self.app is not None:
            self.app.resume_writing()

    # --- the client protocol's transport ----------------------------------------------------

    def write(self, data):
        if self.ssl == NULL or self.closing:
            return
        if not _ssl_write(self.ssl, data):
            self.abort()
            return
        self._flush()

    def writelines(self, list_of_data):
        if self.ssl == NULL or self.closing:
            return
        for data in list_of_data:
            if not _ssl_write(self.ssl, data):
                self.abort()
                return
        self._flush()

    def close(self):
        """close_notify after what is already written, then the TCP close (which sends
        what is still buffered before the FIN)."""
        if self.closing:
            return
        self.closing = True
        if self.ssl != NULL and self.handshaken:
            SSL_shutdown(self.ssl)
            ERR_clear_error()
            self._flush()
        self.tcp.close()

    def abort(self):
        self.closing = True
        self.tcp.abort()

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        if not self.paused:
            self.paused = True
            if not self.closing:
                self.tcp.pause_reading()

    def resume_reading(self):
        if self.paused:
            self.paused = False
            if not self.closing:
                self.tcp.resume_reading()
            # records already received wait in OpenSSL: hand them over, outside this call
            if self.ssl != NULL and not self.resume_scheduled and (
                    SSL_pending(self.ssl) > 0 or BIO_ctrl_pending(self.incoming) > 0):
                self.resume_scheduled = True
                self.loop.call_soon(self._resumed)

    def is_reading(self):
        return not self.paused and not self.closing

    def get_extra_info(self, name, default=None):
        if name == "ssl_object":
            return self.ssl_object
        if name == "sslcontext":
            return self.context
        if name == "peercert":
            return self.ssl_object.getpeercert() if self.ssl_object is not None else default
        if name == "cipher":
            return self.ssl_object.cipher() if self.ssl_object is not None else default
        return self.tcp.get_extra_info(name, default)

    def set_protocol(self, protocol):
        self.app = protocol

    def get_protocol(self):
        return self.app

    def can_write_eof(self):
        return False

    def write_eof(self):
        raise NotImplementedError("TLS does not support half-closes")

    def get_write_buffer_size(self):
        return self.tcp.get_write_buffer_size()

    def get_write_buffer_limits(self):
        return self.tcp.get_write_buffer_limits()

    def set_write_buffer_limits(self, high=None, low=None):
        self.tcp.set_write_buffer_limits(high, low)

    # --- the work ---------------------------------------------------------------------------

    cdef void _handshake(self):
        cdef int result = SSL_do_handshake(self.ssl)
        cdef int error = 0
        if result != 1:
            error = SSL_get_error(self.ssl, result)
            ERR_clear_error()
        self._flush()         # our flight, the session tickets, or the alert of a failure
        if result == 1:
            self.handshaken = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.app.connection_made(self)
        elif error != SSL_ERROR_WANT_READ:
            self.closing = True
            self.tcp.close()  # failed: the protocol never hears of it (as with asyncio)

    cdef void _read(self):
        """Hand the protocol every record received, up to READ_CHUNK bytes per call."""
        cdef size_t filled, count
        cdef int error
        while not self.paused and not self.closing and self.ssl != NULL:
            filled = 0
            error = 0
            while filled < READ_CHUNK:
                if SSL_read_ex(self.ssl, read_buffer + filled, READ_CHUNK - filled, &count):
                    filled += count
                else:
                    error = SSL_get_error(self.ssl, 0)
                    ERR_clear_error()
                    break
            if filled:
                self.app.data_received(PyBytes_FromStringAndSize(read_buffer, filled))
            if error == 0:
                continue                          # the chunk filled up: more may be there
            if self.closing:                      # the protocol closed while reading
                return
            if error == SSL_ERROR_WANT_READ:
                self._flush()                     # a KeyUpdate's answer, if any
                return
            if error == SSL_ERROR_ZERO_RETURN:    # close_notify: the client is done
                self.app.eof_received()
                self.close()
                return
            self.closing = True                   # a bad record: the alert, then the end
            self._flush()
            self.tcp.close()
            return

    cdef void _flush(self):
        """Send what OpenSSL wrote to the outgoing BIO, in one TCP write."""
        cdef size_t pending = BIO_ctrl_pending(self.outgoing)
        cdef size_t done = 0
        cdef int step
        if pending == 0:
            return
        out = PyBytes_FromStringAndSize(NULL, pending)
        while done < pending:
            step = BIO_read(self.outgoing, PyBytes_AS_STRING(out) + done,
                            <int>min(pending - done, <size_t>MAX_BIO_IO))
            if step <= 0:
                break
            done += step
        self.tcp.write(out)

    def _resumed(self):
        self.resume_scheduled = False
        self._read()

    def _handshake_expired(self):
        self.timer = None
        if not self.handshaken and not self.closing:
            self.abort()


cdef bint _bio_write(BIO *bio, data):
    """Put received bytes in the incoming BIO (a memory BIO takes them all)."""
    cdef Py_buffer view
    cdef bint ok
    if PyBytes_CheckExact(data):
        return _bio_write_all(bio, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        ok = _bio_write_all(bio, <const char *>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return ok


cdef bint _bio_write_all(BIO *bio, const char *data, Py_ssize_t length):
    cdef Py_ssize_t done = 0
    cdef int step
    while done < length:
        step = BIO_write(bio, data + done, <int>min(length - done, <Py_ssize_t>MAX_BIO_IO))
        if step <= 0:
            return False
        done += step
    return True


cdef bint _ssl_write(SSL *tls, data):
    """Encrypt `data` into the outgoing BIO (all of it: a memory BIO never pushes back)."""
    cdef Py_buffer view
    cdef size_t written
    cdef bint ok
    if PyBytes_CheckExact(data):
        if PyBytes_GET_SIZE(data) == 0:
            return True
        ok = SSL_write_ex(tls, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), &written)
    else:
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            ok = view.len == 0 or SSL_write_ex(tls, view.buf, view.len, &written)
        finally:
            PyBuffer_Release(&view)
    if not ok:
        ERR_clear_error()
    return ok
