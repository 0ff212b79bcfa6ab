# C types for client.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.http.headers cimport connection_header
from lbproxy.proxy.exchange cimport Exchange
from lbproxy.proxy.frontend cimport Frontend

# the header tables on_header consults, typed so that lookups are direct C calls
cdef frozenset PLAIN_REQUEST_HEADERS, REQUEST_SPECIAL_LENGTHS
cdef dict REQUEST_SPECIAL, REQUEST_SPECIAL_AS_SENT


cdef class ClientProtocol:
    # global
    cdef public Frontend frontend
    cdef public object state, time
    cdef public list timeouts
    # per connection
    cdef public object transport, flow, parser, src, src_b, ssl_fc_sni
    cdef public bint closed, write_paused, ssl_fc, peer_trusted, h2c, priming, chunked_out
    cdef public int src_port, dst_port, phase, reject_status
    cdef public double deadline, linger_end
    cdef public long long unparsed, head_left, headers_left
    cdef public Exchange refused, parsing, current, upgrading
    cdef public object pipeline, entries, proxy_header, proxied, held, tunnel, body_head
    cdef public list out

    cpdef _parse(self, data)
    cpdef _enter(self, int phase)
    cpdef _fresh_budget(self)
    cpdef pause_reading(self, int reason)
    cpdef resume_reading(self, int reason)
    cpdef response_head(self, Exchange exchange, int status, headers, length,
                        bint end_stream)
    cpdef response_body(self, data)
    cpdef flush(self, bint end)
    cpdef answer(self, Exchange exchange, answer)
    cpdef exchange_done(self, Exchange exchange)
    cpdef close(self)
    cpdef abort(self)
    cpdef _reject_in_parser(self, int status)
    cpdef reject(self, int status)
