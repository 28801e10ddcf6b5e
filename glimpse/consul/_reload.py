"""
:func:`reload_agent`, the one blocking request: for ``glimpse provide
--config-dir``, which runs once per command, outside any reactor.
"""

import ssl
import urllib.error
import urllib.request

from glimpse.consul._answers import ConsulUnavailable, _error_for
from glimpse.consul._paths import TOKEN_HEADER


def reload_agent(base_url: str, token: str | None = None, ca: str | None = None,
                 timeout: float = 30.0) -> None:
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
    :raises ConsulUnavailable: when the agent could not be asked.
    :raises ConsulError: when it answered with an error: it refused the new
        configuration and kept its old one.
    """
    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/agent/reload", data=b"", method="PUT")
    if token:
        request.add_header(TOKEN_HEADER, token)
    context = ssl.create_default_context(cafile=ca) if base_url.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as e:
        detail = e.read().decode("utf-8", "replace").strip()
        raise _error_for(e.code, "agent/reload", detail) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConsulUnavailable("agent/reload", str(reason)) from None
