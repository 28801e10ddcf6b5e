"""
The one blocking request to the Consul agent, :func:`reload_agent`, for
the file path (``glimpse provide --config-dir``), which runs once per
command outside any reactor: so ``urllib``, not the treq client.
"""

import ssl
import urllib.error
import urllib.request

from glimpse.consul._answers import ConsulTLSError, ConsulUnavailable, _error_for
from glimpse.consul._paths import TOKEN_HEADER
from glimpse.consul._tls import ConsulTLS, TLSConfigError, advice


def reload_agent(base_url: str, token: str | None = None, ca: str | None = None,
                 timeout: float = 30.0, cert: str | None = None,
                 key: str | None = None) -> None:
    """
    ``PUT /v1/agent/reload``, blocking: the agent re-reads its configuration
    (its config directories among it).  For ``glimpse provide --config-dir``,
    which runs once per command, outside any reactor: so ``urllib``, not
    :class:`ConsulClient`.

    :param base_url: e.g. ``http://127.0.0.1:8500``; ``https://`` is
        verified against ``ca`` or the system's trust store.
    :param token: the ACL token (it needs ``agent:write``), or ``None``.
    :param ca: PEM file of the CA for an ``https://`` agent, or ``None``.
    :param timeout: seconds the reload may take.
    :param cert: PEM file of the client certificate for an agent with
        ``verify_incoming``, or ``None``.
    :param key: PEM file of its private key.
    :raises TLSConfigError: when ``cert`` and ``key`` cannot be used.
    :raises ConsulTLSError: when TLS failed (the message names the option).
    :raises ConsulUnavailable: when the agent could not be asked.
    :raises ConsulError: when it answered with an error: it refused the new
        configuration and kept its old one.
    """
    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/agent/reload", data=b"", method="PUT")
    if token:
        request.add_header(TOKEN_HEADER, token)
    context = None
    if base_url.startswith("https:"):
        context = ssl.create_default_context(cafile=ca)
        if cert is not None:
            try:
                context.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as e:
                raise TLSConfigError(f"--consul-cert={cert}, --consul-key={key}: cannot use "
                                     f"them ({e})") from e
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        raise _error_for(e.code, "agent/reload", detail) from None
    except (urllib.error.URLError, OSError) as e:
        # An ssl.SSLError has a ``reason`` of its own (a word): the error
        # itself says more.
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        if isinstance(reason, ssl.SSLError):
            tls = ConsulTLS(ca=ca, cert=cert, key=key)
            raise ConsulTLSError("agent/reload", advice(str(reason), tls, base_url)) from None
        raise ConsulUnavailable("agent/reload", str(reason)) from None
