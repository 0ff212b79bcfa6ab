# C types for server.py when Cython compiles it (setup.py); the .py is the implementation.

cdef class Server:
    cdef public object name, address, cookie, maxconn, config_weight, weight, slowstart
    cdef public object admin, up, responses, pool, check, reason, latency_counts
    cdef public object pool_config, last_change
    cdef public bint backup, dynamic
    cdef public long long in_flight, requests, failures, bytes_in, bytes_out, max_in_flight
    cdef public double latency_sum
    cdef object __weakref__

    cpdef observe_latency(self, double seconds)
