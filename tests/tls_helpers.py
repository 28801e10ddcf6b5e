"""
Certificates for the TLS tests, made with ``openssl`` in a directory the
test owns: a CA, a certificate it signs for 127.0.0.1 and localhost
(usable by a server and by a client), and the same from a second CA that
nothing trusts.
"""

import subprocess
from pathlib import Path


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _key(directory, name):
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key",
             cwd=directory)
    return directory / f"{name}.key"


def make_ca(directory, name):
    """
    A self-signed CA: ``(certificate path, key path)``.
    """
    key = _key(directory, name)
    _openssl("req", "-x509", "-new", "-key", key.name, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-out", f"{name}.pem", cwd=directory)
    return directory / f"{name}.pem", key


def make_certificate(directory, name, ca):
    """
    A certificate signed by ``ca`` (a :func:`make_ca` pair) for localhost
    and 127.0.0.1, for server and client authentication: ``(certificate
    path, key path)``.
    """
    key = _key(directory, name)
    (directory / f"{name}.ext").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n")
    _openssl("req", "-new", "-key", key.name, "-subj", f"/CN={name}", "-out", f"{name}.csr",
             cwd=directory)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", str(ca[0]), "-CAkey", str(ca[1]),
             "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem",
             cwd=directory)
    return directory / f"{name}.pem", key


def make_pki(directory):
    """
    ``{"ca", "cert", "key", "other_ca", "other_cert", "other_key"}``:
    paths of a CA, a certificate it signed with its key, and the same of a
    second, unrelated CA.
    """
    directory = Path(directory)
    ca = make_ca(directory, "ca")
    cert, key = make_certificate(directory, "glimpse", ca)
    other = make_ca(directory, "other-ca")
    other_cert, other_key = make_certificate(directory, "stranger", other)
    return {"ca": ca[0], "cert": cert, "key": key, "other_ca": other[0],
            "other_cert": other_cert, "other_key": other_key}
