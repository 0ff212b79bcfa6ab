# C types for flow.py when Cython compiles it (setup.py); the .py is the implementation.

cdef class FlowControl:
    cdef public object transport
    cdef public int paused

    cpdef pause(self, int reason)
    cpdef resume(self, int reason)
    cpdef clear(self)
