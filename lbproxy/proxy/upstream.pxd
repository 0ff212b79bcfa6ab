# C types for upstream.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.http.headers cimport connection_header
from lbproxy.proxy.exchange cimport Exchange

cdef class UpstreamProtocol

# the header tables on_header consults, typed so that lookups are direct C calls
cdef frozenset PLAIN_RESPONSE_HEADERS, RESPONSE_SPECIAL_LENGTHS
cdef dict RESPONSE_SPECIAL, RESPONSE_SPECIAL_AS_SENT


cdef class ServerPool:
    cdef public object server, state, ssl, server_hostname
    cdef public double connect_timeout
    cdef public bint reuse
    cdef public long long max_head
    cdef public list idle

    cpdef acquire(self)
    cpdef connect(self, Exchange exchange)
    cpdef release(self, UpstreamProtocol upstream)


cpdef bytes request_head(Exchange exchange)


cdef class UpstreamProtocol:
    # per connection
    cdef public ServerPool pool
    cdef public object time, transport, flow, parser
    cdef public double deadline, server_timeout
    cdef public list hparts
    cdef public long long max_head, head_seen
    # per exchange
    cdef public Exchange exchange
    cdef public object downstream
    cdef public bint chunked_request, request_ended, received
    # per response
    cdef public bint in_body, informational, chunked_in, server_close, done, reusable
    cdef public object length, extra_hop, upgrade_b, tunnel

    cpdef send_request(self, Exchange exchange, body, bint complete)
    cpdef send_body(self, body, bint complete)
    cpdef _write(self, list parts, body, bint complete)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef _fail(self, Exchange exchange)
    cpdef close(self)
