# C types for frontend.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.proxy.request cimport Request

cdef class Frontend:
    cdef public object name, state, config, access_log, trusted_proxies
    cdef public object request_rules, response_rules, dispatchers, use_backend
    cdef public object default_backend, compression, unique_id, h2_protocol, h2_settings
    cdef public list listeners, phase_timeouts, responses
    cdef public double timeout_client, timeout_http_request, timeout_keep_alive
    cdef public long long max_header_size, max_unparsed, max_headers, max_body_size, maxconn
    cdef public bint x_forwarded_for, x_forwarded_proto, x_forwarded_host
    # counters
    cdef public long long accepted, connections, connections_total, max_connections_seen
    cdef public long long bytes_in, bytes_out, requests, rejected, denied
    cdef public long long h2_connections, h2_requests, h2_protocol_errors
    cdef public dict h2_abuse
    cdef object __weakref__

    cpdef route(self, exchange, rules=*)
    cpdef list forwarded_parts(self, Request request)
