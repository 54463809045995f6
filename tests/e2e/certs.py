"""Certificates for the e2e tier's loopback cluster, made with the openssl command line: a CA,
and certificates it signs for a server on 127.0.0.1 or for a client."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, as PEM files."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def authority(folder: Path, name: str) -> KeyPair:
    """A self-signed CA."""
    folder.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert),
             "-days", "7", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return pair


def signed(ca: KeyPair, folder: Path, name: str, *, common_name: str, server: bool) -> KeyPair:
    """A certificate signed by `ca`: for a server on 127.0.0.1, or for a client named `common_name`."""
    pair = KeyPair(folder / f"{name}.crt", folder / f"{name}.key")
    csr, ext = folder / f"{name}.csr", folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" if server
                   else "extendedKeyUsage=clientAuth\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(pair.key), "-out", str(csr),
             "-subj", f"/CN={common_name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key), "-CAcreateserial",
             "-out", str(pair.cert), "-days", "7", "-extfile", str(ext))
    return pair
