"""The fleet's certificates, made with ``cryptography`` (the one module that talks to it).

- a small CA (``DIR/ca/``), unless the fleet file brings one;
- one certificate per rig: its exporter and sidecar serve it, and crawlguard's
  clients on the rig present it (extended key usage server and client auth;
  names: the rig's host, plus 127.0.0.1 and localhost for clients on the rig);
- one client certificate for the central host: Prometheus, Alertmanager and
  ``crawlguard fleet status/rung`` present it to the rigs, which demand a
  certificate of the fleet's CA (mutual TLS) on top of the bearer token.

Keys are ECDSA P-256: small, fast, and understood by Go (Prometheus,
Alertmanager) and OpenSSL (Python) alike. Nothing here writes a file:
``crawlguard.fleet.generate`` decides what is kept and what is new, and
``check`` says what is wrong with a certificate that exists, so that a wrong one
is refused with its reason instead of being replaced behind anyone's back.
Errors of the library become ``ConfigError`` here, with the file named.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from crawlguard.kernel.errors import ConfigError

CA_DAYS = 3650
LEAF_DAYS = 825
"""The longest validity browsers and most TLS stacks still accept for a leaf."""
RENEW_DAYS = 30
"""``generate`` warns when a certificate expires within this many days."""
LOCAL_NAMES = ("127.0.0.1", "localhost")
"""Extra names of a rig's certificate: a client on the rig may reach it on loopback."""

SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
"""The CA keys crawlguard signs with (its own are EC; a brought one may be RSA)."""
E = TypeVar("E", bound=x509.ExtensionType)


@dataclass(frozen=True)
class Ca:
    cert: x509.Certificate
    key: SigningKey | None
    """None: a CA the user brought without its key; it signs nothing here."""

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_ca() -> tuple[bytes, bytes]:
    """A fresh CA: (certificate PEM, key PEM). Its name carries a random tag, so the CAs
    of two fleets are told apart in every error message."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"crawlguard fleet CA {secrets.token_hex(4)}")])
    now = _now()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False),
                           critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def load_ca(cert_path: Path, key_path: Path | None) -> Ca:
    cert = load_cert(cert_path)
    constraints = _extension(cert, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise ConfigError("CA certificate", str(cert_path), "is not a CA certificate")
    if key_path is None:
        return Ca(cert, None)
    key = load_key(key_path)
    if not _same_key(cert, key):
        raise ConfigError("CA key", str(key_path), f"does not belong to {cert_path}")
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise ConfigError("CA key", str(key_path), "must be an EC or RSA key")
    return Ca(cert, key)


def issue(ca: Ca, common_name: str, hosts: list[str], server: bool) -> tuple[bytes, bytes]:
    """A certificate for ``hosts`` signed by ``ca``: (certificate PEM, key PEM)."""
    if ca.key is None:
        raise ConfigError("CA key", None, "the CA was brought without its key: bring the "
                          f"certificate of {common_name!r} too")
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(min(now + dt.timedelta(days=LEAF_DAYS),
                                 ca.cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=True, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName(_names(hosts)), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def check(cert_path: Path, key_path: Path, ca: Ca, hosts: list[str]) -> list[str]:
    """What is wrong with an existing certificate and key (empty: nothing)."""
    cert = load_cert(cert_path)
    problems = []
    if not _same_key(cert, load_key(key_path)):
        problems.append(f"{key_path.name} is not the key of {cert_path.name}")
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        problems.append(f"it was not issued by the fleet's CA "
                        f"({ca.cert.subject.rfc4514_string()})")
    covered = set(names_of(cert))
    missing = [h for h in hosts if _canonical(h) not in covered]
    if missing:
        problems.append(f"it does not name {', '.join(missing)} (it names "
                        f"{', '.join(sorted(covered)) or 'nothing'})")
    if cert.not_valid_after_utc <= _now():
        problems.append(f"it expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return problems


def expires_soon(cert_path: Path, days: int = RENEW_DAYS) -> dt.datetime | None:
    """The expiry of the certificate when it falls within ``days``; else None."""
    end = load_cert(cert_path).not_valid_after_utc
    return end if end - _now() < dt.timedelta(days=days) else None


def names_of(cert: x509.Certificate) -> list[str]:
    san = _extension(cert, x509.SubjectAlternativeName)
    if san is None:
        return []
    return ([str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
            + [d.lower() for d in san.get_values_for_type(x509.DNSName)])


def load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError("certificate", str(path), f"cannot read: {exc.strerror or exc}") \
            from exc
    except ValueError as exc:
        raise ConfigError("certificate", str(path), f"not a PEM certificate: {exc}") from exc


def load_key(path: Path) -> PrivateKeyTypes:
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError("private key", str(path), f"cannot read: {exc.strerror or exc}") \
            from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError("private key", str(path), "not an unencrypted PEM private key "
                          f"({exc})") from exc


def _same_key(cert: x509.Certificate, key: PrivateKeyTypes) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _extension(cert: x509.Certificate, kind: type[E]) -> E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _canonical(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(_canonical(h) for h in hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out
