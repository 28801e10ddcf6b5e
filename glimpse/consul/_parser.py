"""
The answers of the Consul agent's HTTP/1.1 server, parsed as they come:
only what Consul's answers need, a status line, headers, and a body sized by
``Content-Length`` or sent chunked.  Pure: give :class:`AnswerParser` bytes,
take the answers it completed.  :mod:`glimpse.consul._pipeline` reads
pipelined answers with it.
"""

from __future__ import annotations

import re

import attrs

#: The most bytes of a status line and headers.
MAX_HEAD = 64 * 1024
#: The most bytes of one body (a job of thousands of instances fits).
MAX_BODY = 64 * 1024 * 1024


@attrs.frozen
class RawAnswer:
    """
    One HTTP answer, undecoded.

    :ivar status: the status code.
    :ivar headers: the headers, names lower-cased (the last of repeated ones).
    :ivar body: the body.
    """

    status: int
    headers: dict[bytes, bytes]
    body: bytes


class BadAnswer(Exception):
    """
    The agent's bytes are not an HTTP answer this parser reads.
    """


class AnswerParser:
    """
    Incremental parser of HTTP/1.1 answers, in the order they come.  Pure:
    give it bytes, take what it completed.

    :ivar keep_alive: ``False`` once an answer said ``Connection: close``.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._head: tuple[int, dict[bytes, bytes]] | None = None
        self._chunks: list[bytes] = []
        self._chunked_size = 0
        self.keep_alive = True

    def feed(self, data: bytes) -> list[RawAnswer]:
        """
        Take more bytes.

        :param data: what the connection received.
        :return: the answers these bytes completed, in order.
        :raises BadAnswer: for bytes that cannot be an answer.
        """
        self._buffer += data
        done: list[RawAnswer] = []
        while True:
            answer = self._next()
            if answer is None:
                return done
            done.append(answer)

    def _next(self) -> RawAnswer | None:
        if self._head is None:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD:
                    raise BadAnswer("a header block over 64 KiB")
                return None
            self._head = _read_head(bytes(self._buffer[:end]))
            del self._buffer[:end + 4]
        status, headers = self._head
        if headers.get(b"connection", b"").lower() == b"close":
            self.keep_alive = False
        if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
            body = self._chunked()
        else:
            body = self._sized(headers)
        if body is None:
            return None
        self._head = None
        return RawAnswer(status, headers, body)

    def _sized(self, headers: dict[bytes, bytes]) -> bytes | None:
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            raise BadAnswer("a Content-Length that is not a number") from None
        if not 0 <= length <= MAX_BODY:
            raise BadAnswer(f"a body of {length} bytes")
        if len(self._buffer) < length:
            return None
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    def _chunked(self) -> bytes | None:
        while True:
            line_end = self._buffer.find(b"\r\n")
            if line_end < 0:
                return None
            try:
                size = int(bytes(self._buffer[:line_end]).split(b";")[0], 16)
            except ValueError:
                raise BadAnswer("a chunk size that is not a number") from None
            if size == 0:
                # The last chunk, then trailers (if any) up to an empty line.
                end = self._buffer.find(b"\r\n\r\n", line_end)
                if end < 0:
                    return None
                del self._buffer[:end + 4]
                body, self._chunks, self._chunked_size = b"".join(self._chunks), [], 0
                return body
            self._chunked_size += size
            if self._chunked_size > MAX_BODY:
                raise BadAnswer("a chunked body over 64 MiB")
            if len(self._buffer) < line_end + 2 + size + 2:
                self._chunked_size -= size
                return None
            self._chunks.append(bytes(self._buffer[line_end + 2:line_end + 2 + size]))
            del self._buffer[:line_end + 2 + size + 2]


_HEADER = re.compile(rb"([^:\r\n]+):[ \t]*([^\r\n]*?)[ \t]*(?:\r\n|$)")


def _read_head(head: bytes) -> tuple[int, dict[bytes, bytes]]:
    status_end = head.find(b"\r\n")
    status = head if status_end < 0 else head[:status_end]
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise BadAnswer(f"not a status line: {status[:80]!r}")
    if status_end < 0:
        return int(parts[1]), {}
    rest = head[status_end + 2:]
    # One pass in C over every header (a read costs tens of microseconds,
    # and there are thousands a second): every line must be a header.
    found = _HEADER.findall(rest)
    if rest.count(b"\r\n") + 1 != len(found):
        for line in rest.split(b"\r\n"):
            if b":" not in line:
                raise BadAnswer(f"not a header: {line[:80]!r}")
    return int(parts[1]), {name.strip().lower(): value for name, value in found}
