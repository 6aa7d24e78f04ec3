"""How many request bodies are worked on at once: per client and in total (an ASGI layer).

Parsing, validating and applying a body costs CPU and memory in the thread pool; a client that
sends many large bodies at once must not take that from the others. ``Admission`` takes a slot
when a route has read a body to its end (so a slow or unauthenticated upload holds none: routes
authenticate before they read, and refuse without reading) and gives it back when the answer has
been sent. Without a slot the route never sees the end of its body (``Busy``, a ``BodyRefused``
its handler answers and audits): the answer is

- 429 (``throttled``, ``Retry-After``) when this client already has ``per_client`` bodies in
  work;
- 503 (``transient``, ``Retry-After``) when ``total`` bodies are in work.

"The client" is the credential presented (``Authorization`` or ``X-API-Key``, hashed), else the
peer address: a credential that is not valid is refused before its body is read, so it holds no
slot, and nobody can use up another client's share without its credential. The counting itself
is ``Slots``: plain values, no I/O.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

from starlette.datastructures import Headers

from wor_bridge.service.bodies import BODY_METHODS, BodyRefused


class Busy(BodyRefused):
    """No slot: 429 (``throttled``) or 503 (``transient``), with ``Retry-After``."""

    def __init__(self, status: int, message: str, retry_after_s: int = 1) -> None:
        code = "throttled" if status == 429 else "transient"
        super().__init__(status, code, "(request)", message, {"Retry-After": str(retry_after_s)})


class Slots:
    """Counts bodies in work per client and in total; thread-safe."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self._held: dict[str, int] = {}
        self._sum = 0
        self._lock = threading.Lock()

    def enter(self, client: str, retry_after_s: int = 1) -> None:
        """Take a slot for ``client`` or raise ``Busy`` (its own share first, then the total)."""
        with self._lock:
            mine = self._held.get(client, 0)
            if mine >= self.per_client:
                raise Busy(
                    429,
                    f"at most {self.per_client} request bodies of one client are worked on at "
                    "once (service.max_validations_per_client); retry later",
                    retry_after_s,
                )
            if self._sum >= self.total:
                raise Busy(
                    503,
                    f"at most {self.total} request bodies are worked on at once "
                    "(service.max_validations); retry later",
                    retry_after_s,
                )
            self._held[client] = mine + 1
            self._sum += 1

    def leave(self, client: str) -> None:
        """Give back a slot taken by ``enter``."""
        with self._lock:
            left = self._held.get(client, 0) - 1
            if left > 0:
                self._held[client] = left
            else:
                self._held.pop(client, None)
            self._sum -= 1

    @property
    def in_use(self) -> int:
        """Slots taken right now."""
        return self._sum


def client_key(scope: Any) -> str:
    """Who a request counts against: its credential's hash, else its peer address."""
    headers = Headers(scope=scope)
    credential = headers.get("authorization") or headers.get("x-api-key")
    if credential:
        return "key:" + hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest()
    peer = scope.get("client")
    return f"peer:{peer[0] if peer else '-'}"


class Admission:
    """The ASGI layer (see the module docstring); ``retry_after_s`` goes into ``Retry-After``."""

    def __init__(self, app: Any, slots: Slots, retry_after_s: int = 1) -> None:
        self.app = app
        self.slots = slots
        self.retry_after_s = retry_after_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the request; take a slot when its body has been read, give it back at the end."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        key = client_key(scope)
        held = False
        started = False

        async def counted_receive() -> Any:
            nonlocal held
            message = await receive()
            if (
                not held
                and message["type"] == "http.request"
                and not message.get("more_body", False)
            ):
                self.slots.enter(key, self.retry_after_s)  # Busy: the route's handler answers
                held = True
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except Busy as busy:  # answered here only when no handler of the route did
            if started:
                raise
            body, headers = busy.answer()
            await send({"type": "http.response.start", "status": busy.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            if held:
                self.slots.leave(key)
