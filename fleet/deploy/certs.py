"""Development TLS certificates and SuperNode keys for a secured Flower deployment.

`fleet certs DIR --host ADDR --nodes N` writes what the coordinator and the devices need:

- `ca.crt` (give it to every device) and `ca.key` (keep it on the coordinator);
- `server.crt`, `server.key`: the SuperLink's certificate, naming localhost, 127.0.0.1,
  ::1 and every `--host` (a device checks that the address it dials is in it);
- `node-<i>.key` (copy to device i only) and `node-<i>.pub` (registered on the SuperLink,
  so that only those devices may join): ECDSA P-384 in OpenSSH format, as
  `flower-supernode --auth-supernode-private-key` and `flwr supernode register` read them.

They are for development and trials; a production fleet uses certificates from its own
authority. Private keys are written owner-only, and nothing is overwritten.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from clients.errors import InputError

LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")
VALID_DAYS = 365


def subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    """SubjectAltName entries: IP addresses as such, anything else as a DNS name."""
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys([*LOCAL_NAMES, *hosts]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c in "/:@" for c in host):
                raise InputError(f"--host {host!r} is neither an IP address nor a host name") from None
            names.append(x509.DNSName(host))
    return names


def _private_pem(key: ec.EllipticCurvePrivateKey, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _certificate(subject: str, key, issuer: x509.Name, signer, *, ca: bool,
                 names: Sequence[x509.GeneralName] = ()) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True)
    else:
        builder = (builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
    return builder.sign(signer, hashes.SHA384())


def make_certs(out_dir: Path, hosts: list[str], nodes: int) -> list[Path]:
    """Write the CA, the SuperLink's certificate and `nodes` SuperNode key pairs; return the paths."""
    if nodes < 0:
        raise InputError(f"--nodes must be >= 0, got {nodes}")
    names = subject_names(hosts)
    files = ["ca.crt", "ca.key", "server.crt", "server.key",
             *(f"node-{i}.{ext}" for i in range(nodes) for ext in ("key", "pub"))]
    present = [f for f in files if (out_dir / f).exists()]
    if present:
        raise InputError(f"{out_dir / present[0]} already exists: choose an empty folder (nothing is overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(name: str, data: bytes, private: bool = False) -> None:
        path = out_dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        written.append(path)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = "sparcl-fleet development CA"
    ca = _certificate(ca_name, ca_key, x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)]), ca_key,
                      ca=True)  # self-signed
    write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    write("ca.key", _private_pem(ca_key), private=True)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = _certificate("sparcl-fleet coordinator", server_key, ca.subject, ca_key, ca=False, names=names)
    write("server.crt", server.public_bytes(serialization.Encoding.PEM))
    write("server.key", _private_pem(server_key), private=True)
    for i in range(nodes):
        key = ec.generate_private_key(ec.SECP384R1())
        write(f"node-{i}.key", _private_pem(key, serialization.PrivateFormat.OpenSSH), private=True)
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        write(f"node-{i}.pub", public + f" sparcl-fleet-node-{i}\n".encode())
    return written
