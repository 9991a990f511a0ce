"""Throwaway PEM certificates made with the `openssl` command: a CA, a server and a client."""

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class TestPki:
    ca: Path  # the CA certificate that signs server and client
    server: KeyPair  # CN/SAN 127.0.0.1 and localhost
    client: KeyPair
    other_ca: Path  # an unrelated CA: trusting only it must fail verification

    __test__ = False  # not a pytest test class


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN=dicomnode test {name}",
    )  # fmt: skip
    return cert, key


def _leaf(directory: Path, name: str, ca: tuple[Path, Path], extensions: str) -> KeyPair:
    cert, key, csr = (directory / f"{name}{ext}" for ext in (".pem", ".key", ".csr"))
    ext_file = directory / f"{name}.ext"
    ext_file.write_text(
        "basicConstraints = CA:FALSE\n"
        "keyUsage = digitalSignature, keyEncipherment\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n" + extensions
    )
    _openssl(
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={'127.0.0.1' if name == 'server' else 'dicomnode test ' + name}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca[0]), "-CAkey", str(ca[1]),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext_file), "-out", str(cert),
    )  # fmt: skip
    return KeyPair(cert, key)


def make_test_pki(directory: Path) -> TestPki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = _ca(directory, "ca")
    server = _leaf(
        directory,
        "server",
        ca,
        "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n",
    )
    client = _leaf(directory, "client", ca, "extendedKeyUsage = clientAuth\n")
    other_ca, _ = _ca(directory, "other-ca")
    return TestPki(ca=ca[0], server=server, client=client, other_ca=other_ca)
