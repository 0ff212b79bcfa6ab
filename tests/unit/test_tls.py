"""TLS contexts on real loopback handshakes: SNI certificate choice, versions, ALPN, errors."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lbproxy.config.errors import ConfigError
from lbproxy.config.schema import BindTLSConfig, CertConfig, ServerTLSConfig
from lbproxy.proxy.openssl_ctx import set_ciphersuites
from lbproxy.proxy.tls import client_context, server_context, server_hostname, sni_of

WHERE = "conf/a.yaml:7: frontends.web.bind[1].tls"
LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}


@dataclass
class Handshake:
    peer: bytes            # DER of the certificate the client received
    sni: str | None        # sni_of() on the server side's transport
    alpn: str | None
    cipher: str


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext,
                     hostname: str | None) -> Handshake:
    """Accept one TLS connection with `server`, connect with `client` sending `hostname`."""
    loop = asyncio.get_running_loop()
    seen: asyncio.Future[str | None] = loop.create_future()

    class Recorder(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            seen.set_result(sni_of(transport.get_extra_info("ssl_object")))

    listener = await loop.create_server(Recorder, "127.0.0.1", 0, ssl=server)
    try:
        port = listener.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client,
                                                  server_hostname=hostname)
        ssl_object = writer.get_extra_info("ssl_object")
        result = Handshake(ssl_object.getpeercert(binary_form=True), await seen,
                           ssl_object.selected_alpn_protocol(), ssl_object.cipher()[0])
        writer.close()
        return result
    finally:
        listener.close()


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str | None,
              loop_factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
              ) -> Handshake:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_handshake(server, client, hostname))


def server_refusal(server: ssl.SSLContext, client: ssl.SSLContext,
                   hostname: str = "a.test") -> str | None:
    """OpenSSL's reason for the server refusing a handshake, None if it completes.

    Through memory BIOs (the SSLObject path uvloop uses): over sockets both loops only
    report the client's side, a reset.
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server, server_hostname=hostname)
    for _ in range(4):      # TLS 1.2 needs two round trips
        try:
            client_side.do_handshake()
        except ssl.SSLWantReadError:
            pass
        try:
            server_side.do_handshake()
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            return exc.reason
    return None


def any_certificate(maximum: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    """A client accepting any certificate (the tests identify it by its DER), offering
    http/1.1 by ALPN and, with `maximum`, old protocol versions."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2", "http/1.1"])
    if maximum is not None:
        with warnings.catch_warnings(action="ignore", category=DeprecationWarning):
            context.minimum_version = context.maximum_version = maximum
        context.set_ciphers("DEFAULT:@SECLEVEL=0")   # OpenSSL 3 refuses TLS < 1.2 otherwise
    return context


def der(cert: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pair(tmp_path: Path) -> Callable[..., CertConfig]:
    """pair(cert, combined=False): write a trustme certificate and key; their CertConfig."""
    def write(cert: trustme.LeafCert, combined: bool = False) -> CertConfig:
        stem = tmp_path / f"cert{len(list(tmp_path.iterdir()))}"
        if combined:
            cert.private_key_and_cert_chain_pem.write_to_path(f"{stem}.pem")
            return CertConfig(f"{stem}.pem", f"{stem}.pem")
        cert.cert_chain_pems[0].write_to_path(f"{stem}.pem")
        cert.private_key_pem.write_to_path(f"{stem}.key")
        return CertConfig(f"{stem}.pem", f"{stem}.key")
    return write


# --- certificate choice ---------------------------------------------------------------------

@pytest.mark.parametrize("loop_factory", LOOPS.values(), ids=LOOPS.keys())
def test_each_sni_name_gets_its_certificate(ca: trustme.CA, pair: Callable[..., CertConfig],
                                            loop_factory: Callable[[], asyncio.AbstractEventLoop]
                                            ) -> None:
    a, b = ca.issue_cert("a.test"), ca.issue_cert("b.test", "alias.test")
    context = server_context(BindTLSConfig((pair(a), pair(b, combined=True))), WHERE)
    for name, cert in [("a.test", a), ("b.test", b), ("alias.test", b), ("A.Test", a),
                       ("unknown.test", a)]:
        seen = handshake(context, any_certificate(), name, loop_factory)
        assert (seen.peer, seen.sni) == (der(cert), name)
    seen = handshake(context, any_certificate(), None, loop_factory)   # IP: no SNI sent
    assert (seen.peer, seen.sni) == (der(a), None)


def test_wildcard_covers_exactly_one_label(ca: trustme.CA, pair: Callable[..., CertConfig]) -> None:
    default, wild = ca.issue_cert("default.test"), ca.issue_cert("*.wild.test")
    context = server_context(BindTLSConfig((pair(default), pair(wild))), WHERE)
    for name, cert in [("x.wild.test", wild), ("a.b.wild.test", default), ("wild.test", default)]:
        assert handshake(context, any_certificate(), name).peer == der(cert), name


def test_exact_name_wins_over_wildcard(ca: trustme.CA, pair: Callable[..., CertConfig]) -> None:
    wild, exact = ca.issue_cert("*.example.test"), ca.issue_cert("api.example.test")
    context = server_context(BindTLSConfig((pair(wild), pair(exact))), WHERE)
    assert handshake(context, any_certificate(), "api.example.test").peer == der(exact)
    assert handshake(context, any_certificate(), "www.example.test").peer == der(wild)


def test_ecdsa_is_served_where_the_client_takes_it_beside_rsa(
        ca: trustme.CA, pair: Callable[..., CertConfig]) -> None:
    """An RSA and an ECDSA certificate for the same names, in either order: ECDSA to a
    client that accepts it, RSA to one that only takes RSA; also after an SNI switch."""
    rsa_cert = ca.issue_cert("a.test", key_type=trustme.KeyType.RSA)
    ecdsa_cert = ca.issue_cert("a.test")
    other = ca.issue_cert("other.test")
    rsa_only = any_certificate(maximum=ssl.TLSVersion.TLSv1_2)
    rsa_only.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    for certificates in [(pair(rsa_cert), pair(ecdsa_cert)), (pair(ecdsa_cert), pair(rsa_cert)),
                         (pair(other), pair(rsa_cert), pair(ecdsa_cert))]:
        context = server_context(BindTLSConfig(certificates), WHERE)
        assert handshake(context, any_certificate(), "a.test").peer == der(ecdsa_cert)
        assert handshake(context, rsa_only, "a.test").peer == der(rsa_cert)


def test_two_certificates_of_one_key_type_stay_apart(ca: trustme.CA,
                                                     pair: Callable[..., CertConfig]) -> None:
    first, second = ca.issue_cert("a.test"), ca.issue_cert("a.test")
    context = server_context(BindTLSConfig((pair(first), pair(second))), WHERE)
    assert handshake(context, any_certificate(), "a.test").peer == der(first)


def test_subject_cn_is_used_without_san(tmp_path: Path, ca: trustme.CA,
                                        pair: Callable[..., CertConfig]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cn-only.test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    path = tmp_path / "cn.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = server_context(BindTLSConfig((pair(ca.issue_cert("other.test")),
                                            CertConfig(str(path), str(path)))), WHERE)
    seen = handshake(context, any_certificate(), "cn-only.test")
    assert seen.peer == cert.public_bytes(serialization.Encoding.DER)


# --- versions and ALPN ----------------------------------------------------------------------

def test_min_version_refuses_older_clients(ca: trustme.CA, pair: Callable[..., CertConfig]) -> None:
    certificates = (pair(ca.issue_cert("a.test")),)
    tls12 = server_context(BindTLSConfig(certificates, min_version="TLSv1.2"), WHERE)
    tls13 = server_context(BindTLSConfig(certificates, min_version="TLSv1.3"), WHERE)
    tls11_client = any_certificate(maximum=ssl.TLSVersion.TLSv1_1)
    tls12_client = any_certificate(maximum=ssl.TLSVersion.TLSv1_2)
    assert server_refusal(tls12, tls11_client) == "UNSUPPORTED_PROTOCOL"
    assert server_refusal(tls12, tls12_client) is None
    assert server_refusal(tls13, tls12_client) == "UNSUPPORTED_PROTOCOL"


def test_alpn_and_ciphers_apply_after_an_sni_switch(ca: trustme.CA,
                                                    pair: Callable[..., CertConfig]) -> None:
    config = BindTLSConfig((pair(ca.issue_cert("a.test")), pair(ca.issue_cert("b.test"))),
                           ciphers="ECDHE+AESGCM")
    context = server_context(config, WHERE)
    for name in ("a.test", "b.test"):
        assert handshake(context, any_certificate(), name).alpn == "h2"     # the default
    client = any_certificate(maximum=ssl.TLSVersion.TLSv1_2)
    assert server_refusal(context, client, "b.test") is None
    client.set_ciphers("ECDHE+CHACHA20")
    assert server_refusal(context, client, "b.test") == "NO_SHARED_CIPHER"


def test_tls13_prefers_aes128_and_chacha20_for_clients_that_put_it_first(
        ca: trustme.CA, pair: Callable[..., CertConfig]) -> None:
    certificates = (pair(ca.issue_cert("a.test")),)
    context = server_context(BindTLSConfig(certificates), WHERE)
    client = any_certificate()     # OpenSSL's order: AES-256 first
    assert handshake(context, client, "a.test").cipher == "TLS_AES_128_GCM_SHA256"
    assert set_ciphersuites(client, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384")
    assert handshake(context, client, "a.test").cipher == "TLS_CHACHA20_POLY1305_SHA256"
    chosen = server_context(BindTLSConfig(certificates, ciphersuites=("TLS_AES_256_GCM_SHA384",)),
                            WHERE)
    assert handshake(chosen, any_certificate(), "a.test", asyncio.new_event_loop).cipher \
        == "TLS_AES_256_GCM_SHA384"


# --- configuration errors -------------------------------------------------------------------

def errors(call: Callable[[], object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        call()
    return info.value.errors


def test_every_file_problem_is_reported_with_its_file(tmp_path: Path, ca: trustme.CA,
                                                      pair: Callable[..., CertConfig]) -> None:
    good, other = pair(ca.issue_cert("a.test")), pair(ca.issue_cert("b.test"))
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(ca.issue_cert("c.test").private_key_pem.bytes())
    key = serialization.load_pem_private_key(encrypted.read_bytes(), None)
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"secret")))
    missing = str(tmp_path / "missing.pem")
    config = BindTLSConfig((
        CertConfig(missing, good.key),
        CertConfig(good.cert, missing),
        CertConfig(good.cert, other.key),
        CertConfig(str(junk), good.key),
        CertConfig(good.cert, str(junk)),
        CertConfig(good.cert, str(encrypted)),
    ), ciphers="NO-SUCH-CIPHER")
    assert errors(lambda: server_context(config, WHERE)) == [
        f"{WHERE}.certificates[0].cert: cannot read {missing}: No such file or directory",
        f"{WHERE}.certificates[1].key: cannot read {missing}: No such file or directory",
        f"{WHERE}.certificates[2]: key {other.key} does not match certificate {good.cert}",
        f"{WHERE}.certificates[3].cert: no PEM certificate in {junk}",
        f"{WHERE}.certificates[4].key: no usable PEM private key in {junk}",
        f"{WHERE}.certificates[5].key: {encrypted} is encrypted; give an unencrypted key",
        f"{WHERE}.ciphers: no cipher matches 'NO-SUCH-CIPHER'",
    ]


def test_client_ca_problems_name_the_file(tmp_path: Path) -> None:
    where = "conf/a.yaml:30: backends.app.servers[0].tls"
    missing, junk = tmp_path / "missing.pem", tmp_path / "junk.pem"
    junk.write_text("junk\n")
    assert errors(lambda: client_context(ServerTLSConfig(ca=str(missing)), where)) == [
        f"{where}.ca: cannot read {missing}: No such file or directory"]
    assert errors(lambda: client_context(ServerTLSConfig(ca=str(junk)), where)) == [
        f"{where}.ca: no PEM certificate in {junk}"]


# --- TLS to servers -------------------------------------------------------------------------

@pytest.fixture
def app_server(ca: trustme.CA, pair: Callable[..., CertConfig]) -> ssl.SSLContext:
    """A TLS server for app.internal and 127.0.0.1, signed by `ca` (not in the system store)."""
    return server_context(BindTLSConfig((pair(ca.issue_cert("app.internal", "127.0.0.1")),)),
                          WHERE)


def connect(server: ssl.SSLContext, config: ServerTLSConfig, host: str = "127.0.0.1") -> Handshake:
    """Connect as the data plane would: client_context, SNI from server_hostname."""
    return handshake(server, client_context(config, WHERE), server_hostname(config, host))


def test_verify_required_refuses_an_untrusted_certificate(app_server: ssl.SSLContext) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(app_server, ServerTLSConfig(verify="required", sni="app.internal"))


def test_verify_required_accepts_the_configured_ca(app_server: ssl.SSLContext, ca: trustme.CA,
                                                   tmp_path: Path) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    trusted = ServerTLSConfig(sni="app.internal", ca=str(tmp_path / "ca.pem"))
    assert connect(app_server, trusted).sni == "app.internal"
    without_sni = ServerTLSConfig(ca=trusted.ca)     # an IP is checked against IP SANs
    assert connect(app_server, without_sni).sni is None
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(app_server, ServerTLSConfig(sni="other.internal", ca=trusted.ca))


def test_verify_none_accepts_any_certificate_and_still_sends_sni(
        app_server: ssl.SSLContext) -> None:
    assert connect(app_server, ServerTLSConfig(verify="none", sni="x.test")).sni == "x.test"


@pytest.mark.parametrize("sni, host, expected", [
    ("app.internal", "10.0.0.7", "app.internal"),
    (None, "app.service.local", "app.service.local"),
    (None, "10.0.0.7", None),
    (None, "::1", None),
    (None, "", None),                      # unix socket
])
def test_server_hostname(sni: str | None, host: str, expected: str | None) -> None:
    assert server_hostname(ServerTLSConfig(sni=sni), host) == expected


def test_suites_that_cannot_be_set_are_an_error_unless_left_at_the_default(
        ca: trustme.CA, pair: Callable[..., CertConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("lbproxy.proxy.openssl_ctx._libssl", lambda: None)  # another Python
    certificates = (pair(ca.issue_cert("a.test")),)
    assert handshake(server_context(BindTLSConfig(certificates), WHERE), any_certificate(),
                     "a.test").cipher == "TLS_AES_256_GCM_SHA384"      # OpenSSL's order
    assert errors(lambda: server_context(
        BindTLSConfig(certificates, ciphersuites=("TLS_AES_256_GCM_SHA384",)), WHERE)) == [
        f"{WHERE}.ciphersuites: this Python's ssl module cannot be given TLS 1.3 cipher suites"]


def _session_after(server: ssl.SSLContext, client: ssl.SSLContext,
                   session: ssl.SSLSession | None = None) -> tuple[bool, ssl.SSLSession]:
    """A handshake with `server` through memory BIOs offering `session`: whether it resumed,
    and the session to offer next (TLS 1.3 tickets come after the handshake, with data)."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server, server_hostname="a.test", session=session)
    for side in (client_side, server_side, client_side, server_side):
        try:
            side.do_handshake()
        except ssl.SSLWantReadError:
            pass
    server_side.write(b"x")
    assert client_side.read(1) == b"x"
    return client_side.session_reused, client_side.session


def test_tickets_are_good_across_reloads_and_workers_of_one_bind_only(
        ca: trustme.CA, pair: Callable[..., CertConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    """Contexts made again for the same address (a reload), or in another process given the
    same secret (a worker), resume each other's sessions; another bind's do not."""
    from lbproxy.proxy import openssl_ctx

    monkeypatch.setattr(openssl_ctx, "_now", lambda: 1e9)      # no hourly change midway
    config = BindTLSConfig((pair(ca.issue_cert("a.test")),))
    client = any_certificate()
    _, session = _session_after(server_context(config, WHERE, "127.0.0.1:8443"), client)
    assert _session_after(server_context(config, WHERE, "127.0.0.1:8443"), client, session)[0]
    assert not _session_after(server_context(config, WHERE, "127.0.0.1:9443"), client, session)[0]

    monkeypatch.setenv(openssl_ctx.TICKET_SECRET_ENV, openssl_ctx.ticket_secret().hex())
    openssl_ctx.ticket_secret.cache_clear()                        # as in a worker
    assert _session_after(server_context(config, WHERE, "127.0.0.1:8443"), client, session)[0]
    assert openssl_ctx.TICKET_SECRET_ENV not in os.environ         # not for its children
    monkeypatch.setenv(openssl_ctx.TICKET_SECRET_ENV, "00" * openssl_ctx.TICKET_SECRET_SIZE)
    openssl_ctx.ticket_secret.cache_clear()                        # another run's secret
    assert not _session_after(server_context(config, WHERE, "127.0.0.1:8443"), client, session)[0]
    openssl_ctx.ticket_secret.cache_clear()


def test_ticket_keys_change_each_period_alike_everywhere(
        ca: trustme.CA, pair: Callable[..., CertConfig], monkeypatch: pytest.MonkeyPatch) -> None:
    """At a rotation an old ticket gets a full handshake; a new one is good on a context
    made in the same period (another worker)."""
    from lbproxy.proxy import openssl_ctx

    lifetime = openssl_ctx.TICKET_KEY_LIFETIME
    now = [123_456 * lifetime + 10.0]                 # 10 s into a period
    monkeypatch.setattr(openssl_ctx, "_now", lambda: now[0])
    assert openssl_ctx.seconds_to_rotation() == pytest.approx(lifetime - 10.0, abs=0.1)
    config = BindTLSConfig((pair(ca.issue_cert("a.test")),))
    client = any_certificate()
    context = server_context(config, WHERE, "127.0.0.1:8443")
    _, old = _session_after(context, client)
    assert _session_after(context, client, old)[0]
    now[0] += lifetime
    openssl_ctx.rotate_ticket_keys()
    assert not _session_after(context, client, old)[0]
    _, new = _session_after(context, client)
    assert _session_after(server_context(config, WHERE, "127.0.0.1:8443"), client, new)[0]
