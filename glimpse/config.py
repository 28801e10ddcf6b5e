"""
The optional ``--config`` file of ``twistd glimpse``: TOML whose keys are
the long options, without the dashes::

    consul = "http://127.0.0.1:8500"
    dns-port = 8053
    http = ["tcp:8411:interface=127.0.0.1"]

The file is turned into command-line arguments placed *before* the real
ones, so that every value goes through the same parsing and validation as
on the command line, and the command line wins: a later ``--dns-port``
overrides the file's, and any ``--http`` on the command line replaces the
file's whole list.  Pure apart from reading the file.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Collection, Sequence
from typing import Any

import attrs

#: The options a config file cannot set: they are about the run itself.
NOT_IN_FILE = frozenset({"config", "help", "version"})


@attrs.define
class ConfigError(Exception):
    """
    The config file cannot be used; the message says where and what to fix.
    """

    path: str
    problem: str

    def __str__(self) -> str:
        return f"--config={self.path}: {self.problem}"


def config_path(argv: Sequence[str]) -> str | None:
    """
    The ``--config`` path given in ``argv``, or ``None``.

    Looks the way ``getopt`` will: ``--config=PATH`` or ``--config PATH``,
    the last one wins, nothing after ``--``.

    :param argv: the arguments of ``twistd glimpse``, without the command.
    """
    path = None
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("--config="):
            path = arg[len("--config="):]
        elif arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
    return path


def load_config(path: str) -> dict[str, Any]:
    """
    Read a config file.

    :raises ConfigError: when it cannot be read or is not TOML.
    :return: the decoded table.
    """
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(
            path, f"cannot read it ({e.strerror}); give the path of a TOML file") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, f"not valid TOML: {e}") from e


def _scalar(path: str, key: str, value: object) -> str:
    # A bool is an int to Python, but "dns-port = true" is surely a mistake.
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(path, f"{key} takes a string or a number, not {value!r}; "
                          f"write e.g. {key} = \"...\"")
    return str(value)


def config_arguments(
    path: str, table: dict[str, Any], parameters: Collection[str],
    flags: Collection[str] = (), repeatable: Collection[str] = (),
    types: dict[str, Callable[[str], object]] | None = None,
) -> list[str]:
    """
    The command-line arguments that say what a config table says.

    :param path: the file's path, for messages.
    :param table: the decoded TOML.
    :param parameters: names of the options that take a value.
    :param flags: names of the options that take none (``true`` gives the
        flag, ``false`` leaves it out).
    :param repeatable: names of the parameters that may be given more than
        once; the file gives those as an array (or one string).
    :param types: ``{name: coerce}`` of the parameters that take a number
        (``int``, ``float``), to name the key of a value that is none.
    :raises ConfigError: for a key that is no option, or a value of the
        wrong kind.
    :return: a list of ``--name=value`` and ``--flag`` strings.
    """
    known = (set(parameters) | set(flags)) - NOT_IN_FILE
    args = []
    for key, value in table.items():
        if key not in known:
            raise ConfigError(path, f"unknown key {key!r}; the keys are the long options: "
                              + ", ".join(sorted(known)))
        if key in flags:
            if not isinstance(value, bool):
                raise ConfigError(path, f"{key} is a switch: write {key} = true or false")
            if value:
                args.append(f"--{key}")
        elif key in repeatable:
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ConfigError(path, f"{key} takes a list of strings, "
                                  f"e.g. {key} = [\"...\"], not {value!r}")
            args.extend(f"--{key}={v}" for v in values)
        else:
            text = _scalar(path, key, value)
            coerce = (types or {}).get(key)
            if coerce is not None:
                try:
                    coerce(text)
                except ValueError:
                    raise ConfigError(path, f"{key} takes a number, e.g. {key} = 5; "
                                      f"not {value!r}") from None
            args.append(f"--{key}={text}")
    return args


def with_config(
    argv: Sequence[str], parameters: Collection[str], flags: Collection[str] = (),
    repeatable: Collection[str] = (), types: dict[str, Callable[[str], object]] | None = None,
) -> list[str]:
    """
    ``argv`` with the arguments of its ``--config`` file (if any) in front,
    less the file's repeatable options that ``argv`` gives itself.  The
    other parameters are those of :obj:`config_arguments`.

    :raises ConfigError: when the file cannot be used.
    """
    path = config_path(argv)
    if path is None:
        return list(argv)
    args = config_arguments(path, load_config(path), parameters, flags, repeatable, types)
    # The command line overrides the file: for a repeatable option that
    # means replacing the file's list, not adding to it.
    given = {name for name in repeatable
             if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv)}
    args = [a for a in args if a.split("=", 1)[0][2:] not in given]
    return args + list(argv)


def read_secret(path: str | None) -> str | None:
    """
    The token kept in a file (Consul's ACL token, the provider API's
    token), without surrounding whitespace; ``None`` when no file is given
    or it holds only whitespace.

    :raises OSError: when the file cannot be read.
    """
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        return f.read().strip() or None
