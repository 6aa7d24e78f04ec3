"""What every answer of the service says about itself (an ASGI layer, outermost).

- ``X-Content-Type-Options: nosniff`` on every answer: a browser never guesses a media type;
- ``Cache-Control: no-store`` on every answer that does not set its own: FHIR answers carry
  patient data, token answers credentials, refusals name Tasks; nothing is worth caching;
- no ``Server`` banner (``uvicorn.run(server_header=False)`` in the serve command), and no
  redirect at all (``redirect_slashes`` is off), so no answer is built from the ``Host`` header.
"""

from __future__ import annotations

from typing import Any, Final

NOSNIFF: Final = (b"x-content-type-options", b"nosniff")
NO_STORE: Final = (b"cache-control", b"no-store")


class SecurityHeaders:
    """Adds the headers above to the start of every HTTP answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message.get("type") == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"x-content-type-options", b"server")
                ]
                headers.append(NOSNIFF)
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
