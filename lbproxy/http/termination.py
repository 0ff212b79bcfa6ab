"""Why a request ended abnormally: the names the access log's `error` field carries.

A server's failures are named as `retry_on` names them (lbproxy/backends/outcomes.py);
these are the others: the client's, the proxy's own refusals and the queue's. Each is a
constant, so a line costs no formatting and a log search can match it exactly.
"""

from __future__ import annotations

CLIENT_CLOSED = "client-closed"         # the client left before its response was complete
CLIENT_TIMEOUT = "client-timeout"       # the client stopped sending or reading in time
NO_BACKEND = "no-backend"               # no use_backend rule matched, no default backend
NO_SERVER = "no-server"                 # no server could take the request, no queue
QUEUE_TIMEOUT = "queue-timeout"         # it waited `timeouts.queue` for a server slot
BACKEND_REMOVED = "backend-removed"     # a reload removed its backend while it waited
DENIED = "denied"                       # a deny rule
AUTH_DENIED = "auth-denied"             # auth_request: the auth backend said 401 or 403
AUTH_FAILED = "auth-failed"             # auth_request: no usable answer from it (500)
OUT_OF_FDS = "out-of-fds"               # no file descriptor left to connect to a server
PLUGIN_FAILED = "plugin-failed"         # a plugin raised (or its action timed out): 500
RESPONSE_HEAD_TOO_LARGE = "response-header-too-large"   # over the response head limit

# The proxy's refusals of a request, by the status they answer.
REFUSALS = {
    400: "bad-request",
    408: "request-timeout",
    413: "body-too-large",
    431: "header-too-large",
    501: "not-implemented",
    505: "version-not-supported",
}
