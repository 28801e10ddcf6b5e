"""
The file path for providers: write a provider's state as Consul service
definitions into the local agent's config directory and reload the agent.

For hosts whose Consul agent reads a config directory (``glimpse provide
--config-dir``).  Blocking (the reload is
:func:`glimpse.consul.reload_agent`, on ``urllib``): it runs once per
command, outside any reactor.  The state is validated and mapped exactly as
the HTTP path does it (:mod:`glimpse.providers.state`), and the registrations are
marked ``Meta["glimpse-source"] = "file"`` so that the HTTP path never
touches them.
"""

import json
import os
from collections.abc import Mapping
from typing import Any

import attrs

from glimpse.address import label_problem
from glimpse.consul import (
    ConsulError,
    ConsulTLSError,
    ConsulUnavailable,
    TLSConfigError,
    reload_agent,
)
from glimpse.mapping import SOURCE_FILE
from glimpse.providers.state import Document, registrations, validate_state
from glimpse.providers.store import atomic_write

#: API field -> config-file field, for service definitions and checks.
_CONFIG_KEYS = {
    "ID": "id", "Name": "name", "Tags": "tags", "Port": "port", "Address": "address",
    "Meta": "meta", "Checks": "checks", "CheckID": "id", "HTTP": "http", "TCP": "tcp",
    "TTL": "ttl", "GRPC": "grpc", "Interval": "interval", "Timeout": "timeout",
    "DeregisterCriticalServiceAfter": "deregister_critical_service_after",
    "AliasService": "alias_service",
    "Weights": "weights", "Passing": "passing", "Warning": "warning",
}


def config_services(provider: str, state: Mapping[str, Any]) -> dict[str, list[Document]]:
    """
    A state as a Consul agent config file: ``{"services": [...]}`` with the
    same registrations as the HTTP path, in the config file's spelling.

    :param provider: the provider's name.
    :param state: a state from :func:`glimpse.providers.state.validate_state`.
    :return: the file's document.
    """
    def spell(definition: Mapping[str, Any]) -> Document:
        return {_CONFIG_KEYS[key]: [spell(c) for c in value] if key == "Checks"
                else spell(value) if key == "Weights" else value
                for key, value in definition.items()}

    regs = registrations(provider, state, source=SOURCE_FILE)
    return {"services": [spell(regs[sid]) for sid in sorted(regs)]}


@attrs.frozen
class FileResult:
    """
    What :func:`provide_to_config_dir` did.

    :ivar changed: whether the file was rewritten and the agent reloaded.
    :ivar path: the provider's file in the config directory.
    :ivar message: one line for the operator.
    """

    changed: bool
    path: str
    message: str


@attrs.define
class FileProviderError(Exception):
    """
    The state could not be put in place; nothing changed.

    :ivar message: what failed and what to do.
    :ivar unreachable: the Consul agent could not be asked to reload (rather
        than a bad provider name or directory, a failed write, or a reload
        the agent refused).
    """

    message: str
    unreachable: bool = False

    def __str__(self) -> str:
        return self.message


def provider_file(config_dir: str, provider: str) -> str:
    """
    The path of a provider's file, one per provider, so that providers never
    touch each other's files.

    :param config_dir: the agent's config directory.
    :param provider: the provider's name.
    :return: ``<config_dir>/glimpse-provider-<provider>.json``.
    :raises FileProviderError: when the name is not a DNS label.
    """
    problem = label_problem(provider, "provider name")
    if problem:
        raise FileProviderError(f"--provider={provider}: {problem}")
    return os.path.join(config_dir, f"glimpse-provider-{provider}.json")


def render(provider: str, document: object) -> bytes:
    """
    Validate a state and render its config file.

    :param provider: the provider's name.
    :param document: the decoded JSON state.
    :return: the file's content.
    :raises glimpse.providers.state.InvalidState: listing every problem.
    """
    services = config_services(provider, validate_state(document))
    return json.dumps(services, indent=1, sort_keys=True).encode("utf-8") + b"\n"


def provide_to_config_dir(provider: str, document: object, config_dir: str, consul_url: str,
                          token: str | None = None, ca: str | None = None,
                          cert: str | None = None, key: str | None = None) -> FileResult:
    """
    Make ``document`` the provider's whole state through the agent's config
    directory.  Blocking.

    Unchanged: nothing is written and the agent is not reloaded.  Otherwise
    the file is replaced atomically (temporary file in the same directory,
    fsync, rename, fsync of the directory) and the agent reloaded; if the
    reload fails the previous file (or none) is put back.

    :param provider: the provider's name (a DNS label).
    :param document: the decoded JSON state.
    :param config_dir: a directory the agent reads with ``-config-dir``.
    :param consul_url: the local agent's HTTP API.
    :param token: the ACL token for the reload, or ``None``.
    :param ca: PEM file of the CA for an ``https://`` agent.
    :param cert: PEM file of the client certificate for an agent with
        ``verify_incoming`` (with ``key``), or ``None``.
    :param key: PEM file of its private key.
    :return: a :class:`FileResult`.
    :raises glimpse.providers.state.InvalidState: for an invalid state; nothing changes.
    :raises FileProviderError: when the write or the reload fails.
    """
    path = provider_file(config_dir, provider)
    data = render(provider, document)
    if not os.path.isdir(config_dir):
        raise FileProviderError(f"--config-dir={config_dir} is not a directory; give the "
                                "directory the Consul agent reads (-config-dir)")
    try:
        with open(path, "rb") as f:
            previous = f.read()
    except FileNotFoundError:
        previous = None
    except OSError as e:
        raise FileProviderError(f"cannot read {path}: {e.strerror}") from None
    if previous == data:
        return FileResult(False, path, f"provider {provider}: unchanged, nothing to do")
    try:
        atomic_write(path, data)
    except OSError as e:
        raise FileProviderError(
            f"cannot write {path}: {e.strerror}; nothing was changed") from None
    try:
        reload_agent(consul_url, token, ca, cert=cert, key=key)
    except TLSConfigError as e:
        _restore(path, previous)
        raise FileProviderError(f"{e}; the agent was not reloaded{_put_back(path)}") from None
    except ConsulTLSError as e:
        _restore(path, previous)
        raise FileProviderError(f"TLS to the Consul agent at {consul_url} failed: {e.message}"
                                f"{_put_back(path)}", unreachable=True) from None
    except ConsulUnavailable as e:
        _restore(path, previous)
        raise FileProviderError(
            f"cannot reach the Consul agent at {consul_url} ({e.message}); is it running?"
            f"{_put_back(path)}", unreachable=True) from None
    except ConsulError as e:
        _restore(path, previous)
        raise FileProviderError(f"the Consul agent refused to reload (HTTP {e.status}): "
                                f"{e.message}{_put_back(path)}") from None
    count = len(json.loads(data)["services"])
    return FileResult(True, path, f"provider {provider}: wrote {count} registrations to "
                      f"{path} and reloaded the Consul agent")


def _put_back(path: str) -> str:
    return f"; the previous {os.path.basename(path)} was put back"


def _restore(path: str, previous: bytes | None) -> None:
    # The agent kept its old configuration when the reload failed; the
    # directory must say the same, or the next reload would pick it up.
    if previous is None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        atomic_write(path, previous)
