# C types for h2client.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.http2.connection cimport Connection, Stream
from lbproxy.proxy.exchange cimport Exchange


cdef class H2ClientProtocol:
    # global
    cdef public object frontend, state, time
    # per connection
    cdef public object transport, src, src_b, ssl_fc_sni, entries
    cdef public Connection h2
    cdef public int src_port, dst_port
    cdef public bint ssl_fc, write_paused, write_pending, peer_trusted, draining
    cdef public double deadline, linger_end
    cdef public set streams
    cdef public object last_headers, last_head, last_response, last_block
    cdef public long long last_generation

    cpdef write(self)
    cpdef write_soon(self)
    cpdef stream_done(self, H2Stream stream)
    cpdef bytes response_block(self, int status, list hparts)


cdef class H2Stream:
    cdef public H2ClientProtocol owner
    cdef public Stream stream
    cdef public Exchange exchange
    cdef public object frontend, state, time, src, src_b, ssl_fc_sni
    cdef public int src_port, dst_port
    cdef public bint ssl_fc, peer_trusted, closed, ended
    cdef public list body
    cdef public long long received

    cpdef start(self, list headers, bint end_stream)
    cpdef int _refusal(self, Exchange exchange, bint end_stream) except -1
    cpdef request_data(self, data, bint end_stream)
    cpdef response_head(self, Exchange exchange, int status, headers, length,
                        bint end_stream)
    cpdef response_body(self, data)
    cpdef flush(self, bint end)
    cpdef exchange_done(self, Exchange exchange)
    cpdef _let_go(self)
    cpdef gone(self)
