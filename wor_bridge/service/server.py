"""How ``wor-bridge serve`` runs uvicorn: bounded connections and deadlines (slowloris).

uvicorn bounds an idle keep-alive connection (``timeout_keep_alive``) but not a connection that
never completes its request head, nor one that keeps sending a body nobody reads. So:

- ``BoundedH11Protocol`` is uvicorn's h11 protocol with one deadline per connection: the request
  line and headers must have arrived ``header_timeout_s`` after the connection opened or the
  previous answer was sent (bytes trickling in do not extend it), and a body still arriving after
  the answer was sent (an early refusal) must end within ``body_timeout_s``; otherwise the
  connection is closed. The body a route reads has its own deadline (``bodies.BodyDeadline``).
- ``uvicorn_kwargs``: ``limit_concurrency`` (connections and requests in progress; beyond it
  uvicorn answers 503), ``timeout_keep_alive``, ``h11_max_incomplete_event_size`` (request line
  and headers; larger is 400 and the connection is closed) and the TLS arguments; with TLS the
  protocol also binds the client certificate (``tls.ClientCertH11Protocol``).
- ``serve``: runs uvicorn with those arguments and the JSON logging of ``logs``; logs
  ``service_started`` once the socket is bound (host, port, version, TLS) and
  ``service_stopped`` when the server and its workers have stopped.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from wor_bridge import logs
from wor_bridge.config import ServiceSettings
from wor_bridge.errors import OperationError
from wor_bridge.service import tls

log = structlog.get_logger("wor_bridge.service")

_Watch = Literal["head", "drain"] | None


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a deadline for unread bodies."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 20.0

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        """Start the connection as uvicorn does; its request head is now due."""
        self._deadline: asyncio.TimerHandle | None = None
        self._watching: _Watch = None
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        """Feed h11 as uvicorn does, then see what is due."""
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        """After an answer: the next head is due (or the rest of an unread body)."""
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline, then close as uvicorn does."""
        self._arm(None)
        super().connection_lost(exc)

    def _watch(self) -> None:
        """Arm the deadline for what the connection waits for; keep it while that stays so."""
        if self.transport.is_closing():
            self._arm(None)
            return
        theirs, ours = self.conn.their_state, self.conn.our_state
        want: _Watch = None
        if theirs is h11.IDLE:
            want = "head"
        elif theirs is h11.SEND_BODY and ours in (h11.DONE, h11.MUST_CLOSE):
            want = "drain"
        if want != self._watching:
            self._arm(want)

    def _arm(self, want: _Watch) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._watching = want
        if want is not None:
            seconds = self.header_timeout_s if want == "head" else self.body_timeout_s
            self._deadline = self.loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        self._watching = None
        if not self.transport.is_closing():
            self.transport.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (IPv6 when ``host`` has a colon), for uvicorn to serve.

    Raises ``OperationError`` with one line naming the address and the reason (a port another
    process uses, an address this host does not have, a port below 1024 without the right).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise OperationError(
            f"cannot listen on {host}:{port}: {reason} (see [service] host and port)"
        ) from None
    return sock


def uvicorn_kwargs(service: ServiceSettings, base: Path) -> dict[str, Any]:
    """The keyword arguments of ``uvicorn.run`` for ``service`` besides host and port."""
    kwargs = tls.run_kwargs(service, base)
    protocol = kwargs.pop("http", H11Protocol)
    bounded = type(
        "WorBridgeH11Protocol",
        (BoundedH11Protocol, protocol) if protocol is not H11Protocol else (BoundedH11Protocol,),
        {"header_timeout_s": service.header_timeout_s, "body_timeout_s": service.body_timeout_s},
    )
    return {
        **kwargs,
        "http": bounded,
        "limit_concurrency": service.max_connections,
        "timeout_keep_alive": service.keep_alive_s,
        "h11_max_incomplete_event_size": service.max_header_bytes,
    }


def version() -> str:
    """The installed distribution's version (``unknown`` when run from a bare source tree)."""
    try:
        return metadata.version("wor-bridge")
    except metadata.PackageNotFoundError:
        return "unknown"


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it listens and when it has stopped."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """Bind (and start the app's workers), then log ``service_started`` with the address."""
        await super().startup(sockets)
        if self.should_exit:
            return
        bound = [s.getsockname() for server in self.servers for s in server.sockets]
        host, port = (bound[0][0], bound[0][1]) if bound else (self.config.host, self.config.port)
        log.info(
            "service_started",
            host=host,
            port=port,
            version=version(),
            tls=self.config.ssl_certfile is not None,
        )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        """Stop as uvicorn does (connections, then the app's workers), then log it."""
        await super().shutdown(sockets)
        log.info("service_stopped")


def serve(app: Any, service: ServiceSettings, base: Path, sock: socket.socket) -> None:
    """Run ``app`` on ``sock`` (``listen_socket(service.host, service.port)``, bound before the
    app was built) until SIGINT or SIGTERM."""
    config = uvicorn.Config(
        app,
        host=service.host,
        port=service.port,
        server_header=False,  # no banner naming the server software
        timeout_graceful_shutdown=5,  # an idle TLS keep-alive peer must not hold up SIGTERM
        **logs.uvicorn_logging(),
        **uvicorn_kwargs(service, base),
    )
    _Server(config).run(sockets=[sock])
