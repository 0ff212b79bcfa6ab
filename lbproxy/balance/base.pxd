# C types for base.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.backends.server cimport Server


cdef class Balancer:
    cdef public list servers
    cdef dict __dict__          # attributes of subclasses and wrappers, as in Python

    cpdef pick(self, request, Server avoid=*)
