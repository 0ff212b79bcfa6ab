# C types for tracked.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.backends.server cimport Server
from lbproxy.balance.base cimport Balancer


cdef class Slot:
    cdef public object server, entry, credit
    cdef public long long order, weight


cdef class Tracked(Balancer):
    cdef public dict _slots, _parked
    cdef public long long _order

    cpdef pick(self, request, Server avoid=*)
    cpdef _place(self, Slot slot)
    cpdef _remove(self, Slot slot)
    cpdef _next(self)
    cpdef _sync(self, Slot slot)
    cpdef _park(self, Slot slot)
    cpdef _look_again(self, long long count)
