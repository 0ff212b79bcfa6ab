"""What can go wrong with a request sent to a server, named as `retry_on` names it.

The data plane reports these to retries (lbproxy/proxy/) and to passive health checks
(lbproxy/health/passive.py); both import them from here, below either of them.
"""

from __future__ import annotations

CONNECT_FAILURE = "connect-failure"     # no connection (refused, timeout, unreachable)
EMPTY_RESPONSE = "empty-response"       # the server closed before answering
JUNK_RESPONSE = "junk-response"         # the answer is not valid HTTP
RESPONSE_TIMEOUT = "response-timeout"   # no answer within `timeouts.server`
ABORTED = "aborted"                     # the server closed in the middle of a response

FAILURES = frozenset({CONNECT_FAILURE, EMPTY_RESPONSE, JUNK_RESPONSE, RESPONSE_TIMEOUT, ABORTED})
