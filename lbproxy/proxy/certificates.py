"""Certificate files read and checked before OpenSSL loads them: which file is wrong, which
DNS names a certificate serves (for SNI) and the type of its key (an RSA and an ECDSA
certificate for the same names share one context, lbproxy/proxy/tls.py).

Its own module because `cryptography` costs about 8 MB of memory and 50 ms of start: it is
imported when a bind has certificates to check (lbproxy/proxy/tls.py), never otherwise.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from lbproxy.config.schema import CertConfig


# OpenSSL keeps one certificate per key type in a context: these are its slots
_KEY_TYPES = ((rsa.RSAPublicKey, "RSA"), (ec.EllipticCurvePublicKey, "ECDSA"),
              (ed25519.Ed25519PublicKey, "Ed25519"), (ed448.Ed448PublicKey, "Ed448"),
              (dsa.DSAPublicKey, "DSA"))


def read_certificate(pair: CertConfig, where: str,
                      problems: list[str]) -> tuple[tuple[str, ...], str]:
    """Check that `pair` is a readable certificate with its key; return its DNS names and
    its key type ("RSA", "ECDSA", ...).

    Checked with `cryptography` rather than by OpenSSL's load_cert_chain, whose errors
    ("[SSL] PEM lib") do not say which file is wrong.
    """
    cert_pem = _read(pair.cert, f"{where}.cert", problems)
    key_pem = cert_pem if pair.key == pair.cert else _read(pair.key, f"{where}.key", problems)
    if cert_pem is None or key_pem is None:
        return (), ""
    try:
        certificate = x509.load_pem_x509_certificates(cert_pem)[0]   # the leaf comes first
    except ValueError:
        problems.append(f"{where}.cert: no PEM certificate in {pair.cert}")
        return (), ""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        problems.append(f"{where}.key: {pair.key} is encrypted; give an unencrypted key")
    except (ValueError, UnsupportedAlgorithm):
        problems.append(f"{where}.key: no usable PEM private key in {pair.key}")
    else:
        if key.public_key() != certificate.public_key():
            problems.append(f"{where}: key {pair.key} does not match certificate {pair.cert}")
    public_key = certificate.public_key()
    key_type = next((name for kind, name in _KEY_TYPES if isinstance(public_key, kind)),
                    type(public_key).__name__)
    return _dns_names(certificate), key_type


def _read(path: str, where: str, problems: list[str]) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        problems.append(f"{where}: cannot read {path}: {exc.strerror}")
        return None


def _dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """SAN dNSName entries, else the subject CN (RFC 6125: the CN only counts without SANs),
    lower-cased for matching."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names: list[str] = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not names:
        names = [str(attribute.value) for attribute
                 in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(name.lower().rstrip(".") for name in names)
