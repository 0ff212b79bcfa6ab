# cython: language_level=3, auto_pickle=False
"""TLS termination in C: a server that accepts a TLS bind's connections, owns their
sockets and drives OpenSSL on them itself, and is the transport of each connection's
client protocol.

asyncio's TLS (uvloop's SSLProtocol) drives `ssl.SSLObject` through its Python methods:
every record read or written is a Python call, every "needs more data" a Python exception
made and caught, every handshake a Python state machine with futures and timers. Under it,
uvloop's TCP transport costs each connection a libuv handle, its tracking in a Python
WeakValueDictionary, `Handle`s and extra system calls (about 60 µs of CPU per connection,
a fifth of a TLS handshake). So this module does both jobs in C: it accepts in batches
with `accept4`, keeps the sockets in an epoll set of its own, which the event loop watches
as one descriptor, reads and writes them with `recv`/`send`, and calls libssl directly on
the SSL* inside each connection's `ssl.SSLObject` (`SSL_do_handshake`, `SSL_read_ex`,
`SSL_write_ex`, memory BIOs), with no Python object made per record. The SSLObject stays,
so the SNI callback, ALPN, `ssl_object` in `get_extra_info` and everything that reads the
session behave as with asyncio.

Reaching the SSL* inside the SSLObject relies on CPython's layout of `_ssl._SSLSocket`
(the SSL* after the object header and one pointer, unchanged from 3.7 to 3.14), so
`layout_holds()` proves it once on a throwaway object: the SSL* found there must carry
that very object as its app data (CPython's `SSL_set_app_data`), and the libssl this
module links must be the one `ssl` runs on. Otherwise, or when this module was not built
(it links libssl.so.3 and needs Linux's epoll), TLS binds use asyncio's TLS
(lbproxy/proxy/listener.py).

Behaviour matches asyncio's TLS transport where the client protocol can tell: the
protocol hears of the connection only after the handshake (a failed one is dropped
quietly), `close()` sends close_notify after what is buffered and closes the socket once
all is sent, a close_notify or a FIN from the client ends the connection, there is no
half-close (`can_write_eof()` is False), `connection_lost` comes on a later turn of the
loop, and writes past the buffer's high-water mark pause the protocol until it drains
below the low one. One difference: close() does not wait for the client's close_notify
(nginx and HAProxy do not either); and the handshake must finish within the bind's
`handshake_timeout`.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_FromStringAndSize, \
    PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, ECONNABORTED, EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, errno
from libc.stdint cimport uint16_t, uint32_t, uint64_t

import os
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

cdef extern from "<sys/epoll.h>":
    ctypedef union epoll_data_t:
        uint64_t u64
    cdef struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)
    enum: EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLL_CTL_MOD, \
        EPOLL_CLOEXEC

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    cdef struct sockaddr:
        sa_family_t sa_family
    cdef struct sockaddr_storage:
        sa_family_t ss_family
    int accept4(int sockfd, sockaddr *addr, socklen_t *addrlen, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    int setsockopt(int fd, int level, int optname, const void *optval, socklen_t optlen)
    int getsockopt(int fd, int level, int optname, void *optval, socklen_t *optlen)
    int getpeername(int fd, sockaddr *addr, socklen_t *addrlen)
    int getsockname(int fd, sockaddr *addr, socklen_t *addrlen)
    enum: SOCK_NONBLOCK, SOCK_CLOEXEC, MSG_NOSIGNAL, SOL_SOCKET, SO_ERROR, AF_INET, AF_INET6

cdef extern from "<netinet/in.h>":
    cdef struct in_addr:
        uint32_t s_addr
    cdef struct in6_addr:
        pass
    cdef struct sockaddr_in:
        uint16_t sin_port
        in_addr sin_addr
    cdef struct sockaddr_in6:
        uint16_t sin6_port
        uint32_t sin6_flowinfo
        in6_addr sin6_addr
        uint32_t sin6_scope_id
    uint16_t ntohs(uint16_t)
    uint32_t ntohl(uint32_t)
    enum: IPPROTO_TCP

cdef extern from "<netinet/tcp.h>":
    enum: TCP_NODELAY

cdef extern from "<arpa/inet.h>":
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef extern from "<unistd.h>":
    int close(int fd)

cdef enum:
    SSL_ERROR_WANT_READ = 2
    SSL_ERROR_ZERO_RETURN = 6
    CHUNK = 65536                 # bytes per recv, per send, per data_received
    MAX_BIO_IO = 1 << 30          # BIO_read/BIO_write take an int length
    ACCEPT_BATCH = 64             # connections accepted per readiness of the bind
    POLL_BATCH = 64               # socket events taken per readiness of the epoll set
    HIGH_WATER = 65536            # asyncio's default write buffer limits
    ADDRESS_TEXT = 64             # room for any IPv6 address as text

RETRY_AFTER_EMFILE = 0.1          # seconds: out of descriptors, the backlog holds clients

# Each is filled and emptied (copied into a bytes object or a BIO) with no Python code
# between, so one buffer serves every connection of every loop of the process.
cdef char receive_buffer[CHUNK]
cdef char plain_buffer[CHUNK]
cdef char send_buffer[CHUNK]


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


cdef class TLSServer:
    """The TLS connections of one bind: accepting them on its listening socket (or adopting
    them, once a PROXY header was read), and the epoll set they are watched in.

    `source` says how to serve each new connection, read as it comes so that a reload
    takes effect at once: `source.ssl_context`, `source.factory()` (the client protocol)
    and `source.handshake_timeout` (seconds, 0 for none); a Listener is one. The epoll set
    is watched by the loop while the server accepts or has connections, closed otherwise.
    """

    cdef object loop, source
    cdef int listen_fd, poll_fd
    cdef dict connections            # fd -> TLSConnection
    cdef bint accepting_now
    cdef uint32_t serial             # tells a reused descriptor from the one it was
    cdef object retry
    cdef epoll_event events[POLL_BATCH]
    # Handshake deadlines: one timer for the earliest of them, not one per connection
    # (a uvloop timer costs a libuv handle and two Python objects).
    cdef set handshaking
    cdef object sweeper
    cdef double sweep_at
    # connection_lost calls for the loop's next turn, one callback for all of them
    cdef list lost

    def __init__(self, loop, source, sock=None):
        self.loop = loop
        self.source = source
        self.listen_fd = sock.fileno() if sock is not None else -1
        self.poll_fd = -1
        self.connections = {}
        self.handshaking = set()
        self.lost = []

    @property
    def accepting(self):
        return self.accepting_now

    def start_accepting(self):
        if self.accepting_now or self.listen_fd < 0:
            return
        self._watch_sockets()
        self.loop.add_reader(self.listen_fd, self._accept)
        self.accepting_now = True

    def stop_accepting(self):
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        if self.accepting_now:
            self.accepting_now = False
            self.loop.remove_reader(self.listen_fd)
            self._unwatch_if_idle()

    def close(self):
        """Stop accepting and drop the connections still in their handshake (those past it
        belong to their client protocols, which a stop closes)."""
        self.stop_accepting()
        self.listen_fd = -1
        for connection in list(self.connections.values()):
            if not (<TLSConnection>connection).handshaken:
                (<TLSConnection>connection).abort()

    def adopt(self, int fd, app):
        """Serve `fd`, a connected non-blocking socket handed over by its owner, to the
        client protocol `app`."""
        cdef sockaddr_storage peer
        cdef socklen_t length = sizeof(peer)
        if getpeername(fd, <sockaddr *>&peer, &length) != 0:
            length = 0
        self._watch_sockets()
        self._serve(fd, &peer, length, self.source.ssl_context, app,
                    self.source.handshake_timeout)

    def _accept(self):
        cdef sockaddr_storage peer
        cdef socklen_t length
        cdef int fd, i
        context = self.source.ssl_context
        factory = self.source.factory
        timeout = self.source.handshake_timeout
        for i in range(ACCEPT_BATCH):
            length = sizeof(peer)
            fd = accept4(self.listen_fd, <sockaddr *>&peer, &length, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR or errno == ECONNABORTED:
                    continue
                if errno in (EMFILE, ENFILE, ENOBUFS, ENOMEM):   # the backlog holds them
                    self.stop_accepting()
                    self.retry = self.loop.call_later(RETRY_AFTER_EMFILE, self._retry)
                return
            try:
                app = factory()
            except BaseException:
                close(fd)
                raise
            self._serve(fd, &peer, length, context, app, timeout)

    def _retry(self):
        self.retry = None
        self.start_accepting()

    cdef _serve(self, int fd, sockaddr_storage *peer, socklen_t length, context, app,
                timeout):
        cdef int one = 1
        cdef epoll_event event
        cdef TLSConnection connection = TLSConnection.__new__(TLSConnection)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
        self.serial += 1
        connection.fd = fd
        connection.serial = self.serial
        connection.server = self
        connection.loop = self.loop
        connection.peer = peer[0]
        connection.peer_length = length
        connection.high_water = HIGH_WATER
        connection.low_water = HIGH_WATER // 4
        connection.watched = EPOLLIN
        event.events = EPOLLIN
        event.data.u64 = (<uint64_t>connection.serial << 32) | <uint32_t>fd
        if epoll_ctl(self.poll_fd, EPOLL_CTL_ADD, fd, &event) != 0:
            close(fd)
            return
        self.connections[fd] = connection
        try:
            connection.start(context, app, timeout)
        except BaseException:
            connection.abort()
            raise

    def _poll(self):
        """Serve the sockets that are ready (the loop saw the epoll set readable)."""
        cdef int count = epoll_wait(self.poll_fd, self.events, POLL_BATCH, 0)
        cdef int i
        cdef uint64_t tag
        cdef TLSConnection connection
        for i in range(count):
            tag = self.events[i].data.u64
            connection = self.connections.get(<int>(tag & 0xffffffff))
            if connection is None or connection.serial != <uint32_t>(tag >> 32):
                continue                  # closed by an earlier event of this batch
            try:
                connection.ready(self.events[i].events)
            except Exception as exc:
                connection.failed(exc)

    cdef int handshake_started(self, TLSConnection connection, double timeout) except -1:
        connection.deadline = self.loop.time() + timeout
        self.handshaking.add(connection)
        if self.sweeper is None or connection.deadline < self.sweep_at:
            self._sweep_at(connection.deadline)
        return 0

    cdef _sweep_at(self, double when):
        if self.sweeper is not None:
            self.sweeper.cancel()
        self.sweep_at = when
        self.sweeper = self.loop.call_at(when, self._sweep)

    def _sweep(self):
        """Drop the connections whose handshake is late; wait for the next deadline."""
        cdef TLSConnection connection
        cdef double now = self.loop.time()
        cdef double earliest = 0
        self.sweeper = None
        for connection in list(self.handshaking):
            if connection.deadline <= now:
                connection.abort()
            elif earliest == 0 or connection.deadline < earliest:
                earliest = connection.deadline
        if earliest:
            self._sweep_at(earliest)

    cdef int report_lost(self, TLSConnection connection, exc) except -1:
        if not self.lost:
            self.loop.call_soon(self._report_lost)
        self.lost.append((connection, exc))
        return 0

    def _report_lost(self):
        cdef TLSConnection connection
        lost, self.lost = self.lost, []
        for connection, exc in lost:
            try:
                connection.connection_lost(exc)
            except Exception as error:
                self.loop.call_exception_handler({
                    "message": "protocol.connection_lost() failed on a TLS connection",
                    "exception": error})

    cdef int forget(self, TLSConnection connection) except -1:
        epoll_ctl(self.poll_fd, EPOLL_CTL_DEL, connection.fd, NULL)
        del self.connections[connection.fd]
        if not self.connections:
            self._unwatch_if_idle()
        return 0

    cdef int watch(self, TLSConnection connection, uint32_t events) except -1:
        cdef epoll_event event
        event.events = events
        event.data.u64 = (<uint64_t>connection.serial << 32) | <uint32_t>connection.fd
        epoll_ctl(self.poll_fd, EPOLL_CTL_MOD, connection.fd, &event)
        return 0

    cdef _watch_sockets(self):
        if self.poll_fd < 0:
            self.poll_fd = epoll_create1(EPOLL_CLOEXEC)
            if self.poll_fd < 0:
                raise _os_error(errno)
            self.loop.add_reader(self.poll_fd, self._poll)

    cdef _unwatch_if_idle(self):
        if self.poll_fd >= 0 and not self.accepting_now and not self.connections:
            self.loop.remove_reader(self.poll_fd)
            close(self.poll_fd)
            self.poll_fd = -1


cdef class TLSConnection:
    """One TLS connection: its socket, its OpenSSL state, and the transport its client
    protocol writes to. OpenSSL's outgoing memory BIO is the write buffer; `unsent` holds
    the rest of a chunk the socket took only part of."""

    cdef TLSServer server
    cdef object loop, app, ssl_object, unsent
    cdef SSL *ssl
    cdef BIO *incoming
    cdef BIO *outgoing
    cdef int fd
    cdef uint32_t serial, watched
    cdef sockaddr_storage peer
    cdef socklen_t peer_length
    cdef Py_ssize_t high_water, low_water
    cdef double deadline             # of the handshake
    cdef bint handshaken, closing, reading_paused, writing_paused, resume_scheduled

    cdef start(self, context, app, double handshake_timeout):
        self.app = app
        self.ssl_object = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_side=True)
        self.ssl = lbproxy_ssl_of(self.ssl_object._sslobj)
        self.incoming = SSL_get_rbio(self.ssl)
        self.outgoing = SSL_get_wbio(self.ssl)
        if handshake_timeout > 0:
            self.server.handshake_started(self, handshake_timeout)

    # --- the socket -------------------------------------------------------------------------

    cdef int ready(self, uint32_t events) except -1:
        if events & EPOLLOUT:
            self._send()
        if self.fd < 0:
            return 0
        if self.watched & EPOLLIN:
            if events & (EPOLLIN | EPOLLERR | EPOLLHUP):
                self._receive()
        elif events & (EPOLLERR | EPOLLHUP):    # not reading: the error says what happened
            self._finish(_socket_error(self.fd))
        return 0

    cdef int _receive(self) except -1:
        cdef ssize_t got = recv(self.fd, receive_buffer, CHUNK, 0)
        if got < 0:
            if errno != EAGAIN and errno != EINTR:
                self._finish(_os_error(errno))
            return 0
        if got == 0:                            # the client's FIN ends the connection
            if self.handshaken and not self.closing:
                self.app.eof_received()
            self._close_socket()
            return 0
        if not _bio_write_all(self.incoming, receive_buffer, got):
            self.abort()
            return 0
        if not self.handshaken:
            self._handshake()
            if not self.handshaken:
                return 0
        self._read()
        return 0

    cdef int _send(self) except -1:
        """Send what is buffered, as far as the socket takes it; watch for writability
        while anything is left; close the socket once all is sent after a close."""
        cdef const char *data
        cdef ssize_t length, sent
        while self.fd >= 0:
            if self.unsent is not None:
                data = PyBytes_AS_STRING(self.unsent)
                length = PyBytes_GET_SIZE(self.unsent)
            else:
                length = BIO_read(self.outgoing, send_buffer, CHUNK) \
                    if BIO_ctrl_pending(self.outgoing) else 0
                if length <= 0:
                    break
                data = send_buffer
            sent = send(self.fd, data, length, MSG_NOSIGNAL)
            if sent < 0:
                if errno != EAGAIN and errno != EINTR:
                    self._finish(_os_error(errno))
                    return 0
                sent = 0
            if sent < length:
                self.unsent = PyBytes_FromStringAndSize(data + sent, length - sent)
                self._watch()
                return 0
            self.unsent = None
        if self.fd < 0:
            return 0
        if self.closing:
            self._finish(None)
            return 0
        self._watch()
        if self.writing_paused and self.buffered() <= self.low_water:
            self.writing_paused = False
            self.app.resume_writing()
        return 0

    cdef int _watch(self) except -1:
        """Tell epoll what this connection waits for, when that changed."""
        cdef uint32_t events = 0
        if not self.reading_paused and not self.closing:
            events |= EPOLLIN
        if self.unsent is not None:
            events |= EPOLLOUT
        if events != self.watched:
            self.watched = events
            self.server.watch(self, events)
        return 0

    cdef int _close_socket(self) except -1:
        """Close once what is buffered is sent (a TLS alert, a response), without a
        close_notify."""
        self.closing = True
        self._send()
        return 0

    cdef int _finish(self, exc) except -1:
        """The socket is closed: tell the protocol (if it heard of the connection) on the
        loop's next turn, as asyncio does."""
        if self.fd < 0:
            return 0
        self.server.forget(self)
        close(self.fd)
        self.fd = -1
        self.closing = True
        self.ssl = NULL         # owned by ssl_object, dropped with it
        self.unsent = None
        if self.handshaken:
            self.server.report_lost(self, exc)
        else:
            self.server.handshaking.discard(self)
            self.ssl_object = self.app = None
        return 0

    cdef int connection_lost(self, exc) except -1:
        app, self.app = self.app, None
        self.ssl_object = None
        app.connection_lost(exc)
        return 0

    cdef int failed(self, exc) except -1:
        """A callback of the client protocol raised: reported, then the connection is cut
        (as uvloop does)."""
        self.loop.call_exception_handler({
            "message": "Fatal error: protocol callback failed on a TLS connection",
            "exception": exc, "transport": self, "protocol": self.app})
        return self._finish(exc)

    # --- TLS --------------------------------------------------------------------------------

    cdef int _handshake(self) except -1:
        cdef int result = SSL_do_handshake(self.ssl)
        cdef int error = 0
        if result != 1:
            error = SSL_get_error(self.ssl, result)
            ERR_clear_error()
        if result == 1:
            self.handshaken = True
            self.server.handshaking.discard(self)
            self._send()            # our last flight and the session tickets
            self.app.connection_made(self)
        elif error == SSL_ERROR_WANT_READ:
            self._send()            # our flight
        else:
            self._close_socket()    # the alert; the protocol never hears of it (as asyncio)
        return 0

    cdef int _read(self) except -1:
        """Hand the protocol every record received, up to CHUNK bytes per call."""
        cdef size_t filled, count
        cdef int error
        while not self.reading_paused and not self.closing:
            filled = 0
            error = 0
            while filled < CHUNK:
                if SSL_read_ex(self.ssl, plain_buffer + filled, CHUNK - filled, &count):
                    filled += count
                else:
                    error = SSL_get_error(self.ssl, 0)
                    ERR_clear_error()
                    break
            if filled:
                self.app.data_received(PyBytes_FromStringAndSize(plain_buffer, filled))
            if error == 0:
                continue                          # the chunk filled up: more may be there
            if self.closing:                      # the protocol closed while reading
                return 0
            if error == SSL_ERROR_WANT_READ:
                self._send()                      # a KeyUpdate's answer, if any
                return 0
            if error == SSL_ERROR_ZERO_RETURN:    # close_notify: the client is done
                self.app.eof_received()
                self.close()
                return 0
            self._close_socket()                  # a bad record: the alert, then the end
            return 0
        return 0

    def _resumed(self):
        self.resume_scheduled = False
        if not self.closing:
            self._read()

    cdef Py_ssize_t buffered(self):
        cdef Py_ssize_t size = 0 if self.unsent is None else PyBytes_GET_SIZE(self.unsent)
        return size + BIO_ctrl_pending(self.outgoing) if self.ssl != NULL else size

    cdef int _written(self) except -1:
        if self.fd < 0:
            return 0
        if self.unsent is None:
            self._send()
        if self.fd >= 0 and not self.writing_paused and self.buffered() > self.high_water:
            self.writing_paused = True
            self.app.pause_writing()
        return 0

    # --- the client protocol's transport ----------------------------------------------------

    def write(self, data):
        if self.closing:
            return
        if not _ssl_write(self.ssl, data):
            self.abort()
            return
        self._written()

    def writelines(self, list_of_data):
        if self.closing:
            return
        for data in list_of_data:
            if not _ssl_write(self.ssl, data):
                self.abort()
                return
        self._written()

    def close(self):
        """close_notify after what is already written, then the socket's close once all
        is sent."""
        if self.closing:
            return
        if self.handshaken:
            SSL_shutdown(self.ssl)
            ERR_clear_error()
        self._close_socket()

    def abort(self):
        self._finish(None)

    def is_closing(self):
        return self.closing

    def pause_reading(self):
        if not self.reading_paused:
            self.reading_paused = True
            if self.fd >= 0:
                self._watch()

    def resume_reading(self):
        if not self.reading_paused:
            return
        self.reading_paused = False
        if self.fd < 0:
            return
        self._watch()
        # records already received wait in OpenSSL: hand them over, outside this call
        if not self.resume_scheduled and (
                SSL_pending(self.ssl) > 0 or BIO_ctrl_pending(self.incoming) > 0):
            self.resume_scheduled = True
            self.loop.call_soon(self._resumed)

    def is_reading(self):
        return not self.reading_paused and not self.closing

    def get_extra_info(self, name, default=None):
        cdef sockaddr_storage local
        cdef socklen_t length = sizeof(local)
        if name == "peername":
            return _address(&self.peer, self.peer_length) or default
        if name == "sockname":
            if self.fd < 0 or getsockname(self.fd, <sockaddr *>&local, &length) != 0:
                return default
            return _address(&local, length) or default
        ssl_object = self.ssl_object
        if ssl_object is None:
            return default
        if name == "ssl_object":
            return ssl_object
        if name == "sslcontext":
            return ssl_object.context
        if name == "peercert":
            return ssl_object.getpeercert()
        if name == "cipher":
            return ssl_object.cipher()
        if name == "compression":
            return ssl_object.compression()
        return default

    def set_protocol(self, protocol):
        self.app = protocol

    def get_protocol(self):
        return self.app

    def can_write_eof(self):
        return False

    def write_eof(self):
        raise NotImplementedError("TLS does not support half-closes")

    def get_write_buffer_size(self):
        return self.buffered()

    def get_write_buffer_limits(self):
        return (self.low_water, self.high_water)

    def set_write_buffer_limits(self, high=None, low=None):
        """asyncio's rules: high defaults to 64 KiB (4 × low if low is given), low to a
        quarter of high."""
        if high is None:
            high = HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self.high_water, self.low_water = high, low
        self._written()


cdef object _address(sockaddr_storage *address, socklen_t length):
    """An address as the socket module gives it: (host, port) for IPv4, (host, port,
    flowinfo, scope_id) for IPv6; None for anything else."""
    cdef char text[ADDRESS_TEXT]
    cdef sockaddr_in *v4
    cdef sockaddr_in6 *v6
    if length == 0:
        return None
    if address.ss_family == AF_INET:
        v4 = <sockaddr_in *>address
        inet_ntop(AF_INET, &v4.sin_addr, text, ADDRESS_TEXT)
        return (text.decode("ascii"), ntohs(v4.sin_port))
    if address.ss_family == AF_INET6:
        v6 = <sockaddr_in6 *>address
        inet_ntop(AF_INET6, &v6.sin6_addr, text, ADDRESS_TEXT)
        return (text.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                v6.sin6_scope_id)
    return None


cdef object _socket_error(int fd):
    """The error pending on a socket, as the OSError asyncio would report (None: none)."""
    cdef int error = 0
    cdef socklen_t length = sizeof(error)
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
    return _os_error(error) if error else None


cdef object _os_error(int code):
    """The OSError for an errno, of the subclass Python gives it (ConnectionResetError...)."""
    return OSError(code, os.strerror(code))


cdef bint _bio_write_all(BIO *bio, const char *data, Py_ssize_t length):
    """Put received bytes in the incoming BIO (a memory BIO takes them all)."""
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
