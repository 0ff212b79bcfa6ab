# C types for accesslog.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.proxy.exchange cimport Exchange


cdef class AccessLog:
    cdef public object target, loop, timer, writer, log
    cdef public list lines
    cdef public dict names
    cdef public double warned
    cdef public long long reported, second
    cdef public str stamp

    cpdef json_line(self, Exchange exchange)
    cpdef clf_line(self, Exchange exchange)
    cpdef str _name(self, str name)
    cpdef _add(self, str line)
    cpdef flush(self)
