"""The HTTP trigger of ``nbflow serve --http``: a JSON API over the job queue, and the status page.

Routes (all JSON unless said otherwise)::

    POST   /jobs            a JSON object of parameters -> 202 {"id", "url", "state"}
    GET    /jobs            the newest jobs first (?state=running, ?limit=20)
    GET    /jobs/ID         one job (404: no such job)
    DELETE /jobs/ID         cancel it (409: it has finished already)
    GET    /jobs/ID/nodes   the job's tasks as the DAG widget paints them
    GET    /counts          how many jobs are in each state
    GET    /schema          the workflow's parameters, as JSON Schema
    GET    /graph           the workflow's laid-out DAG (:mod:`nbflow.service.status`)
    GET    /                the status page (HTML), and /static/... its scripts and styles

The server is tornado's, on the service's own event loop: the handlers
(:mod:`nbflow.service.routes`) call the service directly, and nothing blocks the
loop (the DAG's layout runs in the widget's layout process). This module listens:
the address rule, the sockets, the server's life.

Security, as issue 16 asks:

- it listens on 127.0.0.1 by default; any other address needs a token
  (:class:`~nbflow.errors.ServiceError` otherwise);
- with a token, every API request needs ``Authorization: Bearer TOKEN``, compared in
  constant time (:func:`hmac.compare_digest`). The status page's HTML, scripts and
  styles hold no job data and load without it (a browser cannot attach a header to a
  page it navigates to): the page reads the token from its URL's fragment
  (``/#token=...``, which the browser never sends) and sends it with each API call;
- without a token, requests must name a loopback host (``Host: 127.0.0.1:8000``), so a
  web page on another site cannot reach the API through DNS rebinding;
- ``POST /jobs`` takes ``Content-Type: application/json`` only: a cross-site form
  cannot send that without a CORS preflight, which this server never answers;
- bodies are limited (``max_body``, 413 beyond it); parameters are JSON values
  (no ``NaN``), checked against the workflow's parameters before the job is queued.
"""

from __future__ import annotations

import errno
import logging
import socket
from typing import TYPE_CHECKING

from ..errors import ServiceError

try:
    from tornado import httpserver
except ImportError as exc:  # (the "service" extra)
    msg = f'nbflow serve --http needs tornado: pip install "nbflow[service]" ({exc})'
    raise ImportError(msg) from exc

from .routes import application, is_loopback

if TYPE_CHECKING:
    from .service import Service

__all__ = ["DEFAULT_HOST", "MAX_BODY", "HttpServer", "is_loopback", "start_http"]

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
#: the largest request body accepted by default (``POST /jobs``), in bytes
MAX_BODY = 1 << 20


class HttpServer:
    """A running HTTP trigger: where it listens, and :meth:`stop`."""

    def __init__(self, server: httpserver.HTTPServer, host: str, port: int) -> None:
        self._server = server
        #: the address it listens on, as given
        self.host = host
        #: the port it listens on (the one picked, when 0 was asked for)
        self.port = port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop listening, and close the connections still open."""
        self._server.stop()
        await self._server.close_all_connections()

    def __repr__(self) -> str:
        return f"HttpServer({self.url})"


async def start_http(service: Service, host: str = DEFAULT_HOST, port: int = 0, *,
                     token: str | None = None, max_body: int = MAX_BODY) -> HttpServer:
    """Serve ``service``'s jobs over HTTP on ``host:port``; call it on the service's loop.

    Parameters
    ----------
    service
        Takes the jobs (:meth:`Service.submit`) and answers for them.
    host, port
        Where to listen; port 0 picks a free one (see :attr:`HttpServer.port`).
    token
        Required as ``Authorization: Bearer TOKEN`` by every API request; needed when
        ``host`` is not a loopback address.
    max_body
        The largest request body, in bytes (413 beyond it).

    Raises
    ------
    ServiceError
        A non-loopback ``host`` without a token, or an address that cannot be bound
        (a port in use), in one line naming ``host:port``.
    """
    if not is_loopback(host) and not token:
        raise ServiceError(f"--http {host}:{port} listens beyond this machine: give it a token "
                           "(--token or NBFLOW_SERVICE_TOKEN), or listen on 127.0.0.1")
    try:
        sockets = _bind(host, port)
    except OSError as exc:
        why = "the port is in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise ServiceError(f"cannot listen on {host}:{port}: {why}") from None
    app = application(service, token=token or None, max_body=max_body)
    # (POST /jobs streams its body, and answers 413 past max_body)
    server = httpserver.HTTPServer(app, max_body_size=max_body, xheaders=False)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    logger.info("nbflow serve: HTTP on %s:%d", host, bound)
    return HttpServer(server, host, int(bound))


def _bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address of ``host`` (one port for all, when 0 picks it).

    As :func:`tornado.netutil.bind_sockets`, which leaves its sockets open when a bind
    fails (a port in use): these are closed before the error is raised.
    """
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM,
                                   0, socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first address got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:  # localhost's ::1 on a host without IPv6
                if exc.errno == errno.EADDRNOTAVAIL and family == socket.AF_INET6 and \
                        len(infos) > 1:
                    sockets.pop().close()
                    continue
                raise
            sock.setblocking(False)
            sock.listen(128)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
