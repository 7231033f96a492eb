"""``--parameter-overrides``: template.yaml's parameters set for a local run, as a deploy sets them.

The flag and its syntax are SAM CLI's: ``Name=Value`` pairs (several per argument, quoted as
a shell quotes them) or ``ParameterKey=Name,ParameterValue=Value``. Every value is checked
against the template's own constraints (AllowedValues, AllowedPattern, Min/MaxValue,
Min/MaxLength, Number) before anything starts; a refusal lists what is allowed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from typing import Any

from local.stack import Template

_PAIR = re.compile(r"^[A-Za-z0-9]+=")
_LONG_FORM = re.compile(r"^ParameterKey=(?P<name>[^,]+),ParameterValue=(?P<value>.*)$", re.S)


class InvalidParameter(ValueError):
    """An override the template does not allow; the message says what it does allow."""


def _pairs(arguments: Iterable[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for argument in arguments:
        try:
            pieces = shlex.split(argument)
        except ValueError:
            pieces = [argument]
        # "A=1 B=2" in one argument is two pairs; "CapsuleScope=read write" (the shell
        # already removed its quotes) is one.
        if len(pieces) <= 1 or not all(_PAIR.match(p) or _LONG_FORM.match(p) for p in pieces):
            pieces = [argument]
        for piece in pieces:
            long_form = _LONG_FORM.match(piece)
            if long_form:
                pairs.append((long_form["name"], long_form["value"]))
            elif "=" in piece:
                name, _, value = piece.partition("=")
                pairs.append((name.strip(), value))
            else:
                raise InvalidParameter(
                    f"{piece!r} is not Name=Value (or ParameterKey=Name,ParameterValue=Value)"
                )
    return pairs


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def allowed(spec: dict[str, Any]) -> str:
    """What the template allows for a parameter, in words."""
    if "AllowedValues" in spec:
        return "one of " + ", ".join(repr(str(v)) for v in spec["AllowedValues"])
    rules = []
    if spec.get("Type") == "Number":
        rules.append("a number")
    if "MinValue" in spec:
        rules.append(f"at least {spec['MinValue']}")
    if "MaxValue" in spec:
        rules.append(f"at most {spec['MaxValue']}")
    if "MinLength" in spec:
        rules.append(f"at least {spec['MinLength']} characters")
    if "MaxLength" in spec:
        rules.append(f"at most {spec['MaxLength']} characters")
    if "AllowedPattern" in spec:
        rules.append(f"matching {spec['AllowedPattern']}")
    return ", ".join(rules) or "any string"


def _problem(spec: dict[str, Any], value: str) -> bool:
    if "AllowedValues" in spec and value not in [str(v) for v in spec["AllowedValues"]]:
        return True
    if spec.get("Type") == "Number":
        number = _number(value)
        if number is None:
            return True
        if "MinValue" in spec and number < float(spec["MinValue"]):
            return True
        if "MaxValue" in spec and number > float(spec["MaxValue"]):
            return True
    if "MinLength" in spec and len(value) < int(spec["MinLength"]):
        return True
    if "MaxLength" in spec and len(value) > int(spec["MaxLength"]):
        return True
    pattern = spec.get("AllowedPattern")
    return pattern is not None and re.fullmatch(str(pattern), value) is None


def parse_overrides(template: Template, arguments: Iterable[str]) -> dict[str, str]:
    """The overrides as {name: value}, each checked against template.yaml; InvalidParameter
    names the first that is not allowed and what is."""
    declared: dict[str, dict[str, Any]] = template.body.get("Parameters", {})
    overrides: dict[str, str] = {}
    for name, value in _pairs(arguments):
        if name not in declared:
            raise InvalidParameter(
                f"template.yaml has no parameter {name!r}; its parameters are "
                + ", ".join(sorted(declared))
            )
        spec = declared[name]
        if _problem(spec, value):
            raise InvalidParameter(f"{name}={value!r} is not allowed: {name} is {allowed(spec)}")
        overrides[name] = value
    return overrides
