# C types for headers.py when Cython compiles it (setup.py); the .py is the implementation.

# the tables connection_header consults, typed so that lookups are direct C calls
cdef dict _PLAIN_CONNECTION
cdef frozenset NOT_HOP_BY_HOP

cpdef tuple connection_header(bytes value, set names)
