"""A throwaway PKI for TLS tests: a CA and server/client certificates it issues.

EC P-256 keys (fast to generate); every certificate is valid from an hour ago until a day from
now. Nothing here is fit for anything but tests.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=1)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Ca:
    """A self-signed certificate authority."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, directory: Path) -> Path:
        """Write the CA certificate to ``directory/<name>-ca.pem`` and return its path."""
        path = directory / f"{self.name}-ca.pem"
        path.write_bytes(self.pem)
        return path


@dataclass(frozen=True)
class Leaf:
    """A certificate issued by a ``Ca``, with its private key."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        """The certificate, DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        """The certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        """The private key, unencrypted PKCS#8 PEM."""
        return _key_pem(self.key)

    @property
    def sha256(self) -> str:
        """Lower-case hex SHA-256 of the DER certificate (``cert_sha256`` in the configuration)."""
        return hashlib.sha256(self.der).hexdigest()

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``<name>.pem`` and ``<name>.key`` into ``directory``; return both paths."""
        cert_path = directory / f"{self.name}.pem"
        key_path = directory / f"{self.name}.key"
        cert_path.write_bytes(self.pem)
        key_path.write_bytes(self.key_pem)
        return cert_path, key_path


def make_ca(common_name: str) -> Ca:
    """A new self-signed CA called ``common_name``."""
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Ca(common_name, cert, key)


def _san(hostname: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)


def issue(
    ca: Ca,
    common_name: str,
    *,
    server: bool,
    hostnames: tuple[str, ...] = ("127.0.0.1", "localhost"),
) -> Leaf:
    """A certificate for ``common_name`` signed by ``ca``.

    A server certificate carries ``hostnames`` as IP/DNS subject alternative names and the
    serverAuth usage; a client certificate carries the clientAuth usage and no SAN.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(name) for name in hostnames]), critical=False
        )
    return Leaf(common_name, builder.sign(ca.key, hashes.SHA256()), key)
