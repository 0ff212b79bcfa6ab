"""TLS contexts: termination with certificates chosen by SNI, and origination to servers.

OpenSSL takes the certificate from the SSL context, and the one supported way to change it
during a handshake is the SNI callback replacing `ssl_object.context` (SSL_set_SSL_CTX). So
each certificate gets its own context, all configured alike (after the switch OpenSSL reads
some settings, such as ALPN selection, from the new context), and the first one, the
default, carries the callback. Certificates for the same names with keys of different types
(an RSA and an ECDSA one) share a context instead, where OpenSSL keeps one per key type and
serves ECDSA to every client that accepts it (its signature algorithms come first in the
server's order), RSA to the others, as HAProxy does with such pairs.

TLS 1.3 cipher suites go AES-128-GCM first by default (`TLS13_DEFAULT_SUITES`: Go's and
Mozilla's order, and TLS 1.3's mandatory suite) where OpenSSL puts AES-256-GCM-SHA384 first:
that one's key schedule runs on SHA-384, which x86 computes in software where it has
instructions for SHA-256, and AES-256 takes 14 rounds per block to AES-128's 10. ChaCha20
still goes to clients that list it first (phones without AES instructions). Every context
gets the run's session ticket keys, so that tickets stay good across reloads and workers;
the ssl module has no call for either, lbproxy/proxy/openssl_ctx.py does both.

The ssl module offers no way to read the SNI a client sent once the handshake is over, so
the callback records it on the `ssl.SSLObject` itself, the object uvloop and asyncio both
pass to the callback and return from `transport.get_extra_info("ssl_object")`; `sni_of`
reads it back. An attribute lives and dies with its connection: no global table to clean.

Everything that can be wrong with the files is found when the configuration is compiled and
reported as `ConfigError` lines naming the file; nothing here runs per request except the
SNI callback (two dict lookups).
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
from collections.abc import Callable

from lbproxy.config.errors import ConfigError
from lbproxy.config.schema import TLS13_DEFAULT_SUITES, BindTLSConfig, CertConfig, ServerTLSConfig
from lbproxy.proxy.openssl_ctx import set_ciphersuites, share_ticket_keys

TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}
# OpenSSL's SSL_OP_PRIORITIZE_CHACHA (no name in the ssl module): with the server's order,
# ChaCha20 all the same for a client that lists it first
_OP_PRIORITIZE_CHACHA = 1 << 21
# Client-initiated renegotiation costs the server a handshake per request: a known DoS.
SERVER_OPTIONS = (ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
                  | ssl.OP_NO_RENEGOTIATION | _OP_PRIORITIZE_CHACHA)
_SNI_ATTRIBUTE = "lbproxy_sni"   # set on the SSLObject by the SNI callback

SniCallback = Callable[[ssl.SSLObject, str | None, ssl.SSLContext], None]


def server_context(config: BindTLSConfig, where: str, address: str = "") -> ssl.SSLContext:
    """The context to listen with: the first certificate's, switching to another by SNI.

    `where` is the "FILE:LINE: key.path" of the `tls` section; every problem with every
    certificate is reported at once in one ConfigError. `address` is the bind's: its
    session tickets are good on that address only.
    """
    # imported here: cryptography costs 8 MB, and only binds with certificates need it
    from lbproxy.proxy.certificates import read_certificate

    problems: list[str] = []
    # one context per certificate, except that one of each key type goes in per set of names
    groups: list[tuple[tuple[str, ...], dict[str, tuple[CertConfig, str]]]] = []
    by_names: dict[frozenset[str], list[dict[str, tuple[CertConfig, str]]]] = {}
    for i, pair in enumerate(config.certificates):
        pair_where = f"{where}.certificates[{i}]"
        names, key_type = read_certificate(pair, pair_where, problems)
        alike = by_names.setdefault(frozenset(names), [])
        pairs = next((pairs for pairs in alike if key_type not in pairs), None)
        if pairs is None:
            pairs = {}
            alike.append(pairs)
            groups.append((names, pairs))
        pairs[key_type] = (pair, pair_where)
    if config.ciphers is not None and not _ciphers_valid(config.ciphers):
        problems.append(f"{where}.ciphers: no cipher matches '{config.ciphers}'")
    suites = ":".join(config.ciphersuites)
    if config.ciphersuites != TLS13_DEFAULT_SUITES and not set_ciphersuites(
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), suites):
        problems.append(f"{where}.ciphersuites: this Python's ssl module cannot be given "
                        f"TLS 1.3 cipher suites")
    if problems:
        raise ConfigError(problems)
    contexts = [_termination_context(config, suites, address, list(pairs.values()))
                for _, pairs in groups]
    exact: dict[str, ssl.SSLContext] = {}
    wildcard: dict[str, ssl.SSLContext] = {}     # "example.com" for "*.example.com"
    for context, (dns_names, _) in zip(contexts, groups):
        for name in dns_names:
            if name.startswith("*."):
                wildcard.setdefault(name[2:], context)   # setdefault: the first listed wins
            else:
                exact.setdefault(name, context)
    default = contexts[0]
    default.sni_callback = _sni_selector(exact, wildcard)
    return default


@functools.cache
def c_termination() -> type | None:
    """The server class that terminates TLS in C (lbproxy/proxy/tls_layer.pyx), made as
    `TLSServer(loop, source, sock)`; None where it is not built or not usable with this
    Python: asyncio's TLS then does the work."""
    try:
        from lbproxy.proxy.tls_layer import TLSServer, layout_holds
    except ImportError:       # not built (no compiler, no libssl.so.3, no epoll) or disabled
        return None
    return TLSServer if layout_holds() else None


def sni_of(ssl_object: ssl.SSLObject | None) -> str | None:
    """The server name the client sent (as sent), or None: no TLS or no SNI."""
    return getattr(ssl_object, _SNI_ATTRIBUTE, None)


def client_context(config: ServerTLSConfig, where: str,
                   alpn: list[str] | None = None) -> ssl.SSLContext:
    """The context to connect to a server with.

    verify "required": the chain must lead to `ca` (else the system store) and the
    certificate must match the name given as `server_hostname` when connecting (see
    `server_hostname`; for an IP address asyncio checks the IP itself). verify "none":
    encryption only, like HAProxy's `verify none`. `where` is the `tls` section's position.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(alpn)
    if config.verify == "none":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif config.ca is None:
        context.load_default_certs()
    else:
        try:
            context.load_verify_locations(cafile=config.ca)
        except ssl.SSLError:
            raise ConfigError([f"{where}.ca: no PEM certificate in {config.ca}"]) from None
        except OSError as exc:
            raise ConfigError([f"{where}.ca: cannot read {config.ca}: {exc.strerror}"]) from None
    return context


def server_hostname(config: ServerTLSConfig, address_host: str) -> str | None:
    """The SNI to send a server: `sni`, else the address's host name; None for an IP or a
    Unix socket (asyncio then verifies an IP against the certificate's IP addresses; a Unix
    socket with verify "required" needs `sni`, as there is no name to check)."""
    if config.sni is not None:
        return config.sni
    if not address_host:
        return None
    try:
        ipaddress.ip_address(address_host)
    except ValueError:
        return address_host
    return None


# --- termination ----------------------------------------------------------------------------

def _termination_context(config: BindTLSConfig, suites: str, address: str,
                         pairs: list[tuple[CertConfig, str]]) -> ssl.SSLContext:
    """A server context with `pairs` loaded (each at its "FILE:LINE: key.path", each of
    another key type), the bind's versions, ciphers and ALPN, TLS 1.3 `suites` and the
    session ticket keys of `address`."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[config.min_version]
    context.options |= SERVER_OPTIONS
    if config.ciphers is not None:
        context.set_ciphers(config.ciphers)
    set_ciphersuites(context, suites)    # the default where it can, or checked by server_context
    share_ticket_keys(context, address)
    context.set_alpn_protocols(list(config.alpn))
    for pair, where in pairs:
        try:
            context.load_cert_chain(pair.cert, pair.key)
        except OSError as exc:   # read_certificate accepted the files but OpenSSL does not
            raise ConfigError([f"{where}: cannot load {pair.cert}: {exc}"]) from None
    return context


def _ciphers_valid(ciphers: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(ciphers)
    except ssl.SSLError:
        return False
    return True


def _sni_selector(exact: dict[str, ssl.SSLContext],
                  wildcard: dict[str, ssl.SSLContext]) -> SniCallback:
    """The SNI callback: record the name, then switch to the context of an exact match, else
    of a wildcard covering exactly one more label; else keep the default certificate."""
    def select(ssl_object: ssl.SSLObject, server_name: str | None,
               context: ssl.SSLContext) -> None:
        if server_name is None:
            return
        setattr(ssl_object, _SNI_ATTRIBUTE, server_name)
        name = server_name.lower().rstrip(".")
        chosen = exact.get(name)
        if chosen is None:
            chosen = wildcard.get(name.partition(".")[2])
        if chosen is not None and chosen is not context:
            ssl_object.context = chosen
    return select
