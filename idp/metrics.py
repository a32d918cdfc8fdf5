"""The Prometheus metrics idp exports at ``/metrics``: one place that names them all."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "idp_http_requests_total", "HTTP requests by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "idp_http_request_duration_seconds",
    "HTTP request latency by route",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
SIGN_INS = Counter("idp_sign_ins_total", "Sign-in attempts by method and outcome", ["method", "outcome"])
TOKENS = Counter("idp_tokens_issued_total", "Token responses by grant type", ["grant_type"])
CODES_SENT = Counter("idp_codes_sent_total", "One-time codes sent by channel", ["channel"])
DELIVERIES_FAILED = Counter(
    "idp_deliveries_failed_total", "Messages dropped unsent once no longer useful, by channel", ["channel"]
)
RATE_LIMITED = Counter("idp_rate_limited_total", "Requests refused by a rate limit, by limit", ["limit"])
REDIS_FALLBACKS = Counter("idp_redis_fallbacks_total", "Times Redis was unreachable and in-process state was used")
SMS_BUDGET_SPENT = Counter(
    "idp_sms_budget_spent_total", "Text messages refused because an hourly SMS budget was spent, by budget", ["budget"]
)
CONNECTIONS_CUT = Counter(
    "idp_connections_cut_total",
    "Connections closed because a request did not arrive in time (request-late), its head was too "
    "large (head-too-large), it sent too many requests ahead of their answers (too-many-queued), or "
    "a response was not taken in time (response-unread)",
    ["reason"],
)
