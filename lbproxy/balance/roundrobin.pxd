# C types for roundrobin.py when Cython compiles it (setup.py); the .py is the implementation.

cimport cython

from lbproxy.backends.server cimport Server
from lbproxy.balance.tracked cimport Slot, Tracked


cdef class RoundRobin(Tracked):
    cdef public object _picks, _total
    cdef public dict _heaps, _live

    cpdef _place(self, Slot slot)
    cpdef _remove(self, Slot slot)
    @cython.locals(slot=Slot, server=Server, best=list, entry=list, best_heap=list)
    cpdef _next(self)
