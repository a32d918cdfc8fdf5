"""Observability: request ids, one access line per request, structured JSON logs and /metrics.

In-process tests read the access records through ``caplog`` and the counters through ``/metrics``
(the in-process apps share this process's registry, so every check compares before and after).
Live tests run ``idp serve`` to see the JSON lines it really writes, and ``--workers 2`` to see
``/metrics`` sum what every worker counted.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import logging
import re
import secrets
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from select import PIPE_BUF
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select, update
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from starlette.testclient import TestClient

from idp.app import create_app
from idp.context import Context
from idp.messaging.errors import DeliveryError
from idp.messaging.worker import deliver_due
from idp.migrate import upgrade
from idp.observability.logs import AccessRecord, JsonFormatter, RequestIdFilter, TurnBatchedStreamHandler
from idp.observability.requests import UNMATCHED
from idp.storage import OutboxMessage, now
from idp.web.edge import Edge

from .conftest import PASSWORD, TEST_ISSUER, free_port, make_settings, run_idp, start_server
from .event_loops import apart, run_apart
from .flows import ask_for_code, emailed_code, enter_code, post_login, tokens_for

HEX_ID = re.compile(r"[0-9a-f]{32}")


# --- helpers -------------------------------------------------------------------------------------


def metric(client: TestClient | httpx.Client, name: str, **labels: str) -> float:
    """One sample of ``/metrics``, 0 when it has not been counted yet."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "idp.access"]


@pytest.fixture
def access(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The access records, stamped with the request id as ``idp serve``'s handler stamps them."""
    caplog.set_level(logging.INFO, logger="idp.access")
    stamp = RequestIdFilter()
    caplog.handler.addFilter(stamp)
    yield caplog
    caplog.handler.removeFilter(stamp)


@dataclass
class Isolated:
    """An app on a database of this test's own, so that no other process delivers its messages."""

    http: TestClient
    ctx: Context


@pytest.fixture
def isolated(base_environ: dict[str, str], own_database_url: str) -> Iterator[Isolated]:
    upgrade(own_database_url)
    app = create_app(make_settings(base_environ, IDP_DATABASE_URL=own_database_url, IDP_RATE_LIMITING="off"))
    with TestClient(app, base_url=TEST_ISSUER, follow_redirects=False) as http:
        yield Isolated(http, app.state.ctx)
    app.state.ctx.close()


# --- request ids ---------------------------------------------------------------------------------


def test_every_response_carries_a_new_request_id(http):
    first = http.get("/healthz").headers["x-request-id"]
    second = http.get("/.well-known/openid-configuration").headers["x-request-id"]
    assert HEX_ID.fullmatch(first) and HEX_ID.fullmatch(second)
    assert first != second


def test_a_plain_incoming_request_id_is_kept(http, access):
    response = http.get("/healthz", headers={"X-Request-ID": "lb-7f3a.42:edge_1"})
    assert response.headers["x-request-id"] == "lb-7f3a.42:edge_1"
    assert access_records(access)[-1].request_id == "lb-7f3a.42:edge_1"


@pytest.mark.parametrize("sent", ["x" * 65, "has space", "<script>", "a\tb", "a;b", ""])
def test_an_unsafe_incoming_request_id_is_replaced(http, sent):
    returned = http.get("/healthz", headers={"X-Request-ID": sent}).headers["x-request-id"]
    assert HEX_ID.fullmatch(returned), returned


# --- the access line -----------------------------------------------------------------------------


def failing_app() -> Starlette:
    """A route that fails, behind the edge as every idp route is."""

    async def fail(request: Any) -> Any:
        raise RuntimeError("the handler failed")

    edge = Middleware(Edge, trusted_proxies=(), static_routes=(), https=False, metrics_port=None)
    return Starlette(routes=[Route("/fail", fail)], middleware=[edge])


def test_an_application_error_is_answered_500_with_the_request_id_and_the_security_headers(access):
    with TestClient(failing_app(), raise_server_exceptions=False) as client:
        response = client.get("/fail")
    assert response.status_code == 500
    assert HEX_ID.fullmatch(response.headers["x-request-id"])
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    line = access_records(access)[-1]
    assert (line.status, line.request_id) == (500, response.headers["x-request-id"])


def test_an_application_errors_traceback_names_the_request(access):
    with TestClient(failing_app()) as client, pytest.raises(RuntimeError) as raised:
        client.get("/fail", headers={"X-Request-ID": "support-ticket-42"})
    assert "request_id: support-ticket-42" in raised.value.__notes__
    assert access_records(access)[-1].status == 500


def test_one_access_line_per_request_with_the_route_template(http, access):
    session_id = secrets.token_hex(8)
    response = http.post(f"/account/sessions/{session_id}/end", data={"csrf_token": "x"})
    (line,) = access_records(access)
    assert line.route == "/account/sessions/{session_id}/end"
    assert line.method == "POST"
    assert line.status == response.status_code
    assert isinstance(line.duration_ms, float) and 0 <= line.duration_ms < 10_000
    assert line.client == "testclient"
    assert line.request_id == response.headers["x-request-id"]
    assert session_id not in line.getMessage()
    assert session_id not in JsonFormatter().format(line)


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("DELETE", "/api/account/sessions/{id}", "/api/account/sessions/{session_id}"),
        ("GET", "/static/style.css", "/static/{path}"),
        ("GET", "/api/no/such/thing", UNMATCHED),
    ],
)
def test_mounted_routes_are_named_in_full(http, access, method, path, route):
    secret = secrets.token_hex(8)
    http.request(method, path.replace("{id}", secret))
    (line,) = access_records(access)
    assert line.route == route
    assert secret not in JsonFormatter().format(line)


def test_the_access_line_never_holds_the_query_string(http, access):
    secret = secrets.token_urlsafe(16)
    http.get(f"/password/reset?token={secret}")
    http.get(f"/authorize?client_id=nobody&state={secret}&code_challenge={secret}")
    http.get(f"/verify-email?token={secret}")
    lines = access_records(access)
    assert [line.route for line in lines] == ["/password/reset", "/authorize", "/verify-email"]
    for line in lines:
        formatted = JsonFormatter().format(line)
        assert secret not in formatted and "?" not in json.loads(formatted)["message"]


def test_unknown_paths_share_one_label_and_a_wrong_method_keeps_the_route(http, access):
    before = metric(http, "idp_http_requests_total", route=UNMATCHED, method="GET", status="404")
    probe = f"/wp-admin/{secrets.token_hex(4)}.php"
    assert http.get(probe).status_code == 404
    assert http.get("/token").status_code == 405
    unknown, wrong_method = access_records(access)[-2:]
    assert (unknown.route, unknown.status) == (UNMATCHED, 404)
    assert (wrong_method.route, wrong_method.status) == ("/token", 405)
    exposed = http.get("/metrics").text
    assert probe not in exposed
    assert metric(http, "idp_http_requests_total", route=UNMATCHED, method="GET", status="404") == before + 1


def test_the_json_line_has_time_level_logger_message_and_fields(http, access):
    response = http.get("/healthz")
    line = json.loads(JsonFormatter().format(access_records(access)[-1]))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", line["time"])
    assert line["level"] == "info" and line["logger"] == "idp.access"
    assert line["message"] == "GET /healthz 200"
    assert line["route"] == "/healthz" and line["status"] == 200 and line["method"] == "GET"
    assert line["request_id"] == response.headers["x-request-id"]
    assert "color_message" not in line


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_access_record_is_the_record_logging_makes_of_the_same_line(monkeypatch):
    """A request's access line has a record of its own, made faster: every handler and formatter
    must find in it each field, with the value, of the record the standard path makes as
    ``idp serve`` configures logging. On a Python whose records gain a field, this fails until
    the access record has it too."""
    monkeypatch.setattr(logging, "_srcfile", None)
    monkeypatch.setattr(logging, "logThreads", False)
    monkeypatch.setattr(logging, "logMultiprocessing", False)
    monkeypatch.setattr(logging, "logAsyncioTasks", False, raising=False)  # Python 3.12 and later
    fields = {"method": "GET", "route": "/jwks.json", "status": 200, "duration_ms": 0.05, "client": "127.0.0.1"}
    kept = Kept()
    logger = logging.Logger("idp.access", logging.INFO)
    logger.addHandler(kept)
    logger.info("%s %s %d", "GET", "/jwks.json", 200, extra=dict(fields))
    logger.handle(AccessRecord("idp.access", "GET /jwks.json 200", dict(fields)))
    standard, access = kept.records

    for name, value in vars(standard).items():
        if name in ("created", "msecs", "relativeCreated"):
            assert abs(getattr(access, name) - value) < (1000 if name != "created" else 1), name
        elif name not in ("msg", "args"):  # the access record holds its message written out
            assert getattr(access, name) == value, name
    assert access.getMessage() == standard.getMessage() == "GET /jwks.json 200"
    every_field = " ".join(f"%({name})s" for name in vars(standard))
    assert logging.Formatter(every_field).format(access)
    lines = [json.loads(JsonFormatter().format(record)) for record in (standard, access)]
    assert [{**line, "time": None} for line in lines[:1]] == [{**line, "time": None} for line in lines[1:]]
    assert list(lines[0]) == list(lines[1])


@pytest.mark.parametrize(
    ("created", "written"),
    [
        (1796580000.0, "2026-12-06T18:00:00.000+00:00"),
        (1796580000.9996, "2026-12-06T18:00:00.999+00:00"),
        (1796580001.25, "2026-12-06T18:00:01.250+00:00"),
        (1796579999.5, "2026-12-06T17:59:59.500+00:00"),
    ],
)
def test_the_time_is_the_records_own_to_the_millisecond_however_lines_follow(created, written):
    """One formatter writes every line of a process and keeps the second it last formatted: each
    line must still show its own record's time, across seconds and backwards."""
    formatter = JsonFormatter()
    for moment, expected in [(created, written), (created - 86400, None), (created, written)]:
        record = logging.LogRecord("idp.access", logging.INFO, __file__, 1, "line", None, None)
        record.created = moment
        time_written = json.loads(formatter.format(record))["time"]
        if expected is not None:
            assert time_written == expected
        else:
            assert time_written.startswith("2026-12-05T")


def test_any_extra_value_is_written_in_one_json_line():
    """A field given as ``extra`` may be any value: text in any script stays readable, a value JSON
    has no form for is written as its text, and neither a wide integer nor a mapping keyed by
    numbers loses the line."""
    record = logging.LogRecord(
        "idp", logging.WARNING, __file__, 1, "odd fields %s", ("\u0633\u0644\u0627\u0645",), None
    )
    record.wide = 2**70
    record.keyed = {1: "one"}
    record.moment = datetime.datetime(2026, 12, 6, 18, 0, tzinfo=datetime.UTC)
    record.kind = object
    written = JsonFormatter().format(record)
    assert "\n" not in written and "\u0633\u0644\u0627\u0645" in written
    line = json.loads(written)
    assert line["message"] == "odd fields \u0633\u0644\u0627\u0645"
    assert line["wide"] == 2**70 and line["keyed"] == {"1": "one"}
    assert line["moment"].startswith("2026-12-06") and line["kind"] == "<class 'object'>"


# --- a server's access lines, a loop's turn at a time ---------------------------------------------


class Writes(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)


class Lines:
    """A logger whose only handler is a server's, writing to ``stream``."""

    def __init__(self, stream: io.StringIO) -> None:
        self.handler = TurnBatchedStreamHandler(stream)
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger = logging.Logger(f"batched-{secrets.token_hex(4)}", logging.INFO)
        self.logger.addHandler(self.handler)

    def access(self, message: str) -> None:
        self.logger.handle(AccessRecord(self.logger.name, message, {}))


def test_access_lines_of_one_turn_of_a_loop_are_written_together_after_it():
    stream = Writes()
    lines = Lines(stream)

    async def serve() -> list[list[str]]:
        seen = []
        for turn in range(2):
            for request in range(3):
                lines.access(f"turn {turn} request {request}")
            seen.append(list(stream.writes))
            await asyncio.sleep(0)
        await asyncio.sleep(0)
        return seen

    during = run_apart(serve())
    assert during == [[], ["turn 0 request 0\nturn 0 request 1\nturn 0 request 2\n"]]
    assert stream.writes[1] == "turn 1 request 0\nturn 1 request 1\nturn 1 request 2\n"
    assert len(stream.writes) == 2


def test_any_other_line_and_any_line_from_a_thread_without_a_loop_is_written_at_once_after_what_is_held():
    stream = Writes()
    lines = Lines(stream)

    async def serve() -> list[str]:
        lines.access("first request")
        apart(lambda: lines.access("in the thread pool"))
        written = list(stream.writes)
        lines.access("second request")
        lines.logger.warning("shutting down")
        written += stream.writes[len(written) :]
        await asyncio.sleep(0)
        return written

    assert run_apart(serve()) == ["first request\nin the thread pool\n", "second request\nshutting down\n"]
    assert len(stream.writes) == 2
    apart(lambda: lines.access("no loop at all"))
    assert stream.writes[-1] == "no loop at all\n"


def test_what_is_held_is_written_in_whole_lines_a_pipe_takes_whole():
    stream = Writes()
    lines = Lines(stream)
    written = [f"request {n} " + ("\u0633" if n % 7 == 0 else "a") * 300 for n in range(40)]

    async def serve() -> None:
        for line in written:
            lines.access(line)
        await asyncio.sleep(0)

    run_apart(serve())
    assert len(stream.writes) > 1
    assert all(len(piece.encode()) <= PIPE_BUF and piece.endswith("\n") for piece in stream.writes)
    assert "".join(stream.writes).splitlines() == written


def test_lines_held_by_a_loop_closed_before_its_next_turn_go_with_the_next_loops():
    stream = Writes()
    lines = Lines(stream)

    def serve_and_stop() -> None:
        loop = asyncio.new_event_loop()

        def last_request() -> None:
            lines.access("a")
            loop.stop()  # the turn that would have written it never comes

        loop.call_soon(last_request)
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def serve_again() -> None:
        lines.access("b")
        await asyncio.sleep(0)

    apart(serve_and_stop)
    assert stream.writes == []
    run_apart(serve_again())
    assert stream.writes == ["a\nb\n"]


def test_what_is_held_when_logging_shuts_down_is_written():
    stream = Writes()
    lines = Lines(stream)

    async def last_request() -> None:
        lines.access("stopping")

    def serve_and_stop() -> None:
        loop = asyncio.new_event_loop()
        task = loop.create_task(last_request())
        loop.call_soon(loop.stop)
        try:
            loop.run_forever()
        finally:
            loop.close()
        assert task.done()

    apart(serve_and_stop)
    assert stream.writes == []
    logging.shutdown([weakref.ref(lines.handler)])  # what atexit does as the process ends
    assert stream.writes == ["stopping\n"]


def test_a_stream_that_fails_is_reported_never_raised(capsys):
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("no space left on device")

    lines = Lines(Broken())

    async def serve() -> None:
        lines.access("lost")
        await asyncio.sleep(0)
        lines.access("lost too")
        await asyncio.sleep(0)

    run_apart(serve())
    reported = capsys.readouterr().err
    assert reported.count("--- Logging error ---") == 2 and "OSError: no space left on device" in reported


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_expose_every_family(http):
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(response.text)}
    assert {
        "idp_http_requests",
        "idp_http_request_duration_seconds",
        "idp_sign_ins",
        "idp_tokens_issued",
        "idp_codes_sent",
        "idp_deliveries_failed",
        "idp_rate_limited",
    } <= families


def test_requests_and_latency_are_counted_by_route(http):
    labels = {"route": "/jwks.json"}
    count = metric(http, "idp_http_request_duration_seconds_count", **labels)
    requests = metric(http, "idp_http_requests_total", route="/jwks.json", method="GET", status="200")
    for _ in range(3):
        assert http.get("/jwks.json").status_code == 200
    assert metric(http, "idp_http_requests_total", route="/jwks.json", method="GET", status="200") == requests + 3
    assert metric(http, "idp_http_request_duration_seconds_count", **labels) == count + 3
    assert metric(http, "idp_http_request_duration_seconds_bucket", le="+Inf", **labels) == count + 3


def test_password_sign_ins_are_counted_by_outcome(http, make_user):
    user = make_user()
    success = {"method": "password", "outcome": "success"}
    failure = {"method": "password", "outcome": "failure"}
    before = (metric(http, "idp_sign_ins_total", **success), metric(http, "idp_sign_ins_total", **failure))
    assert post_login(http, user.email, "not the password at all").status_code == 400
    assert post_login(http, user.email, PASSWORD).status_code == 303
    after = (metric(http, "idp_sign_ins_total", **success), metric(http, "idp_sign_ins_total", **failure))
    assert after == (before[0] + 1, before[1] + 1)


def test_tokens_are_counted_by_grant_type(http, make_client, make_user):
    client = make_client(grant_types=["authorization_code", "refresh_token", "client_credentials"], first_party=True)
    grants = ("authorization_code", "refresh_token", "client_credentials")
    before = {grant: metric(http, "idp_tokens_issued_total", grant_type=grant) for grant in grants}

    tokens = tokens_for(http, client, make_user())
    refreshed = http.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}, auth=client.auth
    )
    assert refreshed.status_code == 200, refreshed.text
    for _ in range(2):
        issued = http.post("/token", data={"grant_type": "client_credentials"}, auth=client.auth)
        assert issued.status_code == 200, issued.text
    refused = http.post("/token", data={"grant_type": "client_credentials"}, auth=(client.client_id, "wrong"))
    assert refused.status_code == 401

    after = {grant: metric(http, "idp_tokens_issued_total", grant_type=grant) for grant in grants}
    assert after == {
        "authorization_code": before["authorization_code"] + 1,
        "refresh_token": before["refresh_token"] + 1,
        "client_credentials": before["client_credentials"] + 2,
    }


def test_codes_sent_and_code_sign_ins_are_counted(isolated, make_user, caplog):
    caplog.set_level(logging.INFO, logger="idp.messages")
    http = isolated.http
    address = f"coded-{secrets.token_hex(4)}@example.com"
    sent = metric(http, "idp_codes_sent_total", channel="email")
    success = metric(http, "idp_sign_ins_total", method="code", outcome="success")
    failure = metric(http, "idp_sign_ins_total", method="code", outcome="failure")

    assert ask_for_code(http, address).status_code == 303
    code = emailed_code(http, caplog, address)
    assert enter_code(http, "12345").status_code == 400
    assert enter_code(http, code).status_code == 303

    assert metric(http, "idp_codes_sent_total", channel="email") == sent + 1
    assert metric(http, "idp_sign_ins_total", method="code", outcome="failure") == failure + 1
    assert metric(http, "idp_sign_ins_total", method="code", outcome="success") == success + 1


class Refusing:
    """An email backend whose provider is always down."""

    def send(self, _email: Any) -> None:
        raise DeliveryError("smtp: connection refused")


def test_a_message_dropped_once_no_longer_useful_is_counted(isolated):
    http, ctx = isolated.http, isolated.ctx
    ctx.email_backend = Refusing()
    before = metric(http, "idp_deliveries_failed_total", channel="email")
    address = f"unreachable-{secrets.token_hex(4)}@example.com"
    assert ask_for_code(http, address).status_code == 303

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with ctx.db.begin() as db:
            message = db.scalar(select(OutboxMessage).where(OutboxMessage.recipient == address))
            assert message is not None
            if message.failed_at is not None:
                break
            if message.attempts:  # the code's lifetime goes by while the provider is down
                db.execute(update(OutboxMessage).where(OutboxMessage.id == message.id).values(useful_until=now()))
            db.execute(update(OutboxMessage).where(OutboxMessage.id == message.id).values(next_attempt_at=0))
        deliver_due(ctx)
    else:
        pytest.fail("the message was never dropped")
    assert metric(http, "idp_deliveries_failed_total", channel="email") == before + 1


# --- live servers: the lines idp serve writes, and metrics summed over workers ---------------------


def json_lines(log: Path) -> list[dict[str, Any]]:
    lines = log.read_text().splitlines()
    parsed = [json.loads(line) for line in lines if line.strip()]
    assert parsed and len(parsed) == len([line for line in lines if line.strip()])
    return parsed


def access_lines_written(log: Path, ids: set[str]) -> dict[str, int]:
    """The worker that wrote the access line of each request in ``ids``, read while the workers
    write: a last line not yet ended is not yet written."""
    ended = log.read_text().rpartition("\n")[0]
    lines = [json.loads(line) for line in ended.splitlines() if line.strip()]
    return {line["request_id"]: line["pid"] for line in lines if line.get("request_id") in ids}


def counted(log: Path, ids: set[str]) -> dict[str, int]:
    """Waits for the access line of each request in ``ids``: a worker counts a request and then
    writes its line after the client has its answer, so a scrape straight after could miss it."""
    deadline = time.monotonic() + 10
    written = access_lines_written(log, ids)
    while len(written) < len(ids) and time.monotonic() < deadline:
        time.sleep(0.05)
        written = access_lines_written(log, ids)
    return written


def stop(process) -> None:  # type: ignore[no-untyped-def]
    process.terminate()
    process.wait(timeout=15)


def test_serve_sums_metrics_over_its_workers_and_logs_json(base_environ, own_database_url, tmp_path):
    environ = {
        **base_environ,
        "IDP_DATABASE_URL": own_database_url,
        "IDP_RATE_LIMITING": "off",
        "HOME": str(tmp_path),
    }
    made = run_idp(
        environ,
        "clients",
        "create",
        "--name",
        "Metrics",
        "--redirect-uri",
        "https://rp.example/cb",
        "--grant-type",
        "client_credentials",
        check=True,
    )
    client = json.loads(made.stdout)
    log = tmp_path / "workers.log"
    process, url = start_server(environ, log, "--workers", "2")
    try:
        ids: set[str] = set()
        served_by: dict[str, int] = {}
        # Each request on a new connection: the kernel hands connections to both workers.
        while len(set(served_by.values())) < 2 or len(ids) < 10:
            assert len(ids) < 300, "one worker took every connection"
            response = httpx.post(
                url + "/token",
                data={"grant_type": "client_credentials"},
                auth=(client["client_id"], client["client_secret"]),
                timeout=10,
            )
            assert response.status_code == 200, response.text
            ids.add(response.headers["x-request-id"])
            served_by = access_lines_written(log, ids)
        assert len(counted(log, ids)) == len(ids), "an access line never came"
        issued = len(ids)
        for _ in range(6):  # whichever worker answers shows the sum
            with httpx.Client(base_url=url, timeout=10) as scraper:
                assert metric(scraper, "idp_tokens_issued_total", grant_type="client_credentials") == issued
                assert metric(scraper, "idp_http_requests_total", route="/token", method="POST", status="200") == issued
    finally:
        stop(process)

    lines = json_lines(log)
    assert {"time", "level", "logger", "message", "pid"} <= set(lines[0])
    assert not [line for line in lines if line["logger"] == "uvicorn.access"], "uvicorn's access log is off"
    assert any(line["logger"] == "uvicorn.error" and "Started server process" in line["message"] for line in lines)
    token_lines = [line for line in lines if line.get("route") == "/token"]
    assert {line["request_id"] for line in token_lines} == ids
    for line in token_lines:
        assert line["logger"] == "idp.access" and line["status"] == 200 and line["method"] == "POST"
        assert line["client"] == "127.0.0.1" and line["duration_ms"] >= 0
    assert client["client_secret"] not in log.read_text()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_stopped_server_has_written_every_line_of_every_worker(base_environ, own_database_url, tmp_path, workers):
    """uvicorn ends a worker stopped by SIGTERM by raising the signal again once it has logged
    its last line, and the default action ends the process there: nothing may still be held."""
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(tmp_path)}
    log = tmp_path / "serve.log"
    process, url = start_server(environ, log, "--workers", workers)
    try:
        ids = set()
        for _ in range(10):
            response = httpx.get(url + "/jwks.json", timeout=5)
            assert response.status_code == 200
            ids.add(response.headers["x-request-id"])
        # A worker signalled before uvicorn took its signals over ends without a word.
        deadline = time.monotonic() + 20
        while log.read_text().count("Started server process") < int(workers) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop(process)
    lines = json_lines(log)
    started = {line["pid"] for line in lines if line["message"].startswith("Started server process")}
    finished = {line["pid"] for line in lines if line["message"].startswith("Finished server process")}
    assert len(started) == int(workers) and finished == started, log.read_text()[-3000:]
    assert {line.get("request_id") for line in lines} >= ids


# --- a port of their own for the metrics ---------------------------------------------------------


def _two_free_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def test_with_a_metrics_port_the_app_does_not_answer_metrics(base_environ, settings):  # type: ignore[no-untyped-def]
    app = create_app(make_settings(base_environ, IDP_METRICS_PORT="9464"))
    try:
        with TestClient(app, base_url=TEST_ISSUER) as client:
            assert client.get("/metrics").status_code == 404
            assert client.get("/healthz").status_code == 200
    finally:
        app.state.ctx.close()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_answers_metrics_on_the_metrics_port_only(base_environ, own_database_url, tmp_path, workers):
    """``IDP_METRICS_PORT`` keeps ``/metrics`` off the port the ingress routes to, whatever the
    ingress controller allows; the metrics port serves nothing else."""
    _, metrics_port = _two_free_ports()
    environ = {
        **base_environ,
        "IDP_DATABASE_URL": own_database_url,
        "HOME": str(tmp_path),
        "IDP_METRICS_PORT": str(metrics_port),
    }
    log = tmp_path / "serve.log"
    process, url = start_server(environ, log, "--workers", workers)
    metrics_url = f"http://127.0.0.1:{metrics_port}"
    try:
        assert httpx.get(url + "/metrics", timeout=5).status_code == 404
        ids = set()
        for _ in range(4):
            response = httpx.get(url + "/jwks.json", timeout=5)
            assert response.status_code == 200
            ids.add(response.headers["x-request-id"])
        assert len(counted(log, ids)) == len(ids), "an access line never came"
        with httpx.Client(base_url=metrics_url, timeout=5) as scraper:
            assert metric(scraper, "idp_http_requests_total", route="/jwks.json", method="GET", status="200") == 4
            for path in ("/", "/healthz", "/login", "/jwks.json", "/.well-known/openid-configuration"):
                assert scraper.get(path).status_code == 404, path
    finally:
        stop(process)


def test_serve_refuses_a_metrics_port_that_is_the_app_port(base_environ, own_database_url, tmp_path):
    port, _ = _two_free_ports()
    environ = {**base_environ, "IDP_DATABASE_URL": own_database_url, "HOME": str(tmp_path)}
    result = run_idp(environ | {"IDP_METRICS_PORT": str(port)}, "serve", "--port", str(port))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idp: IDP_METRICS_PORT"), result.stderr
