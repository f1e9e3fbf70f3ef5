"""Options from the environment: ``MODELYARD_<OPTION>`` sets the default of ``--option``; a flag still wins.

Containers and Kubernetes configure a program by its environment, people by its flags; both work for
every option of a command that calls :func:`apply_environment` (``--cache-seconds 2`` or
``MODELYARD_CACHE_SECONDS=2``, ``--no-access-log`` or ``MODELYARD_NO_ACCESS_LOG=1``). A value that does
not convert is reported when the command runs, naming the variable.

Example::

    command = commands.add_parser("serve")
    command.add_argument("--port", type=int, default=5000)
    apply_environment(command)               # MODELYARD_PORT=8080 now sets the default
    ...
    def cmd_serve(args):
        check_environment(args)              # raises ModelyardError for MODELYARD_PORT=eighty
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

from pipeline.errors import ModelyardError

PREFIX = "MODELYARD_"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")
_PROBLEMS = "environment_problems"


def variable(action: argparse.Action, prefix: str = PREFIX) -> str:
    """The variable of an option: ``--cache-seconds`` is MODELYARD_CACHE_SECONDS."""
    return prefix + action.dest.upper()


def apply_environment(
    command: argparse.ArgumentParser, environ: Mapping[str, str] | None = None, prefix: str = PREFIX
) -> None:
    """Let ``<prefix><OPTION>`` set each option's default, and name the variable in each option's help."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    for action in command._actions:
        if not action.option_strings or action.dest in (argparse.SUPPRESS, "help"):
            continue
        name = variable(action, prefix)
        if action.help != argparse.SUPPRESS:
            action.help = f"{action.help or ''} [env {name}]".strip()
        if name not in environ:
            continue
        value = environ[name]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            if value.lower() not in _TRUE + _FALSE:
                problems.append(f"{name}={value!r}: expected one of {', '.join(_TRUE)} or {', '.join(_FALSE[:-1])}")
                continue
            action.default = (value.lower() in _TRUE) == isinstance(action, argparse._StoreTrueAction)
            continue
        flag = action.option_strings[-1]
        try:
            converted = action.type(value) if callable(action.type) else value
        except (ValueError, TypeError, argparse.ArgumentTypeError) as err:
            problems.append(f"{name}={value!r} is not a valid {flag}: {err}")
            continue
        if action.choices is not None and converted not in action.choices:
            problems.append(
                f"{name}={value!r} is not a valid {flag}: expected one of {', '.join(map(str, action.choices))}"
            )
            continue
        action.default = converted
    command.set_defaults(**{_PROBLEMS: problems})


def check_environment(args: argparse.Namespace) -> None:
    """Raise ModelyardError naming every variable whose value did not convert."""
    problems: list[str] = getattr(args, _PROBLEMS, [])
    if problems:
        raise ModelyardError("; ".join(problems))
