"""What each request of the HTTP trigger does: the handlers of :mod:`nbflow.service.http`.

Every handler checks the request first (:meth:`_Handler.prepare`): the bearer token
when the service has one, else a loopback ``Host`` header. Replies and errors are
JSON, an error being ``{"error": "one line", ...}``. The status page's own files
(``/``, ``/static/NAME``) are the only ones answered without the token: they hold no
job data. See the module docstring of :mod:`nbflow.service.http` for the routes and
why each check is there.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from tornado import web

from ..errors import JobParamsError, ServiceError, UnknownJobError
from ..jsonvalues import dumps
from .status import StatusPage, job_nodes

if TYPE_CHECKING:
    from .service import Service

__all__ = ["MAX_LIMIT", "STATIC_FILES", "application", "is_loopback"]

logger = logging.getLogger(__name__)

#: the most jobs ``GET /jobs`` lists at once
MAX_LIMIT = 1000

_WIDGET = Path(__file__).parent.parent / "widget"
_STATIC = Path(__file__).parent / "static"
#: the files the status page loads: its own, and the widget's view (drawn by the same code)
STATIC_FILES: dict[str, tuple[Path, str]] = {
    "status.js": (_STATIC / "status.js", "text/javascript"),
    "status.css": (_STATIC / "status.css", "text/css"),
    "widget.js": (_WIDGET / "widget.js", "text/javascript"),
    "widget.css": (_WIDGET / "widget.css", "text/css"),
}
_PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                "frame-ancestors 'none'; form-action 'none'")


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and the loopback addresses (127.0.0.0/8, ``::1``)."""
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def application(service: Service, *, token: str | None, max_body: int) -> web.Application:
    """The routes of the HTTP trigger, with what their handlers need in its settings."""
    return web.Application([
        (r"/", PageHandler),
        (r"/static/([a-z]+\.(?:js|css))", StaticHandler),
        (r"/jobs", JobsHandler),
        (r"/jobs/([^/]+)", JobHandler),
        (r"/jobs/([^/]+)/nodes", NodesHandler),
        (r"/counts", CountsHandler),
        (r"/schema", SchemaHandler),
        (r"/graph", GraphHandler),
    ], default_handler_class=NotFoundHandler, log_function=_log_request, service=service,
        token=token, max_body=max_body, status=StatusPage(service.workflow))


def _log_request(handler: web.RequestHandler) -> None:
    """One line per request under ``nbflow.service.routes``, at DEBUG (ERROR for a 500):
    tornado's own access log would warn of every refused request on the service's stderr."""
    status = handler.get_status()
    level = logging.ERROR if status >= 500 else logging.DEBUG
    request = handler.request
    logger.log(level, "%d %s %s (%s) %.1fms", status, request.method, request.uri,
               request.remote_ip, 1000 * request.request_time())


# -- handlers -------------------------------------------------------------------------------


class _Handler(web.RequestHandler):
    """Common to every route: the token and host checks, JSON replies and errors."""

    #: answered without the token: the page's HTML, scripts and styles (no job data)
    public = False

    @property
    def service(self) -> Service:
        service: Service = self.settings["service"]
        return service

    def set_default_headers(self) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Cache-Control", "no-store")
        self.set_header("Referrer-Policy", "no-referrer")

    def prepare(self) -> None:
        token: str | None = self.settings["token"]
        if token is None:
            host = self.request.host_name
            if not is_loopback(host):
                raise web.HTTPError(403, reason=f"host {host!r} is not this machine's loopback "
                                    "name; without a token only 127.0.0.1 and localhost answer")
        elif not self.public:
            given = self.request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                    value.strip().encode(), token.encode()):
                raise web.HTTPError(401, reason="send the service's token as "
                                    "'Authorization: Bearer TOKEN'")

    def reply(self, data: Any, status: int = 200) -> None:
        """Finish with ``data`` as JSON (always valid JSON: no NaN)."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(data))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Errors are JSON too: ``{"error": "one line", ...}``."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        body: dict[str, Any] = {"error": self._reason}
        if isinstance(exc, web.HTTPError) and exc.reason:
            body["error"] = exc.reason
        if isinstance(exc, _JsonError):
            body.update(exc.body)
        if status_code == 500:
            body["error"] = "internal error (see the service's log)"
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="nbflow"')
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(body))

    def fail(self, status: int, message: str, **extra: Any) -> NoReturn:
        """Stop with an error reply: ``{"error": message, **extra}``."""
        raise _JsonError(status, message, extra)

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):  # a refused request: the client's mistake
            logger.debug("nbflow serve: %s %s -> %d %s", self.request.method,
                         self.request.uri, value.status_code, value.reason)
            return
        super().log_exception(typ, value, tb)


class _JsonError(web.HTTPError):
    """An HTTP error whose JSON body has fields besides ``error`` (the bad ``key``)."""

    def __init__(self, status: int, message: str, body: dict[str, Any]) -> None:
        # (a reason with a line break would be an invalid status line)
        super().__init__(status, reason=" ".join(message.split()))
        self.body = body


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


@web.stream_request_body
class JobsHandler(_Handler):
    """``GET /jobs`` lists jobs; ``POST /jobs`` queues one (its body streamed, to limit it)."""

    def prepare(self) -> None:
        super().prepare()
        self._body = bytearray()
        self._too_large = False
        if self.request.method != "POST":
            return
        limit: int = self.settings["max_body"]
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            # said up front: refused before the body is read (tornado's own limit would
            # close the connection without a word), and the connection is closed after
            self.request.connection.set_max_body_size(int(length))  # type: ignore[union-attr]
            self.fail(413, f"the body has {length} bytes; at most {limit} are accepted")
        # a chunked body is counted as it comes, and dropped past the limit (413); past
        # four times the limit tornado stops reading it (400)
        self.request.connection.set_max_body_size(4 * limit)  # type: ignore[union-attr]
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            self.fail(415, "send the parameters as a JSON object with "
                           "'Content-Type: application/json'")

    def data_received(self, chunk: bytes) -> None:
        if self._too_large:
            return
        self._body += chunk
        if len(self._body) > self.settings["max_body"]:
            self._too_large = True
            self._body.clear()

    def get(self) -> None:
        state = self.get_query_argument("state", None) or None
        raw = self.get_query_argument("limit", "100")
        try:
            limit = int(raw)
        except ValueError:
            self.fail(400, f"limit must be a whole number, not {raw!r}")
        if not 1 <= limit <= MAX_LIMIT:
            self.fail(400, f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
        try:
            jobs = self.service.jobs(state, limit)
        except ServiceError as exc:  # an unknown state
            self.fail(400, _one_line(exc))
        self.reply([job.to_dict() for job in jobs])

    def post(self) -> None:
        if self._too_large:
            self.fail(413, f"the body has more than {self.settings['max_body']} bytes")
        params = _parse_params(bytes(self._body), self.fail)
        source = self.request.remote_ip or ""
        try:
            job = self.service.submit(params, "http", source=source)
        except JobParamsError as exc:
            self.fail(422, _one_line(exc), key=exc.key)
        except ServiceError as exc:  # the service is stopping
            self.fail(503, _one_line(exc))
        if job is None:  # (no dedup key is given, so this means a refusal)
            self.fail(409, "the job was not accepted")
        url = f"/jobs/{job.id}"
        self.set_header("Location", url)
        self.reply({"id": job.id, "url": url, "state": job.state}, 202)


def _parse_params(body: bytes, fail: Callable[..., NoReturn]) -> dict[str, Any]:
    """The body as a JSON object; a 400 (by ``fail``) when it is not one."""

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a JSON value")

    try:
        params = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        fail(400, "the body is not UTF-8 text")
    except (ValueError, RecursionError) as exc:
        fail(400, f"the body is not valid JSON: {exc}")
    if not isinstance(params, dict):
        kind = {list: "an array", str: "a string", type(None): "null",
                bool: "a boolean"}.get(type(params), "a number")
        fail(400, f"the body must be a JSON object of parameters (name: value), not {kind}")
    return params


class JobHandler(_Handler):
    """``GET /jobs/ID`` and ``DELETE /jobs/ID`` (cancel)."""

    def get(self, job_id: str) -> None:
        try:
            job = self.service.job(job_id)
        except UnknownJobError as exc:
            self.fail(404, str(exc), id=job_id)
        self.reply(job.to_dict())

    def delete(self, job_id: str) -> None:
        try:
            job = self.service.cancel(job_id)
        except UnknownJobError as exc:
            self.fail(404, str(exc), id=job_id)
        except ServiceError as exc:  # it has finished
            self.fail(409, _one_line(exc), id=job_id)
        self.reply(job.to_dict())


class NodesHandler(_Handler):
    """``GET /jobs/ID/nodes``: the job's tasks as node infos (what the status page paints)."""

    def get(self, job_id: str) -> None:
        try:
            job = self.service.job(job_id)
        except UnknownJobError as exc:
            self.fail(404, str(exc), id=job_id)
        self.reply(job_nodes(job))


class CountsHandler(_Handler):
    """``GET /counts``: how many jobs are in each state (the status page's header)."""

    def get(self) -> None:
        self.reply(self.service.store.counts())


class SchemaHandler(_Handler):
    """``GET /schema``: the parameters ``POST /jobs`` takes, as JSON Schema."""

    def get(self) -> None:
        self.reply(self.service.workflow.schema())


class GraphHandler(_Handler):
    """``GET /graph``: the layout, structure and state styles the widget's view needs."""

    async def get(self) -> None:
        status: StatusPage = self.settings["status"]
        self.reply(await status.graph())


class PageHandler(_Handler):
    """``GET /``: the status page."""

    public = True

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy", _PAGE_POLICY)
        self.finish((_STATIC / "status.html").read_bytes())


class StaticHandler(_Handler):
    """``GET /static/NAME``: only the files of :data:`STATIC_FILES` (no paths from the URL)."""

    public = True

    def get(self, name: str) -> None:
        if name not in STATIC_FILES:
            self.fail(404, f"no file {name!r}")
        path, kind = STATIC_FILES[name]
        self.set_header("Content-Type", f"{kind}; charset=utf-8")
        self.finish(path.read_bytes())


class NotFoundHandler(_Handler):
    """Any other path: a 404 that lists the routes."""

    def prepare(self) -> None:
        super().prepare()
        self.fail(404, f"no route {self.request.method} {self.request.path}; see GET /jobs, "
                       "POST /jobs, GET /schema, GET /")

