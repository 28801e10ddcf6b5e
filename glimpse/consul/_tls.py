"""
TLS to the Consul agent: what Glimpse trusts (``--consul-ca``), the client
certificate it shows (``--consul-cert``, ``--consul-key``, for an agent
with ``verify_incoming``), and what a TLS failure means, in words that
name the option to fix.

TLS is verified whenever the URL is ``https://``: against the CA file, or
the system's trust store without one.  Nothing here ever falls back to
plain HTTP or to unverified TLS.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs
from OpenSSL import SSL
from OpenSSL.crypto import FILETYPE_PEM
from OpenSSL.crypto import Error as CryptoError
from twisted.internet.ssl import (
    Certificate,
    KeyPair,
    PrivateCertificate,
    optionsForClientTLS,
    trustRootFromCertificates,
)
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from twisted.python.failure import Failure

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


@attrs.define
class TLSConfigError(Exception):
    """
    A TLS file cannot be used; the message names the option and says why.
    """

    message: str

    def __str__(self) -> str:
        return self.message


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise TLSConfigError(f"--{option}={path}: cannot read it ({e.strerror})") from e


def _certificates(option: str, path: str) -> list[Certificate]:
    found = _PEM_CERTIFICATE.findall(_read(option, path))
    try:
        certificates = [Certificate.loadPEM(pem) for pem in found]
    except CryptoError as e:
        raise TLSConfigError(f"--{option}={path}: a certificate in it is broken ({e})") from e
    if not certificates:
        raise TLSConfigError(f"--{option}={path}: no PEM certificate in it "
                             "(-----BEGIN CERTIFICATE-----)")
    return certificates


@attrs.frozen
class ConsulTLS:
    """
    The TLS files Glimpse uses to reach an ``https://`` Consul agent.

    :ivar ca: PEM file of the CA (or CAs) that signed the agent's
        certificate, or ``None`` for the system's trust store.
    :ivar cert: PEM file of Glimpse's client certificate (then any
        intermediate certificates), or ``None`` for none.
    :ivar key: PEM file of the client certificate's private key.
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def policy(self) -> IPolicyForHTTPS:
        """
        The HTTPS policy of the Consul client's ``Agent``: every file read
        and checked now.

        :raises TLSConfigError: for a file that cannot be read, holds no
            certificate or key, or a key that is not the certificate's.
        """
        trust = trustRootFromCertificates(_certificates("consul-ca", self.ca)) if self.ca else None
        client, chain = self.client_certificate()
        return _Policy(trust, client, chain)

    def client_certificate(self) -> tuple[PrivateCertificate | None, list[Certificate]]:
        """
        The client certificate with its key, and the intermediate
        certificates after it in ``cert``; ``(None, [])`` without one.

        :raises TLSConfigError: as :meth:`policy`.
        """
        if (self.cert is None) != (self.key is None):
            raise TLSConfigError("--consul-cert and --consul-key go together: give both "
                                 "(the client certificate and its private key) or neither")
        if self.cert is None or self.key is None:
            return None, []
        leaf, *chain = _certificates("consul-cert", self.cert)
        try:
            pair = KeyPair.load(_read("consul-key", self.key), FILETYPE_PEM)
        except (CryptoError, ValueError, TypeError) as e:
            raise TLSConfigError(
                f"--consul-key={self.key}: not a PEM private key ({e or 'unreadable'}); give "
                "the unencrypted key of --consul-cert") from e
        context = SSL.Context(SSL.TLS_METHOD)
        try:
            context.use_certificate(leaf.original.to_cryptography())
            context.use_privatekey(pair.original.to_cryptography_key())
            context.check_privatekey()
        except SSL.Error as e:
            raise TLSConfigError(
                f"--consul-key={self.key} is not the private key of --consul-cert={self.cert}; "
                "give the key the certificate was made with") from e
        return PrivateCertificate.fromCertificateAndKeyPair(leaf, pair), chain


@implementer(IPolicyForHTTPS)
class _Policy:
    # As twisted.web's BrowserLikePolicyForHTTPS (the host name checked
    # against the certificate, the trust root given or the system's), and a
    # client certificate.

    def __init__(self, trust: Any, client: PrivateCertificate | None,
                 chain: list[Certificate]) -> None:
        self._trust = trust
        self._client = client
        self._chain = [c.original for c in chain]

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        extra = {"extraCertChain": list(self._chain)} if self._chain else None
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust,
                                   clientCertificate=self._client,
                                   extraCertificateOptions=extra)


def _errors(value: BaseException) -> Iterator[BaseException]:
    # twisted.web's client wraps what failed in ResponseFailed (and
    # subclasses), whose ``reasons`` are Failures.
    yield value
    for reason in getattr(value, "reasons", None) or ():
        yield from _errors(reason.value)


def _reason(error: BaseException) -> str:
    # pyOpenSSL: [(library, function, reason), ...]; the reasons say it.
    if isinstance(error, SSL.Error) and error.args and isinstance(error.args[0], list):
        reasons = [str(r[-1]) for r in error.args[0] if isinstance(r, tuple) and r]
        if reasons:
            return "; ".join(reasons)
    return str(error) or type(error).__name__


def tls_problem(failure: Failure, tls: ConsulTLS, url: str) -> str | None:
    """
    What a failed request to the agent says about TLS, if anything.

    :param failure: the request's failure.
    :param tls: the TLS files in use.
    :param url: the agent's URL (``--consul``).
    :return: ``"TLS: ..."``, naming the problem and the option to fix, or
        ``None`` when the failure is not about TLS.
    """
    if failure.value is None:
        return None
    for error in _errors(failure.value):
        if type(error).__name__ == "VerificationError":
            # service_identity: the certificate is good, but not for this name.
            return (f"TLS: the Consul agent's certificate is not for the host of {url} "
                    f"({error}); point --consul at a name or address the certificate has "
                    "(Consul's own certificates have localhost and 127.0.0.1)")
        if isinstance(error, SSL.Error):
            return advice(_reason(error), tls, url)
    return None


def advice(reason: str, tls: ConsulTLS, url: str) -> str:
    """
    An OpenSSL failure's reason (``certificate verify failed``, ``tlsv13
    alert certificate required``, ...) as a sentence that names the option
    to fix.

    :param reason: what OpenSSL (or Python's ``ssl``) said.
    :param tls: the TLS files in use.
    :param url: the agent's URL (``--consul``).
    :return: ``"TLS: ..."``.
    """
    low = reason.lower()
    if "verify failed" in low:
        trusted = f"the CA of --consul-ca={tls.ca}" if tls.ca else "the system's trust store"
        return (f"TLS: the Consul agent's certificate could not be verified against {trusted} "
                f"({reason}); give the CA that signed it (the agent's tls ca_file) with "
                "--consul-ca, and check the certificate has not expired")
    if "certificate required" in low or (tls.cert is None and (
            "handshake failure" in low or "bad certificate" in low)):
        return (f"TLS: the Consul agent requires a client certificate (verify_incoming) and "
                f"Glimpse has none ({reason}); give one signed by the agent's CA with "
                "--consul-cert and --consul-key")
    if tls.cert is not None and any(alert in low for alert in (
            "unknown ca", "bad certificate", "certificate unknown", "unsupported certificate",
            "certificate expired", "certificate revoked", "handshake failure",
            "access denied", "decrypt error")):
        return (f"TLS: the Consul agent refused the client certificate of "
                f"--consul-cert={tls.cert} ({reason}); it must be signed by the CA of the "
                "agent's tls ca_file, be valid now, and allow client authentication")
    if any(sign in low for sign in ("wrong version number", "packet length too long",
                                    "unknown protocol", "http request")):
        return (f"TLS: the Consul agent does not speak TLS at {url} ({reason}); give its "
                "HTTPS port (Consul's ports.https, often 8501), or http:// for its HTTP port")
    return (f"TLS: {reason}; check --consul-ca, --consul-cert and --consul-key against the "
            "agent's tls settings")
