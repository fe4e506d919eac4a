"""Helpers of the HTTP tests: a Service with its HTTP trigger on 127.0.0.1, and a client.

:func:`serve_http_fixture` is the fixture ``serve_http`` (import it into a test module); it builds on
the ``start_service`` and ``workflows`` fixtures of ``conftest.py`` and adds ``mapped``,
a spec with a mapped task.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nbflow.service import Service
from nbflow.service.http import MAX_BODY, HttpServer, start_http
from nbflow.service.jobs import Job

JSON = {"Content-Type": "application/json"}

MAPPED = '''
nbflow: 1
name: mapped
parameters:
  n: {type: integer, default: 3}
tasks:
  numbers: {use: "http_helpers:numbers", args: {n: {$param: n}}}
  square: {use: "http_helpers:square", map: numbers, args: {x: {$task: numbers}}}
  total: {use: "http_helpers:total", args: {values: {$task: square}}, export: true}
'''

HELPERS = '''
def numbers(n: int) -> list:
    return list(range(n))


def square(x: int) -> int:
    return x * x


def total(values: list) -> int:
    return sum(values)
'''


def on_loop(service: Service, coro: Any, timeout: float = 60) -> Any:
    """Run ``coro`` on the service's loop (the loop thread of ``start_service``)."""
    assert service.loop is not None
    return asyncio.run_coroutine_threadsafe(coro, service.loop).result(timeout)


class Client:
    """Requests to one server, with ``http.client`` (each on a new connection)."""

    def __init__(self, server: HttpServer, token: str | None = None) -> None:
        self.server = server
        self.token = token

    def __call__(self, method: str, path: str, body: bytes | str | None = None, *,
                 headers: dict[str, str] | None = None,
                 auth: bool = True) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or text) of one request."""
        all_headers = dict(headers or {})
        if auth and self.token is not None:
            all_headers.setdefault("Authorization", f"Bearer {self.token}")
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            data = response.read().decode()
            status, got = response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        if got.get("content-type", "").startswith("application/json"):
            return status, got, json.loads(data)
        return status, got, data

    def post(self, params: Any, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
        body = params if isinstance(params, (bytes, str)) else json.dumps(params)
        return self("POST", "/jobs", body, headers={**JSON, **kwargs.pop("headers", {})},
                    **kwargs)


@pytest.fixture(name="serve_http")
def serve_http_fixture(start_service: Callable[..., Service], workflows: dict[str, Path],
               tmp_path: Path) -> Iterator[Callable[..., tuple[Client, Service]]]:
    """``serve_http(workflow, token=..., max_body=..., **service_kwargs)``: a started
    service with the HTTP trigger on 127.0.0.1 (a free port); both stopped after the test."""
    (tmp_path / "http_helpers.py").write_text(HELPERS)
    (tmp_path / "mapped.yaml").write_text(textwrap.dedent(MAPPED))
    specs = {**workflows, "mapped": tmp_path / "mapped.yaml"}
    started: list[tuple[Service, HttpServer]] = []

    def start(workflow: str = "served", *, token: str | None = None,
              max_body: int = MAX_BODY, **kwargs: Any) -> tuple[Client, Service]:
        service = start_service(specs[workflow], **kwargs)
        server = on_loop(service, start_http(service, "127.0.0.1", 0, token=token,
                                             max_body=max_body))
        started.append((service, server))
        return Client(server, token), service

    yield start
    for service, server in started:
        on_loop(service, server.stop())


def finished(service: Service, job_id: str) -> Job | None:
    job = service.job(job_id)
    return job if job.done else None


