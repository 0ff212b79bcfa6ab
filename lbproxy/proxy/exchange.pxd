# C types for exchange.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.backends.backend cimport Backend
from lbproxy.backends.server cimport Server
from lbproxy.proxy.dispatch cimport Dispatcher
from lbproxy.proxy.frontend cimport Frontend
from lbproxy.proxy.request cimport Request


cdef class Exchange(Request):
    cdef public Frontend frontend
    cdef public object body, trailers, sink, caching, cache_status
    cdef public object rules_left, waiting, unique_id
    cdef public Dispatcher dispatcher
    cdef public Backend backend
    cdef public object upstream, connecting, sticky_id
    cdef public Server server
    cdef public object request_head, termination, error, tracked
    cdef public long long body_buffered, body_size, resp_bytes
    cdef public bint request_complete, queued, logged
    cdef public int attempts, status
    cdef public double started

    cpdef request_body(self, data)
    cpdef request_done(self)
    cpdef flush_body(self)
    cpdef start(self)
    cpdef _routed(self, Dispatcher dispatcher)
    cpdef proceed(self, bint lock=*)
    cpdef attach(self, upstream)
    cpdef pause_response(self)
    cpdef resume_response(self)
    cpdef response_head(self, int status, headers, length, bint end_stream=*)
    cpdef response_done(self, upstream, bint reusable)
    cpdef respond(self, answer)
    cpdef abandon(self)
    cpdef finish(self)
    cpdef set_termination(self, str cause, error=*, phase=*)
    cpdef lost(self)
    cpdef _log(self)
    cpdef _count(self)
