"""
The DNS-over-TCP listener's connections (RFC 7766 section 6.2.3): a cap on
how many are open, an idle timeout, and room for a new client at the cap.

- At most ``max_conns`` connections (``--dns-tcp-max-conns``) are open.
  When a new one comes at the cap, the idle connection that has been idle
  longest is closed to make room, so that a new client is still answered
  whatever the old ones do; only when every connection is busy (a lookup
  under way, or output its client does not read) is the new one refused.
- A connection idle for ``idle_timeout`` seconds (``--dns-tcp-idle-timeout``)
  is closed: idle means no query received whole and no answer finished,
  so bytes trickling in without making a query do not keep it open.
- A connection whose client has not read its answers (its unsent output
  over the transport's buffer, :mod:`glimpse.dns.stream`) for as long is
  aborted: a slow reader holds neither memory nor a slot for ever.

Idle connections are kept in the order they were last active, so the one
to close for room and those past the timeout are found at the front,
without walking them all.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING

import attrs
from twisted.internet.protocol import ServerFactory
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from glimpse.dns.stream import GlimpseStreamProtocol

if TYPE_CHECKING:
    from twisted.internet.interfaces import IAddress, IReactorTime

    from glimpse.dns.keeper import FastAnswers
    from glimpse.dns.protocols import Controller

#: Seconds between two log lines about refused connections.
REFUSAL_LOG_INTERVAL = 60.0


@attrs.define
class StreamCounts:
    """
    What happened to DNS-over-TCP connections, for the logs and tests.

    :ivar accepted: connections answered.
    :ivar evicted: idle connections closed to make room for a new one.
    :ivar refused: new connections closed at once: the cap was full of
        busy ones.
    :ivar timed_out: connections closed after ``idle_timeout`` idle.
    :ivar stuck: connections aborted because their client did not read.
    """

    accepted: int = 0
    evicted: int = 0
    refused: int = 0
    timed_out: int = 0
    stuck: int = 0


class StreamFactory(ServerFactory):
    """
    The DNS-over-TCP listener's factory: builds a
    :class:`glimpse.dns.stream.GlimpseStreamProtocol` per connection, and
    holds them to the cap and the timeout (see the module).

    :param controller: the :class:`glimpse.dns.server.GlimpseServerFactory`
        that answers.
    :param clock: the :class:`twisted.internet.interfaces.IReactorTime` idle
        time is measured with.
    :param answers: the fast path's answers, shared with UDP
        (:attr:`glimpse.dns.fastpath.FastDatagramProtocol.answers`), or
        ``None``: everything through twisted.names.
    :param max_conns: connections open at once.
    :param idle_timeout: seconds a connection may be idle, or stuck.
    :param sweep: seconds between two checks of the timeouts.
    """

    log = Logger()

    def __init__(self, controller: Controller, clock: IReactorTime,
                 answers: FastAnswers | None = None, max_conns: int = 1024,
                 idle_timeout: float = 30.0, sweep: float = 1.0) -> None:
        self.controller = controller
        self.answers = answers
        self.max_conns = max_conns
        self.idle_timeout = idle_timeout
        self.counts = StreamCounts()
        self._clock = clock
        # Idle connections, least recently active first; busy ones apart.
        self._idle: OrderedDict[GlimpseStreamProtocol, None] = OrderedDict()
        self._busy: set[GlimpseStreamProtocol] = set()
        self._sweep = LoopingCall(self.sweep)
        self._sweep.clock = clock
        self._sweep_interval = sweep
        self._refusals_logged_at: float | None = None
        self._refusals_unlogged = 0

    @property
    def open_connections(self) -> int:
        """
        How many connections are open (closing ones left out).
        """
        return len(self._idle) + len(self._busy)

    def startFactory(self) -> None:
        """
        Start checking the timeouts (the port listens).
        """
        if self.answers is not None:
            self.answers.attach()
        if not self._sweep.running:
            self._sweep.start(self._sweep_interval, now=False)

    def stopFactory(self) -> None:
        """
        Stop checking the timeouts (the port stopped listening).
        """
        if self.answers is not None:
            self.answers.detach()
        if self._sweep.running:
            self._sweep.stop()

    def buildProtocol(self, addr: IAddress | None) -> GlimpseStreamProtocol | None:
        """
        A connection, made room for at the cap; ``None`` (closed at once)
        when every open connection is busy.

        :param addr: the client's address (not needed).
        """
        if self.open_connections >= self.max_conns:
            if not self._idle:
                self._refused()
                return None
            oldest, _ = self._idle.popitem(last=False)
            self.counts.evicted += 1
            oldest.close()
        connection = GlimpseStreamProtocol(self.controller, self, self.answers)
        connection.factory = self
        connection.last_active = self.now()
        self._idle[connection] = None
        self.counts.accepted += 1
        return connection

    def _refused(self) -> None:
        self.counts.refused += 1
        self._refusals_unlogged += 1
        now = self.now()
        last = self._refusals_logged_at
        if last is None or now - last >= REFUSAL_LOG_INTERVAL:
            self.log.warn("DNS over TCP: {count} connection(s) refused, all {max} busy "
                          "(--dns-tcp-max-conns)", count=self._refusals_unlogged,
                          max=self.max_conns)
            self._refusals_logged_at, self._refusals_unlogged = now, 0

    def now(self) -> float:
        """
        The clock's time, seconds.
        """
        return self._clock.seconds()

    def touch(self, connection: GlimpseStreamProtocol) -> None:
        """
        ``connection`` received whole queries.

        :param connection: the connection.
        """
        connection.last_active = self._clock.seconds()
        if connection in self._idle:
            self._idle.move_to_end(connection)

    def busy(self, connection: GlimpseStreamProtocol) -> None:
        """
        ``connection`` waits for a lookup or for its client to read.

        :param connection: the connection.
        """
        if self._idle.pop(connection, False) is None:
            self._busy.add(connection)

    def ready(self, connection: GlimpseStreamProtocol) -> None:
        """
        ``connection`` is idle again: its idle time starts now.

        :param connection: the connection.
        """
        if connection in self._busy:
            self._busy.discard(connection)
            connection.last_active = self._clock.seconds()
            self._idle[connection] = None

    def closed(self, connection: GlimpseStreamProtocol) -> None:
        """
        ``connection`` is gone, or going.

        :param connection: the connection.
        """
        self._idle.pop(connection, None)
        self._busy.discard(connection)

    def sweep(self) -> None:
        """
        Close the connections idle for ``idle_timeout`` seconds, and abort
        those whose client has not read for as long.
        """
        now = self._clock.seconds()
        deadline = now - self.idle_timeout
        while self._idle:
            oldest = next(iter(self._idle))
            if oldest.last_active > deadline:
                break
            del self._idle[oldest]
            self.counts.timed_out += 1
            oldest.close()
        for connection in [c for c in self._busy
                           if c.paused_since is not None and c.paused_since <= deadline]:
            self.counts.stuck += 1
            connection.close(abort=True)


def fitted_max_conns(asked: int, open_files: int | None) -> int:
    """
    The cap on DNS-over-TCP connections that fits the open-file limit: at
    most a quarter of it (the HTTP API may take half, Consul and the rest
    need some), saying so in the log when that lowers ``asked``.

    :param asked: ``--dns-tcp-max-conns``.
    :param open_files: the open-file limit, or ``None`` when unlimited.
    """
    if open_files is None or asked <= open_files // 4:
        return asked
    fitted = max(1, open_files // 4)
    StreamFactory.log.warn(
        "DNS: --dns-tcp-max-conns={asked} does not fit the open-file limit ({files}): at "
        "most {conns} TCP connections; raise the limit (systemd: LimitNOFILE=) to allow "
        "more", asked=asked, files=open_files, conns=fitted)
    return fitted
