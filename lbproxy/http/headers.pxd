# C types for headers.py when Cython compiles it (setup.py); the .py is the implementation.

cpdef tuple connection_header(bytes value, set names)
