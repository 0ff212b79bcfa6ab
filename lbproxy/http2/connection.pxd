# C types for connection.py when Cython compiles it (setup.py); the .py is the implementation.

cimport cython


cdef class Stream:
    cdef public long long id, send_window, recv_window, consumed, pending_size, unacked
    cdef public object pending, trailers_pending, handle
    cdef public bint end_pending, recv_closed, send_closed, paused
    cdef public int held


cdef class Connection:
    cdef public object handler, settings, clock, decoder, encoder, assembling, abuse
    cdef public bint client, preface_pending, settings_received, goaway_sent
    cdef public bint goaway_received, closed
    cdef public bytearray out, buffer
    cdef public long long remote_initial_window, remote_max_frame, remote_max_streams
    cdef public long long send_window, recv_window, consumed
    cdef public long long last_peer_stream, next_stream_id
    cdef public dict streams, counts
    cdef public object blocked, recently_reset
    cdef public set reset_ids
    cdef public double flood_since
    cdef public long long resets, completed, data_frames_sent

    cpdef receive(self, data)
    cpdef _frames(self, bytes data)
    @cython.locals(stream=Stream)
    cpdef _on_data(self, int flags, long long stream_id, payload)
    cpdef _on_headers(self, int flags, long long stream_id, payload)
    @cython.locals(stream=Stream)
    cpdef _header_block(self, long long stream_id, bint end_stream, block)
    @cython.locals(stream=Stream)
    cpdef _open_peer_stream(self, long long stream_id)
    @cython.locals(stream=Stream)
    cpdef open_stream(self)
    cpdef send_headers(self, Stream stream, list headers, bint end_stream)
    cpdef send_block(self, Stream stream, bytes block, bint end_stream)
    cpdef send_data(self, Stream stream, data, bint end_stream=*)
    cpdef reset(self, Stream stream, int code)
    cpdef ack(self, Stream stream, long long size)
    cpdef delivered(self, Stream stream, long long size)
    cpdef hold(self, Stream stream, int reason)
    cpdef release(self, Stream stream, int reason)
    cpdef source_too_fast(self, Stream stream)
    cpdef finished(self)
    cpdef _consume(self, Stream stream, long long size)
    cpdef _flush_stream(self, Stream stream)
    cpdef _close_send(self, Stream stream)
    cpdef _maybe_close(self, Stream stream)
