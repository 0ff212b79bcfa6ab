"""Request targets (RFC 9112 §3.2) and the host a request is for.

A request names its host twice when its target is in absolute form
(`GET http://a.example/x`): RFC 9112 §3.2.2 tells a server to believe the target, while
rules and routing read Host. The proxy forwards the origin form and refuses a Host that
disagrees, so the server and the rules always see the same host.
"""

from __future__ import annotations

DEFAULT_PORTS = {b"http": b":80", b"https": b":443"}


class BadTarget(ValueError):
    """A request target the proxy does not forward."""


def split_absolute(target: bytes) -> tuple[bytes, bytes, bytes]:
    """(scheme, authority, origin-form target) of an absolute-form http(s) target.

    Raises BadTarget for another scheme, an empty authority or one with user info."""
    scheme, sep, rest = target.partition(b"://")
    scheme = scheme.lower()
    if not sep or scheme not in DEFAULT_PORTS:
        raise BadTarget("not an http(s) absolute-form target")
    end = len(rest)
    for delimiter in (b"/", b"?", b"#"):
        found = rest.find(delimiter)
        if 0 <= found < end:
            end = found
    authority, origin = rest[:end], rest[end:]
    if not authority or b"@" in authority:
        raise BadTarget("no host, or user info, in the target")
    if origin[:1] != b"/":
        origin = b"/" + origin
    return scheme, authority, origin


def same_host(authority: bytes, host: bytes, scheme: bytes) -> bool:
    """Whether a target's authority and a Host value name the same host and port."""
    default = DEFAULT_PORTS[scheme]
    a, h = authority.lower(), host.strip().lower()
    if a.endswith(default):
        a = a[:-len(default)]
    if h.endswith(default):
        h = h[:-len(default)]
    return a == h
