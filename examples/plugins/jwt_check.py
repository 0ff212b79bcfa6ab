"""Example plugin: admit only requests that carry a valid JSON Web Token.

Uses PyJWT (`pip install pyjwt`). The action `jwt_required` reads `Authorization: Bearer
TOKEN`, verifies its signature, expiry and (when given) audience and issuer, and copies
claims into request headers for the server (replacing any the client sent, so they
cannot be forged). A missing or invalid token is answered 401 with a `WWW-Authenticate`
header saying why, as RFC 6750 asks; the server never sees the request.

    global:
      plugins: [jwt_check.py]
    frontends:
      web:
        http_request:
          - jwt_required:
              secret_env: JWT_SECRET           # or `public_key_file: keys/jwt.pem` for RS256/ES256
              algorithms: [HS256]
              audience: api                    # optional; so is `issuer`
              claim_headers: {sub: X-User}
            unless: "{ path_beg /public/ }"
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jwt

from lbproxy import ext

KEY_SOURCES = ("secret", "secret_env", "public_key_file")


def check(args: Any) -> None:
    """Run by `lbproxy check`: the arguments make sense before any request comes."""
    if not isinstance(args, dict):
        raise ValueError("needs a mapping: {secret_env: NAME, algorithms: [HS256], ...}")
    sources = [key for key in KEY_SOURCES if key in args]
    if len(sources) != 1:
        raise ValueError(f"needs exactly one of {', '.join(KEY_SOURCES)}")
    if "public_key_file" in args:
        _read(args["public_key_file"])
    algorithms = args.get("algorithms", ["HS256"])
    if not isinstance(algorithms, list) or not algorithms:
        raise ValueError("algorithms: a list such as [HS256] or [RS256]")
    unknown = set(algorithms) - set(jwt.algorithms.get_default_algorithms())
    if unknown:
        raise ValueError(f"algorithms: unknown {', '.join(sorted(unknown))}")
    unknown_keys = set(args) - {*KEY_SOURCES, "algorithms", "audience", "issuer", "claim_headers"}
    if unknown_keys:
        raise ValueError(f"unknown key(s) {', '.join(sorted(unknown_keys))}")


@functools.lru_cache(maxsize=16)
def _read(path: str) -> str:
    try:
        with open(path) as key_file:
            return key_file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None


def _key(args: dict[str, Any]) -> str:
    if "secret" in args:
        return str(args["secret"])
    if "secret_env" in args:
        return os.environ[args["secret_env"]]
    return _read(args["public_key_file"])


def _refuse(error: str, description: str) -> ext.Response:
    challenge = f'Bearer error="{error}", error_description="{description}"'
    return ext.Response(401, f"{description}\n", [("WWW-Authenticate", challenge)])


@ext.action("jwt_required", check=check)
def jwt_required(req: ext.Request, args: dict[str, Any]) -> ext.Response | None:
    scheme, _, token = (req.header("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _refuse("invalid_request", "a bearer token is required")
    try:
        claims = jwt.decode(token.strip(), _key(args), algorithms=args.get("algorithms", ["HS256"]),
                            audience=args.get("audience"), issuer=args.get("issuer"),
                            options={"require": ["exp"]})
    except jwt.InvalidTokenError as exc:
        return _refuse("invalid_token", str(exc).replace('"', "'"))
    for claim, header in (args.get("claim_headers") or {}).items():
        if claim in claims:
            req.set_header(header, str(claims[claim]))
        else:
            req.del_header(header)
    return None
