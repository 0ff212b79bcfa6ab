# C types for request.py when Cython compiles it (setup.py); the .py is the implementation.

cdef class Request:
    cdef public object downstream, method_b, url_b, host_b, xff_b, length
    cdef public list hparts
    cdef public object extra_hop, norm_path, upgrade_b, connection, forwarded_src
    cdef public bint http11, keep_alive, chunked, expect_continue, is_head, http2
    cdef public bint te_trailers

    cpdef _init_request(self, downstream)
