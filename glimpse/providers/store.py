"""
Each provider's last acknowledged state, kept on disk so that it survives
restarts.  Writes are atomic: a temporary file in the same directory,
fsync'd, renamed over the old one, and the directory fsync'd.

Beside it, a *pending* marker is written before Glimpse starts changing
Consul and removed once the new state is acknowledged (or the old one put
back): finding one on start means an apply was cut short, and the provider's
registrations must be rolled back to the acknowledged state.
"""

import json
import os
from typing import Any

from glimpse.address import label_problem


def atomic_write(path: str, data: bytes) -> None:
    """
    Replace a file so that a crash leaves either the old file or the new
    one, never a mix.

    :param path: the file.
    :param data: its new content.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ProviderStore:
    """
    ``<directory>/<provider>.json`` per provider, and
    ``<directory>/<provider>.pending`` while an apply is under way.

    :param directory: created when missing.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def _path(self, provider: str, suffix: str = ".json") -> str:
        if label_problem(provider, "provider"):
            raise ValueError(f"bad provider name {provider!r}")
        return os.path.join(self.directory, f"{provider}{suffix}")

    def save(self, provider: str, state: dict[str, Any]) -> None:
        """
        Keep ``state`` as the provider's acknowledged state.

        :param provider: the provider's name.
        :param state: a validated state.
        """
        data = json.dumps(state, sort_keys=True, indent=1).encode("utf-8")
        atomic_write(self._path(provider), data)

    def load(self, provider: str) -> dict[str, Any] | None:
        """
        The provider's acknowledged state.

        :param provider: the provider's name.
        :return: the state, or ``None`` when it has none.
        """
        try:
            with open(self._path(provider), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None

    def delete(self, provider: str) -> None:
        """
        Forget the provider's state.

        :param provider: the provider's name.
        """
        _unlink(self._path(provider))

    def mark_pending(self, provider: str, state: dict[str, Any]) -> None:
        """
        Note, durably, that ``state`` is about to be applied but is not
        acknowledged yet.

        :param provider: the provider's name.
        :param state: the state being applied.
        """
        data = json.dumps(state, sort_keys=True).encode("utf-8")
        atomic_write(self._path(provider, ".pending"), data)

    def clear_pending(self, provider: str) -> None:
        """
        The apply under way ended: Consul holds the acknowledged state.

        :param provider: the provider's name.
        """
        _unlink(self._path(provider, ".pending"))

    def pending(self) -> list[str]:
        """
        The providers with an apply that was not finished.

        :return: their names, sorted.
        """
        return sorted(name[: -len(".pending")] for name in os.listdir(self.directory)
                      if name.endswith(".pending") and not name.startswith("."))

    def providers(self) -> list[str]:
        """
        The providers with a state.

        :return: their names, sorted.
        """
        return sorted(
            name[: -len(".json")] for name in os.listdir(self.directory)
            if name.endswith(".json") and not name.startswith(".")
        )


def _unlink(path: str) -> None:
    # The directory is fsync'd too: a forgotten state that came back after
    # a power cut would be registered again on start.
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _fsync_dir(os.path.dirname(os.path.abspath(path)))
