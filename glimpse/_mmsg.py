"""
Datagrams in batches on Linux: ``recvmmsg(2)`` reads up to a batch of
datagrams in one system call and ``sendmmsg(2)`` sends the answers in one
more, where Python's socket module makes two calls per datagram, parses an
address tuple for every ``sendto`` and formats one for every ``recvfrom``.
Each answer goes back to the address it came from without that address
ever becoming a Python object.

All memory the kernel reads or writes is allocated once here, in fixed
slots, and every length handed to the kernel is bounded by its slot, so
nothing a client sends can make the kernel write past a buffer: a datagram
longer than a slot is truncated by the kernel, as ``recvfrom`` with the
same size would, and an answer longer than a slot is left to the caller.

Where ``recvmmsg`` is missing (not Linux, or a libc without it),
L{available} is false and callers read datagram by datagram.
"""

import ctypes
import ctypes.util
import errno
import socket
import struct
from time import perf_counter_ns

#: Room for any socket address Glimpse listens with (sockaddr_in6 is 28).
_NAME_SIZE = 32
#: Neither call may ever block the reactor, whatever the socket's mode.
_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0x40)


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint32)]


def _libc_calls():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return recv, send


_CALLS = _libc_calls()
#: Whether batched I/O can be used on this system.
available = _CALLS is not None and ctypes.sizeof(ctypes.c_void_p) == 8


class BatchSocket:
    """
    Batched reads and answers on one non-blocking UDP socket.

    :param sock: the socket (AF_INET or AF_INET6, SOCK_DGRAM).
    :param size: the largest datagram read whole.
    :param batch: datagrams per system call.
    """

    def __init__(self, sock, size=8192, batch=64):
        self._fd = sock.fileno()
        self._family = sock.family
        self._size, self._batch = size, batch
        self._recv, self._send = _CALLS
        self._in = ctypes.create_string_buffer(batch * size)
        self._out = ctypes.create_string_buffer(batch * size)
        self._names = ctypes.create_string_buffer(batch * _NAME_SIZE)
        in_iov, out_iov = (_IOVec * batch)(), (_IOVec * batch)()
        self._in_hdrs, self._out_hdrs = (_MMsgHdr * batch)(), (_MMsgHdr * batch)()
        in_base, out_base = ctypes.addressof(self._in), ctypes.addressof(self._out)
        self._names_base = ctypes.addressof(self._names)
        for i in range(batch):
            in_iov[i].base, in_iov[i].len = in_base + i * size, size
            out_iov[i].base = out_base + i * size
            hdr = self._in_hdrs[i].hdr
            hdr.name, hdr.namelen = self._names_base + i * _NAME_SIZE, _NAME_SIZE
            hdr.iov, hdr.iovlen = ctypes.addressof(in_iov[i]), 1
            out = self._out_hdrs[i].hdr
            out.iov, out.iovlen = ctypes.addressof(out_iov[i]), 1
        self._iovs = (in_iov, out_iov)  # the headers point into these
        # Views to read and write the kernel's structures without a ctypes
        # call per field: each mmsghdr is 64 bytes (16 uint32s, 8 uint64s).
        self._in_bytes = memoryview(self._in).cast("B")
        self._out_bytes = memoryview(self._out).cast("B")
        self._in_u32 = memoryview(self._in_hdrs).cast("B").cast("I")
        self._out_u32 = memoryview(self._out_hdrs).cast("B").cast("I")
        self._out_u64 = memoryview(self._out_hdrs).cast("B").cast("Q")
        self._names_bytes = memoryview(self._names).cast("B")
        self._out_iov_u64 = memoryview(out_iov).cast("B").cast("Q")
        # Per slot, where its fields are in those views, so that nothing is
        # computed per datagram: for reading, the datagram's start, msg_len,
        # msg_namelen and the name's address; for answering, the start, the
        # iovec's length, msg_name and msg_namelen.
        self._in_slots = [(i * size, i * 16 + 14, i * 16 + 2, self._names_base + i * _NAME_SIZE)
                          for i in range(batch)]
        self._out_slots = [(i * size, i * 2 + 1, i * 8, i * 16 + 2) for i in range(batch)]
        assert ctypes.sizeof(_MMsgHdr) == 64

    def serve(self, answer, other, budget):
        """
        Read up to C{budget} datagrams; send C{answer(data)} back for each
        that has one (bytes), in one ``sendmmsg`` per batch; give the others
        (and any whose answer would not fit a slot) to
        C{other(data, address)}.

        :return: ``[(elapsed_ns, count), ...]``: per batch, how many
            answers were sent and the time from reading the batch to their
            being sent.
        """
        timings = []
        size, batch = self._size, self._batch
        in_bytes, in_u32 = self._in_bytes, self._in_u32
        out_bytes, out_u32, out_u64 = self._out_bytes, self._out_u32, self._out_u64
        out_iov = self._out_iov_u64
        in_slots, out_slots = self._in_slots, self._out_slots
        in_hdrs, out_hdrs = ctypes.addressof(self._in_hdrs), ctypes.addressof(self._out_hdrs)
        while budget > 0:
            count = self._recv(self._fd, in_hdrs, min(batch, budget), _DONTWAIT, None)
            if count <= 0:
                return timings  # EAGAIN: drained; any other error shows again on the next read
            received = perf_counter_ns()
            budget -= count
            sent = 0
            for i in range(count):
                start, length_at, namelen_at, name = in_slots[i]
                data = in_bytes[start:start + in_u32[length_at]].tobytes()
                namelen = in_u32[namelen_at]
                # msg_namelen is the slot's size again for the next read.
                in_u32[namelen_at] = _NAME_SIZE
                response = answer(data)
                if response is None or len(response) > size:
                    other(data, self._address(i, namelen))
                    continue
                at, iov_len_at, name_at, out_namelen_at = out_slots[sent]
                out_bytes[at:at + len(response)] = response
                out_iov[iov_len_at] = len(response)
                # The answer goes to the query's own address, as read.
                out_u64[name_at] = name
                out_u32[out_namelen_at] = namelen
                sent += 1
            if sent:
                self._send_all(out_hdrs, sent)
                timings.append((perf_counter_ns() - received, sent))
        return timings

    def _send_all(self, hdrs, count):
        # sendmmsg stops at the first datagram it cannot send: that one is
        # dropped (a full buffer, or a client gone: UDP loses it anyway)
        # and the rest are sent.
        done = 0
        while done < count:
            n = self._send(self._fd, hdrs + done * 64, count - done, _DONTWAIT)
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            done += n if n > 0 else 1

    def _address(self, i, namelen):
        # The sender as the socket module gives it: (host, port) for IPv4,
        # (host, port, flowinfo, scope_id) for IPv6.
        start = i * _NAME_SIZE
        name = self._names_bytes[start:start + namelen].tobytes()
        if self._family == socket.AF_INET6:
            port, flowinfo = struct.unpack_from("!HI", name, 2)
            scope_id, = struct.unpack_from("=I", name, 24)
            return (socket.inet_ntop(socket.AF_INET6, name[8:24]), port, flowinfo, scope_id)
        port, = struct.unpack_from("!H", name, 2)
        return (socket.inet_ntop(socket.AF_INET, name[4:8]), port)
