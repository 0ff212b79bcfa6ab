# C types for leastconn.py when Cython compiles it (setup.py); the .py is the implementation.

cimport cython

from lbproxy.backends.server cimport Server
from lbproxy.balance.tracked cimport Slot, Tracked


cdef class LeastConn(Tracked):
    cdef public list _heap
    cdef public long long _live, _arrivals
    cdef public Slot _picked

    cpdef _requeue(self)
    cpdef _place(self, Slot slot)
    cpdef _remove(self, Slot slot)
    @cython.locals(slot=Slot, server=Server, entry=list)
    cpdef _next(self)
