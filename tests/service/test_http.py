"""The HTTP trigger against a real Service: tornado on 127.0.0.1, SQLite, spec jobs run in-process.

Good and bad bodies (202, 400, 413, 415, 422), the job routes (404, 409), the token
rule (401, and no non-loopback address without one), the host check, a port in use;
and :func:`nbflow.service.status.job_nodes`, the node infos the status page paints.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import wait_until

from nbflow.errors import ServiceError
from nbflow.service import Service
from nbflow.service.http import HttpServer, is_loopback, start_http
from nbflow.service.jobs import Job
from nbflow.service.status import job_nodes, status_line

from .http_client import JSON, finished, on_loop
from .http_client import serve_http_fixture  # noqa: F401 (the fixture serve_http)

SVG = "{http://www.w3.org/2000/svg}"


# -- POST /jobs ---------------------------------------------------------------------------------


def test_a_posted_job_is_queued_and_runs_to_its_end(serve_http):
    client, service = serve_http("served")
    status, headers, body = client.post({"n": 4})
    assert status == 202
    assert body["state"] == "queued"
    assert body["url"] == f"/jobs/{body['id']}" == headers["location"]
    job = wait_until(lambda: finished(service, body["id"]), what="the posted job")
    assert (job.state, job.trigger, job.source, job.results) == (
        "succeeded", "http", "127.0.0.1", {"doubled": 8})
    status, _, shown = client("GET", headers["location"])
    assert status == 200
    assert shown == json.loads(json.dumps(job.to_dict()))
    assert shown["tasks"]["doubled"]["state"] == "succeeded"


@pytest.mark.parametrize(("body", "message"), [
    (b"{bad", "the body is not valid JSON"),
    (b"", "the body is not valid JSON"),
    (b'{"n": NaN}', "NaN is not a JSON value"),
    (b'{"n": Infinity}', "Infinity is not a JSON value"),
    (b"[1, 2]", "must be a JSON object of parameters (name: value), not an array"),
    (b'"n"', "not a string"),
    (b"null", "not null"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[" * 100_000 + b"]" * 100_000, "the body is not valid JSON"),
])
def test_a_body_that_is_not_a_json_object_is_a_400(serve_http, body, message):
    client, service = serve_http("served")
    status, _, reply = client.post(body)
    assert status == 400
    assert message in reply["error"]
    assert "\n" not in reply["error"]
    assert service.jobs() == []


@pytest.mark.parametrize(("params", "key", "message"), [
    ({"m": 1}, "m", "no parameter 'm'"),
    ({"n": "x"}, "n", "'n' is an integer"),
    ({"n": 1.5}, "n", "'n' is an integer"),
    ({"n": [1]}, "n", "'n' is an integer"),
])
def test_parameters_that_do_not_fit_are_a_422_naming_the_key(serve_http, params, key,
                                                              message):
    client, service = serve_http("served")
    status, _, reply = client.post(params)
    assert status == 422
    assert reply["key"] == key
    assert message in reply["error"]
    assert service.jobs() == []


def test_a_missing_required_parameter_is_a_422_naming_it(serve_http):
    client, service = serve_http("two_steps")
    status, _, reply = client.post({"calls": "c"})
    assert (status, reply["key"]) == (422, "n")
    assert "'n' is required" in reply["error"]
    assert service.jobs() == []


def test_parameters_are_json_values_never_code(serve_http, tmp_path):
    client, service = serve_http("two_steps")
    status, _, reply = client.post({"n": "__import__('os').getpid()", "calls": "c"})
    assert (status, reply["key"]) == (422, "n")
    calls = str(tmp_path / "__import__('os').remove('x')")
    status, _, reply = client.post({"n": 2, "calls": calls, "gate": ""})
    assert status == 202
    job = wait_until(lambda: finished(service, reply["id"]), what="the job")
    assert job.params["calls"] == calls  # a string, as given: the file of that name
    assert Path(calls).read_text() == "first 2\n"


def test_only_a_json_content_type_is_taken(serve_http):
    client, service = serve_http("served")
    status, _, reply = client("POST", "/jobs", b'{"n": 1}',
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    assert "application/json" in reply["error"]
    status, _, _ = client("POST", "/jobs", b'{"n": 1}',
                          headers={"Content-Type": "application/json; charset=utf-8"})
    assert status == 202


def test_a_body_over_the_limit_is_a_413(serve_http):
    client, service = serve_http("served", max_body=1000)
    padding = " " * 1000
    status, _, reply = client.post('{"n": 1}' + padding)
    assert status == 413
    assert "at most 1000" in reply["error"]
    # far over, said up front: refused before the body is sent (as to curl's Expect: 100-continue)
    conn = http.client.HTTPConnection("127.0.0.1", client.server.port, timeout=30)
    try:
        conn.putrequest("POST", "/jobs")
        for name, value in {**JSON, "Content-Length": "10000000",
                            "Expect": "100-continue"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        response = conn.getresponse()
        assert response.status == 413
        assert "the body has 10000000 bytes" in json.loads(response.read())["error"]
    finally:
        conn.close()
    # a chunked body has no length up front: counted as it arrives
    conn = http.client.HTTPConnection("127.0.0.1", client.server.port, timeout=30)
    try:
        conn.request("POST", "/jobs", body=iter([b'{"n": 1', padding.encode(), b"}"]),
                     headers=JSON, encode_chunked=True)
        response = conn.getresponse()
        assert response.status == 413
        assert "more than 1000 bytes" in json.loads(response.read())["error"]
    finally:
        conn.close()
    assert client.post('{"n": 1}' + " " * 900)[0] == 202  # under the limit


# -- the job routes -----------------------------------------------------------------------------


def test_list_jobs_newest_first_by_state_and_limit(serve_http):
    client, service = serve_http("served", concurrency=2)
    ids = [client.post({"n": n})[2]["id"] for n in (1, 3, 5)]
    wait_until(lambda: all(finished(service, i) for i in ids), what="three jobs")
    status, _, jobs = client("GET", "/jobs")
    assert status == 200
    assert [j["id"] for j in jobs] == ids[::-1]
    _, _, failed = client("GET", "/jobs?state=failed")
    assert [j["params"] for j in failed] == [{"n": 3}]
    assert "three is bad" in failed[0]["error"]
    _, _, newest = client("GET", "/jobs?limit=1")
    assert [j["id"] for j in newest] == [ids[-1]]
    _, _, counts = client("GET", "/counts")
    assert counts == {"queued": 0, "running": 0, "succeeded": 2, "failed": 1, "cancelled": 0}
    for query, message in (("state=done", "unknown job state 'done'"),
                           ("limit=ten", "limit must be a whole number"),
                           ("limit=0", "limit must be between 1 and")):
        status, _, reply = client("GET", f"/jobs?{query}")
        assert (status, message in reply["error"]) == (400, True)


def test_an_unknown_job_is_a_404(serve_http):
    client, _ = serve_http("served")
    for method, path in (("GET", "/jobs/nope"), ("DELETE", "/jobs/nope"),
                         ("GET", "/jobs/nope/nodes")):
        status, _, reply = client(method, path)
        assert status == 404
        assert reply == {"error": "no job 'nope' in this state dir (see nbflow jobs)",
                         "id": "nope"}
    status, _, reply = client("GET", "/nothing/here")
    assert status == 404
    assert "no route GET /nothing/here" in reply["error"]


def test_cancel_a_queued_and_a_running_job_and_409_once_finished(serve_http, tmp_path):
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    client, service = serve_http("two_steps", concurrency=1)
    params = {"calls": str(tmp_path / "calls"), "gate": str(gate)}
    running = client.post({"n": 1, **params})[2]["id"]
    queued = client.post({"n": 2, **params})[2]["id"]
    wait_until(lambda: service.job(running).tasks.get("second", {}).get("state") == "running",
               what="the first job waits at its gate")
    status, _, reply = client("DELETE", f"/jobs/{queued}")
    assert (status, reply["state"]) == (200, "cancelled")
    status, _, reply = client("DELETE", f"/jobs/{running}")
    assert (status, reply["id"], reply["cancel_requested"]) == (200, running, True)
    with open(gate, "w") as f:  # (in case the cancel did not reach the blocked task)
        f.write("go")
    job = wait_until(lambda: finished(service, running), what="the cancelled job ends")
    assert job.state == "cancelled"
    for job_id in (queued, running):
        status, _, reply = client("DELETE", f"/jobs/{job_id}")
        assert status == 409
        assert reply["error"] == f"job {job_id} already cancelled; nothing to cancel"


def test_schema_and_graph(serve_http):
    client, service = serve_http("mapped")
    status, _, schema = client("GET", "/schema")
    assert status == 200
    assert schema == service.workflow.schema()
    assert schema["properties"]["n"] == {"type": "integer", "default": 3}
    status, _, graph = client("GET", "/graph")
    assert status == 200
    assert graph["layout_status"] == "ready"
    assert graph["flow_name"] == "mapped"
    assert graph["graph"]["names"] == ["numbers", "square", "total"]
    assert graph["graph"]["mapped"] == [1]
    assert graph["legend"][0] == "pending"
    assert graph["styles"]["failed"]["stroke"] == "#d55e00"
    # the widget's own layout: one node per task, titled by name, mapped ones as box3d
    root = ET.fromstring(graph["svg"])
    nodes = {g.find(f"{SVG}title").text: g.get("class") for g in root.iter(f"{SVG}g")
             if "node" in (g.get("class") or "").split()}
    assert nodes == {"numbers": "node nbf-task", "square": "node nbf-task nbf-mapped",
                     "total": "node nbf-task"}


def test_nodes_of_a_job_are_the_widget_node_infos(serve_http):
    client, service = serve_http("mapped")
    job_id = client.post({"n": 4})[2]["id"]
    wait_until(lambda: finished(service, job_id), what="the job")
    status, _, view = client("GET", f"/jobs/{job_id}/nodes")
    assert status == 200
    assert view["state"] == "succeeded"
    square = view["nodes"]["square"]
    times = square.pop("t0"), square.pop("t1")  # when it started and ended
    assert square == {"s": "succeeded", "a": 1, "d": 4, "n": 4}
    assert times[0] <= times[1]
    assert view["nodes"]["total"]["s"] == "succeeded"
    assert view["status_line"].startswith(f"job {job_id} succeeded in ")


# -- the status page's files ----------------------------------------------------------------------


def test_the_page_and_its_files(serve_http):
    client, _ = serve_http("served")
    status, headers, page = client("GET", "/")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert '<script type="module" src="static/status.js">' in page
    for name, kind in (("status.js", "text/javascript"), ("widget.js", "text/javascript"),
                       ("widget.css", "text/css"), ("status.css", "text/css")):
        status, headers, text = client("GET", f"/static/{name}")
        assert (status, headers["content-type"].split(";")[0]) == (200, kind)
        assert headers["x-content-type-options"] == "nosniff"
    widget_js = (Path(__file__).parents[2] / "nbflow" / "widget" / "widget.js").read_text()
    assert client("GET", "/static/widget.js")[2] == widget_js  # the widget's own view
    for path in ("/static/other.js", "/static/..%2Fhttp.py", "/static/../service.py"):
        assert client("GET", path)[0] == 404


# -- security ---------------------------------------------------------------------------------


def test_with_a_token_every_api_request_needs_it(serve_http):
    client, service = serve_http("served", token="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"},
                    {"Authorization": "Basic s3cret-token"},
                    {"Authorization": "Bearer s3cret-token-and-more"}):
        for method, path in (("GET", "/jobs"), ("GET", "/jobs/x"), ("DELETE", "/jobs/x"),
                             ("GET", "/schema"), ("GET", "/graph"), ("GET", "/counts")):
            status, got, reply = client(method, path, headers=headers, auth=False)
            assert status == 401, (method, path, headers)
            assert got["www-authenticate"].startswith("Bearer")
            assert "Authorization: Bearer TOKEN" in reply["error"]
        status, _, _ = client.post({"n": 1}, headers=headers, auth=False)
        assert status == 401
    assert service.jobs() == []
    assert client.post({"n": 1})[0] == 202
    assert client("GET", "/jobs")[0] == 200
    # the page's HTML, scripts and styles hold no job data: a browser loads them without it
    assert client("GET", "/", auth=False)[0] == 200
    assert client("GET", "/static/status.js", auth=False)[0] == 200


def test_without_a_token_only_a_loopback_host_is_answered(serve_http):
    client, _ = serve_http("served")
    for host in ("localhost", "127.0.0.1", "[::1]"):
        port = client.server.port
        assert client("GET", "/jobs", headers={"Host": f"{host}:{port}"})[0] == 200
    status, _, reply = client("GET", "/jobs", headers={"Host": "attacker.example:80"})
    assert status == 403
    assert "'attacker.example' is not this machine's loopback name" in reply["error"]


def test_a_non_loopback_address_needs_a_token(serve_http):
    client, service = serve_http("served")
    for host in ("0.0.0.0", "", "::", "192.0.2.1", "example.org"):
        with pytest.raises(ServiceError, match="listens beyond this machine: give it a token"):
            on_loop(service, start_http(service, host, 0))


def test_is_loopback():
    assert all(map(is_loopback, ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost",
                                 "LOCALHOST")))
    assert not any(map(is_loopback, ("0.0.0.0", "", "::", "10.0.0.1", "example.org",
                                     "localhost.example.org")))


def test_a_port_in_use_is_a_one_line_service_error(serve_http):
    client, service = serve_http("served")
    port = client.server.port
    with pytest.raises(ServiceError) as taken:
        on_loop(service, start_http(service, "127.0.0.1", port))
    assert str(taken.value) == f"cannot listen on 127.0.0.1:{port}: the port is in use"
    with socket.socket() as s:  # a port held by something else than nbflow
        s.bind(("127.0.0.1", 0))
        s.listen()
        other = s.getsockname()[1]
        with pytest.raises(ServiceError, match=f"^cannot listen on 127.0.0.1:{other}: "):
            on_loop(service, start_http(service, "127.0.0.1", other))
    assert client("GET", "/jobs")[0] == 200  # the running server is untouched


def test_a_service_whose_port_is_in_use_does_not_start(workflows, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        service = Service(workflows["served"], state_dir=tmp_path / "state",
                          report=lambda message: None)
        service.listen("127.0.0.1", port)
        loop = asyncio.new_event_loop()
        try:
            with pytest.raises(ServiceError, match=f"^cannot listen on 127.0.0.1:{port}: "):
                loop.run_until_complete(service.start())
        finally:
            loop.close()
            service.store.close()


# -- node infos, without a server ---------------------------------------------------------------


def test_job_nodes_from_a_job_record():
    job = Job("j1", "failed", {"n": 3}, "http", created=1.0, started=10.0, finished=12.5,
              tasks={"a": {"state": "succeeded", "attempts": 1, "duration": 0.5,
                           "branches": None},
                     "m": {"state": "failed", "attempts": 2, "duration": 1.0,
                           "branches": [2, 3], "started": 11.0}},
              error="task(s) failed: m; m[2]: ValueError: no")
    view = job_nodes(job)
    assert view["nodes"] == {
        "a": {"s": "succeeded", "a": 1},
        "m": {"s": "failed", "a": 2, "d": 2, "n": 3, "t0": 11.0, "t1": 12.0,
              "exc": "task(s) failed: m; m[2]: ValueError: no"}}
    assert view["status_line"] == "job j1 failed in 2.5s"
    assert status_line(Job("j2", "queued", {}, "http")) == "job j2 queued"
    assert job_nodes(Job("j2", "queued", {}, "http"))["nodes"] == {}


def test_url_of_a_server():
    assert HttpServer(None, "127.0.0.1", 8000).url == "http://127.0.0.1:8000"  # type: ignore[arg-type]
    assert HttpServer(None, "::1", 8000).url == "http://[::1]:8000"  # type: ignore[arg-type]
