# C types for dispatch.py when Cython compiles it (setup.py); the .py is the implementation.

from lbproxy.backends.backend cimport Backend
from lbproxy.backends.server cimport Server
from lbproxy.proxy.exchange cimport Exchange


cdef class Dispatcher:
    cdef public Backend backend
    cdef public object state, queue, compression, cache

    cpdef dispatch(self, Exchange exchange, Server avoid)
    cpdef _send(self, Exchange exchange, Server server)
    cpdef release(self, Exchange exchange, bint ok)
    cpdef bint retry(self, Exchange exchange, str kind) except? -1
    cpdef serve_queue(self)
