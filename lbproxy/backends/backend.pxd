# C types for backend.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.backends.server cimport Server
from lbproxy.balance.base cimport Balancer


cdef class Backend:
    cdef public object name, state, make_pool, config, listeners, _removals, _ramping
    cdef public object passive, checker, discovery, persistence, retry_on, server_timeout
    cdef public list servers, responses
    cdef public Balancer balancer, backup_balancer
    cdef public long long in_flight, queued, max_queued, requests, retried, redispatched
    cdef public long long maxconn, retries
    cdef public double queue_timeout, _next_ramp
    cdef public bint lb_hooks, redispatch
    cdef object __weakref__

    cpdef Server pick(self, request, Server avoid)
    cpdef Balancer balancer_for(self, Server server)
