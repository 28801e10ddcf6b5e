"""
DNS over TCP (RFC 7766): length-prefixed messages, pipelined, answered from
the fast path's pre-encoded answers when it has them
(:class:`glimpse.dns.keeper.FastAnswers`, the same ones UDP answers from)
and by twisted.names otherwise, with the memory a connection may hold
bounded.

- Every query in a segment is answered, fast hits first in one write, each
  message read as soon as it is whole: a client may send many queries
  without waiting (RFC 7766 section 6.2.1.1).  Answers may come out of
  order only when one waits for a first lookup.
- A hit costs one lookup of the query's bytes after its ID
  (:class:`glimpse.dns.kept.StreamAnswer`) and four pieces of bytes joined:
  the length prefix, the ID, the header and question, and the answer's
  bytes in the order the ID picks (:mod:`glimpse.dns.rotation`).  A miss
  goes through twisted.names, whose answer is kept for UDP and TCP alike.
- A slow reader cannot make Glimpse hold its answers without bound: when
  the unsent output passes the transport's buffer size (64 KiB) the
  connection stops being read and parsed until the output drains, and at
  most :data:`MAX_PENDING` of its queries wait for a lookup at once.  The
  connections factory (:mod:`glimpse.dns.connections`) closes one that
  stays stuck, and idle ones.
- A message shorter than a DNS header (a zero or small length prefix) gets
  no answer, and the connection is closed: nothing after it can be trusted
  to be framed as the client meant.  A message that does not decode gets
  FORMERR, as over UDP.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import TYPE_CHECKING, Protocol, cast

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.logger import Logger
from twisted.names import dns
from zope.interface import implementer

from glimpse.dns.kept import StreamAnswer
from glimpse.dns.plain import plain_key
from glimpse.dns.request import RequestContext
from glimpse.dns.wire import TCP_SIZE

if TYPE_CHECKING:
    from glimpse.dns.keeper import FastAnswers
    from glimpse.dns.protocols import Controller

#: Queries of one connection that may wait for a lookup at once (a job's
#: first lookup waits for its first fetch): past it the connection is not
#: read until one is answered, so their answers cannot pile up unbounded.
MAX_PENDING = 32

#: The header of a DNS message: anything shorter cannot be answered.
_HEADER = 12

#: Bytes of fast answers gathered before they are written (and the
#: transport may say its buffer is full): a segment of pipelined queries
#: for large answers is not all answered in memory at once.
_FLUSH = 65536


class _Transport(Protocol):
    # What a connection uses of its TCP transport, which ITransport leaves
    # out (the consumer and producer halves, abortConnection).
    disconnected: bool

    def write(self, data: bytes) -> None: ...
    def registerProducer(self, producer: object, streaming: bool) -> None: ...
    def unregisterProducer(self) -> None: ...
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def loseConnection(self) -> None: ...
    def abortConnection(self) -> None: ...


class Tracker(Protocol):
    """
    What a connection tells the factory that keeps count of them
    (:class:`glimpse.dns.connections.StreamFactory`): when it is busy
    (waiting for a lookup, or for its client to read), when it is idle
    again, when it answered, and when it is gone.
    """

    def busy(self, connection: GlimpseStreamProtocol) -> None:
        """
        The connection waits for a lookup or for its client to read: it is
        not idle, not to be closed for room.
        """

    def ready(self, connection: GlimpseStreamProtocol) -> None:
        """
        The connection is idle again (no query waiting, output drained).
        """

    def touch(self, connection: GlimpseStreamProtocol) -> None:
        """
        The connection received whole queries: it is the most recently
        active one.
        """

    def closed(self, connection: GlimpseStreamProtocol) -> None:
        """
        The connection is gone.
        """

    def now(self) -> float:
        """
        The time, in seconds, on the clock idleness is measured with.
        """


@implementer(IPushProducer)
class GlimpseStreamProtocol(StreamProtocol):
    """
    One DNS-over-TCP connection.

    :param controller: the :class:`glimpse.dns.server.GlimpseServerFactory`
        that answers what the fast path does not.
    :param tracker: the :class:`Tracker` that keeps count of connections.
    :param answers: the fast path's answers, or ``None`` to send everything
        through twisted.names.
    """

    log = Logger()
    #: Answers larger than this go without their additional records (see
    #: :func:`glimpse.dns.wire.encode`).
    reduce_to: int | None = TCP_SIZE

    def __init__(self, controller: Controller, tracker: Tracker,
                 answers: FastAnswers | None = None) -> None:
        self.controller = controller
        self._tracker = tracker
        self._answers = answers
        self._buffer = b""
        # A message that comes in many segments is joined once it is whole,
        # not segment by segment (which would copy it once per segment):
        # the segments after _buffer, their size, and the size _buffer and
        # they must reach before it is parsed again (0: parse every segment).
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._need = 0
        #: Whether the transport's unsent output is over its buffer size
        #: (Twisted told us to pause): nothing more is read or parsed.
        self.paused = False
        #: When it paused (the tracker's clock), or ``None``.
        self.paused_since: float | None = None
        #: When it last received whole queries or finished answering (the
        #: tracker's clock): what idleness is measured from.
        self.last_active = 0.0
        self._pending = 0
        self._reading = True
        self._closing = False
        self._serving = False

    @property
    def idle(self) -> bool:
        """
        Whether no query waits for a lookup and the output is not stuck.
        """
        return not self._pending and not self.paused

    def connectionMade(self) -> None:
        """
        Be told when the unsent output is over the transport's buffer size
        (:meth:`pauseProducing`) and when it has drained
        (:meth:`resumeProducing`).
        """
        cast(_Transport, self.transport).registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        """
        Answer every whole message received so far.

        :param data: bytes from the connection.
        """
        if self._need:
            self._parts.append(data)
            self._parts_size += len(data)
            if len(self._buffer) + self._parts_size < self._need:
                return
            self._buffer = b"".join([self._buffer, *self._parts])
            self._parts, self._parts_size, self._need = [], 0, 0
        else:
            self._buffer = self._buffer + data if self._buffer else data
        self._serve()

    def _serve(self) -> None:
        # Not re-entered: an answer that comes while it runs (a lookup
        # settled) leaves the rest to the loop already running.
        if self._serving or self._closing:
            return
        self._serving = True
        try:
            self._serve_buffer()
        except Exception:
            self.log.failure("Handling DNS over TCP failed")
            self.close()
        finally:
            self._serving = False

    def _serve_buffer(self) -> None:
        buf, pos, size = self._buffer, 0, len(self._buffer)
        answers = self._answers
        stream = answers.kept.stream if answers is not None and answers.enabled else None
        out: list[bytes] = []
        hits = gathered = 0
        received = perf_counter_ns()
        complete = False
        while size - pos >= 2 and not self.paused and self._pending < MAX_PENDING:
            end = pos + 2 + ((buf[pos] << 8) | buf[pos + 1])
            if end > size:
                break
            message, pos, complete = buf[pos + 2:end], end, True
            if stream is not None:
                entry = stream.get(message[2:])
                if entry is not None:
                    tails = entry.answer.tails
                    tail = tails[((message[0] << 8) | message[1]) % len(tails)]
                    if tail is not None:
                        entry.hits += 1
                        out += (entry.prefix, message[:2], entry.head, tail)
                        hits += 1
                        gathered += len(tail)
                        if gathered >= _FLUSH:
                            self._write(out)
                            out, gathered = [], 0
                        continue
            if out:
                self._write(out)
                out, gathered = [], 0
            if len(message) < _HEADER:
                self.controller.stats.dropped += 1
                self._buffer = b""
                self.close()
                return
            self._other(message, received)
            if self._closing:
                return
        self._buffer = rest = buf[pos:]
        if not self._parts:
            # (With parts waiting, _need is already the size of the message
            # at the head of _buffer, which this left as it was.)
            need = 2 + ((rest[0] << 8) | rest[1]) if len(rest) >= 2 else 0
            self._need = need if need > len(rest) else 0
        if out:
            self._write(out)
        if hits:
            self.controller.stats.observe(perf_counter_ns() - received, hits)
        if complete:
            self._tracker.touch(self)
        self._update_reading()

    def _write(self, pieces: list[bytes]) -> None:
        # May pause us (pauseProducing), from inside the write.
        cast(_Transport, self.transport).write(b"".join(pieces))

    def _other(self, message: bytes, received: int) -> None:
        # A query the exact-bytes lookup did not answer: from a kept answer
        # when its key has one, else through twisted.names.
        answers = self._answers
        plain = plain_key(message) if answers is not None and answers.enabled else None
        if plain is not None and answers is not None:
            key, end, _limit = plain
            answer = answers.kept.by_key.get(key)
            if answer is not None and answer.whole_size <= TCP_SIZE:
                entry = StreamAnswer(answer.whole_size.to_bytes(2, "big"),
                                     answer.heads[message[2]] + message[12:end + 5], 0, answer)
                answers.kept.keep_stream(message[2:], entry)
                tail = answer.tails[((message[0] << 8) | message[1]) % len(answer.tails)]
                if tail is not None:
                    entry.hits += 1
                    self._write([entry.prefix, message[:2], entry.head, tail])
                    self.controller.stats.observe(perf_counter_ns() - received)
                    return
            answers.stats.fast_misses += 1
        request = dns.Message()
        try:
            request.fromStr(message)
        except Exception:
            # FORMERR when its header can be read (it can: it is whole).
            self.controller.bytes_received(message, self, None, received)
            return
        context = RequestContext(self, None, received, request)
        if plain is not None:
            context.fast_key, context.name_end = plain[0], plain[1]
        waiting = self.controller.message_received(context)
        if waiting is not None and not waiting.called:
            self._pending += 1
            if self._pending == 1:
                self._tracker.busy(self)
            waiting.addBoth(self._settled)

    def _settled(self, result: object) -> None:
        self._pending -= 1
        if self.transport is None or self._closing:
            return
        if self.idle:
            self._tracker.ready(self)
        if self._buffer and not self.paused:
            self._serve()
        else:
            self._update_reading()

    def _update_reading(self) -> None:
        # Read while nothing holds the connection back; stop while its
        # output is stuck or its lookups are many, so that what it sends
        # meanwhile waits in the kernel, not here.
        want = not self.paused and self._pending < MAX_PENDING and not self._closing
        if want != self._reading and self.transport is not None:
            self._reading = want
            producer = cast(_Transport, self.transport)
            if want:
                producer.resumeProducing()
            else:
                producer.pauseProducing()

    def send_response(self, context: RequestContext, whole: bytes, short: bytes) -> None:
        """
        Send a response from twisted.names whole, without its additional
        records when they would take it over 65,535 bytes; only answers
        that alone do not fit go truncated, with TC=1.  Keep it when it
        answers a plain query from the view.

        :param context: the request answered.
        :param whole: the encoded response (:func:`glimpse.dns.wire.encode`
            already left the additional records out if they did not fit).
        :param short: the same truncated.
        """
        transport = cast("_Transport | None", self.transport)
        if transport is None or self._closing or transport.disconnected:
            return
        data = whole if len(whole) <= TCP_SIZE else short
        transport.write(len(data).to_bytes(2, "big") + data)
        if self._answers is not None:
            self._answers.store(context, whole, short)

    def pauseProducing(self) -> None:
        """
        The unsent output is over the transport's buffer size: stop reading
        and answering until it drains.
        """
        if not self.paused:
            self.paused = True
            self.paused_since = self._tracker.now()
            self._tracker.busy(self)
            self._update_reading()

    def resumeProducing(self) -> None:
        """
        The output drained: answer what was left unparsed, and read again.
        """
        if self.paused:
            self.paused = False
            self.paused_since = None
            if self.idle:
                self._tracker.ready(self)
            if self._buffer:
                self._serve()
            else:
                self._update_reading()

    def stopProducing(self) -> None:
        """
        The connection is going: nothing to stop.
        """

    def close(self, abort: bool = False) -> None:
        """
        Close the connection: once its output is sent, or at once
        (``abort``: a stuck reader never takes it).

        :param abort: drop the unsent output.
        """
        transport = cast("_Transport | None", self.transport)
        if self._closing or transport is None:
            return
        self._closing = True
        self._buffer, self._parts = b"", []
        self._tracker.closed(self)
        transport.unregisterProducer()
        if abort:
            transport.abortConnection()
        else:
            transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        """
        Forget the connection.

        :param reason: why it was lost.
        """
        self._closing = True
        self._buffer, self._parts = b"", []
        self._tracker.closed(self)
