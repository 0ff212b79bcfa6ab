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
REFUSED = "refused-stream"              # an HTTP/2 server refused the stream unprocessed

FAILURES = frozenset({CONNECT_FAILURE, EMPTY_RESPONSE, JUNK_RESPONSE, RESPONSE_TIMEOUT, ABORTED})
# Failures after which the server certainly did not process the request: any method may
# be sent again (RFC 9110 §9.2.2 for the connect failure, RFC 9113 §8.7 for the refusal).
UNPROCESSED = frozenset({CONNECT_FAILURE, REFUSED})
