"""
Datagrams in batches on Linux: ``recvmmsg(2)`` reads up to a batch of
datagrams in one system call and ``sendmmsg(2)`` sends the answers in one
more, where Python's socket module makes two calls per datagram, parses an
address tuple for every ``sendto`` and formats one for every ``recvfrom``.

An answer is never assembled in Python: the kernel gathers it from two
pieces, the query's own first two bytes (its ID, where the query was read)
and a pre-encoded :class:`Tail` (the rest of the answer, where it already is in
memory), and sends it to the address the query came from, as read; so an
answered datagram costs one bytes object (its lookup key) and a few stores.

All memory the kernel writes is allocated once here, in fixed slots, and
every length handed to it is bounded by its slot, so nothing a client sends
can make the kernel write past a buffer: a datagram longer than a slot is
truncated by the kernel, as ``recvfrom`` with the same size would.  What the
kernel reads for an answer is held alive until it is sent.

Where ``recvmmsg`` is missing (not Linux, or a libc without it),
:data:`available` is false and callers read datagram by datagram.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import struct
from collections.abc import Callable, Mapping, Sequence
from time import perf_counter_ns
from typing import Any, Protocol, cast

import attrs

from glimpse.dns.request import ClientAddress

#: Room for any socket address Glimpse listens with (sockaddr_in6 is 28).
_NAME_SIZE = 32
#: The size of a sender's address, per socket family.
_ADDRESS_SIZE = {socket.AF_INET: 16, socket.AF_INET6: 28}
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


class _Chars(Protocol):
    # A ctypes char array, as read here: a slice is bytes (typeshed says a
    # list).
    def __getitem__(self, index: slice) -> bytes: ...


def _libc_calls() -> tuple[Any, Any] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv, send = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    send.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    recv.restype = send.restype = ctypes.c_int
    return recv, send


def _bytes_address_call() -> Callable[[bytes], int] | None:
    try:
        call = ctypes.pythonapi.PyBytes_AsString  # CPython's
    except AttributeError:
        return None
    call.argtypes, call.restype = [ctypes.py_object], ctypes.c_void_p
    return cast(Callable[[bytes], int], call)


_CALLS = _libc_calls()
_bytes_address = _bytes_address_call()
#: Whether batched I/O can be used on this system.
available = (_CALLS is not None and _bytes_address is not None
             and ctypes.sizeof(ctypes.c_void_p) == 8)


@attrs.frozen(eq=False)
class Tail:
    """
    A pre-encoded answer's bytes after its ID, ready to be sent from where
    they are.  Whoever holds it holds the bytes, so ``address`` stays valid.

    :ivar data: the bytes.
    :ivar address: where they are in memory (0 when batched I/O is not
        :data:`available`).
    :ivar length: how many there are.
    """

    data: bytes
    address: int
    length: int


class Answer(Protocol):
    """
    What :meth:`BatchSocket.serve` reads of an answer, and counts: the fast
    path's are :class:`glimpse.dns.kept.ExactAnswer`.
    """

    @property
    def tails(self) -> Sequence[Tail]:
        """
        What may be sent after the query's ID: ``tails[ID % len(tails)]``
        is (the ID read as a big-endian number).
        """
    #: How many times it was sent (``serve`` adds one per send).
    hits: int


def tail(data: bytes) -> Tail:
    """
    A pre-encoded answer's bytes after its ID, ready to be sent from where
    they are.

    :param data: bytes.
    :return: a :class:`Tail`.
    """
    address = _bytes_address(data) if _bytes_address is not None and available else 0
    return Tail(data, address, len(data))


class BatchSocket:
    """
    Batched reads and answers on one non-blocking UDP socket.

    :param sock: the socket (AF_INET or AF_INET6, SOCK_DGRAM).
    :param size: the largest datagram read whole.
    :param batch: datagrams per system call.
    :raises RuntimeError: when batched I/O is not :data:`available`.
    """

    def __init__(self, sock: socket.socket, size: int = 8192, batch: int = 64) -> None:
        if _CALLS is None or not available:
            raise RuntimeError("recvmmsg and sendmmsg are not available here")
        self._fd = sock.fileno()
        self._family = sock.family
        self._batch = batch
        self._recv, self._send = _CALLS
        # Slots a cache line further apart than their size: the first bytes
        # of a batch's datagrams, read one after the other, would otherwise
        # all fall in the same cache set (8 KiB apart).
        self._stride = stride = size + 64
        in_buf = ctypes.create_string_buffer(batch * stride)
        names = ctypes.create_string_buffer(batch * _NAME_SIZE)
        self._in, self._names = cast(_Chars, in_buf), cast(_Chars, names)
        # Each answer is two pieces: the query's ID and the answer's tail.
        in_iov, out_iov = (_IOVec * batch)(), (_IOVec * (2 * batch))()
        self._in_hdrs, self._out_hdrs = (_MMsgHdr * batch)(), (_MMsgHdr * batch)()
        self._in_base = in_base = ctypes.addressof(in_buf)
        self._names_base = names_base = ctypes.addressof(names)
        # A socket's senders all have its family's address size, which the
        # kernel writes back into msg_namelen: it never needs resetting.
        address_size = _ADDRESS_SIZE.get(sock.family, _NAME_SIZE)
        for i in range(batch):
            in_iov[i].base, in_iov[i].len = in_base + i * stride, size
            hdr = self._in_hdrs[i].hdr
            hdr.name, hdr.namelen = names_base + i * _NAME_SIZE, _NAME_SIZE
            hdr.iov, hdr.iovlen = ctypes.addressof(in_iov[i]), 1
            out = self._out_hdrs[i].hdr
            out.namelen = address_size
            out.iov, out.iovlen = ctypes.addressof(out_iov[2 * i]), 2
            out_iov[2 * i].len = 2
        self._iovs = (in_iov, out_iov)  # the headers point into these
        self._address_size = address_size
        # Views to read and write the kernel's structures without a ctypes
        # call per field: each mmsghdr is 64 bytes (16 uint32s, 8 uint64s),
        # each iovec 16 (2 uint64s).
        self._in_u32 = memoryview(self._in_hdrs).cast("B").cast("I")
        self._in_bytes = memoryview(in_buf).cast("B")
        self._out_u64 = memoryview(self._out_hdrs).cast("B").cast("Q")
        self._out_iov = memoryview(out_iov).cast("B").cast("Q")
        # Per slot, where its fields are, so that nothing is computed per
        # datagram: for reading, the datagram's start and its msg_len; for
        # answering, the tail's iovec (base and length).
        self._in_slots = [(i * stride, i * 16 + 14) for i in range(batch)]
        self._out_slots = [(i * 4 + 2, i * 4 + 3) for i in range(batch)]
        # Answer k goes to the sender of datagram k, with its ID: true of
        # every answer of a batch with no slow datagram, so it is set once
        # here and only re-pointed after a slow one (answers 0 to _moved - 1
        # are set back before the next batch).
        self._moved = batch
        self._point_back()
        # The tails being sent, held until they are.
        self._held: list[Tail | None] = [None] * batch
        assert ctypes.sizeof(_MMsgHdr) == 64 and ctypes.sizeof(_IOVec) == 16

    def serve(self, answers: Mapping[bytes, Answer],
              other: Callable[[bytes, ClientAddress], object],
              budget: int) -> list[tuple[int, int]]:
        """
        Read up to ``budget`` datagrams and answer those it can, in one
        ``sendmmsg`` per batch; give the others to ``other(data, address)``.

        A datagram is answered when its bytes after the first two (in DNS,
        the ID) are a key of ``answers``: the answer is those two bytes then
        one of ``answers[key].tails``, each a :class:`Tail`, the one the two
        bytes pick (``tails[ID % len(tails)]``: in DNS, the order of the
        records, :mod:`glimpse.dns.rotation`); and ``answers[key].hits``, a
        count, goes up by one (an :class:`Answer`).

        :param answers: the answers, by the bytes after a query's ID.
        :param other: given each datagram not answered, and its sender.
        :param budget: at most this many datagrams are read.

        :return: ``[(elapsed_ns, count), ...]``: per batch, how many
            answers were sent and the time from reading the batch to their
            being sent.
        """
        timings: list[tuple[int, int]] = []
        get, held = answers.get, self._held
        # A slice of the char array is bytes, made in one step (a
        # memoryview's slice and then its bytes take three times as long).
        in_buf, in_u32, out_iov, in_bytes = self._in, self._in_u32, self._out_iov, self._in_bytes
        in_slots, out_slots = self._in_slots, self._out_slots
        in_hdrs, out_hdrs = ctypes.addressof(self._in_hdrs), ctypes.addressof(self._out_hdrs)
        batch = self._batch
        while budget > 0:
            count = self._recv(self._fd, in_hdrs, min(batch, budget), _DONTWAIT, None)
            if count <= 0:
                return timings  # EAGAIN: drained; any other error shows again on the next read
            received = perf_counter_ns()
            budget -= count
            if self._moved:
                self._point_back()
            sent = 0
            for i in range(count):
                start, length_at = in_slots[i]
                end = start + in_u32[length_at]
                entry = get(in_buf[start + 2:end])
                if entry is None:
                    other(in_buf[start:end], self._address(i))
                    continue
                entry.hits += 1
                tails = entry.tails
                # Held: ``other`` may drop the entry before the batch is sent.
                held[sent] = piece = tails[0] if len(tails) == 1 else tails[
                    ((in_bytes[start] << 8) | in_bytes[start + 1]) % len(tails)]
                tail_at, tail_length_at = out_slots[sent]
                out_iov[tail_at] = piece.address
                out_iov[tail_length_at] = piece.length
                if sent != i:
                    self._point(sent, i)
                    self._moved = sent + 1
                sent += 1
            if sent:
                self._send_all(out_hdrs, sent)
                timings.append((perf_counter_ns() - received, sent))
        return timings

    def _point(self, k: int, i: int) -> None:
        # Answer k goes to the sender of datagram i, with that one's ID.
        self._out_u64[k * 8] = self._names_base + i * _NAME_SIZE
        self._out_iov[k * 4] = self._in_base + i * self._stride

    def _point_back(self) -> None:
        # Done before the next batch rather than after this one, so that a
        # batch cut short by an exception cannot leave answers misdirected.
        for k in range(self._moved):
            self._point(k, k)
        self._moved = 0

    def _send_all(self, hdrs: int, count: int) -> None:
        # sendmmsg stops at the first datagram it cannot send: that one is
        # dropped (a full buffer, or a client gone: UDP loses it anyway)
        # and the rest are sent.
        done = 0
        while done < count:
            n = self._send(self._fd, hdrs + done * 64, count - done, _DONTWAIT)
            if n < 0 and ctypes.get_errno() == errno.EINTR:
                continue
            done += n if n > 0 else 1

    def _address(self, i: int) -> ClientAddress:
        # The sender as the socket module gives it: (host, port) for IPv4,
        # (host, port, flowinfo, scope_id) for IPv6.
        start = i * _NAME_SIZE
        name = self._names[start:start + self._address_size]
        if self._family == socket.AF_INET6:
            port, flowinfo = struct.unpack_from("!HI", name, 2)
            scope_id, = struct.unpack_from("=I", name, 24)
            return (socket.inet_ntop(socket.AF_INET6, name[8:24]), port, flowinfo, scope_id)
        port, = struct.unpack_from("!H", name, 2)
        return (socket.inet_ntop(socket.AF_INET, name[4:8]), port)
