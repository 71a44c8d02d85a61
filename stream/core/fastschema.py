"""Typed msgspec decoders built from the input JSON Schemas: the fast path for valid input.

A valid input event through ``orjson.loads`` and fastjsonschema's generated checks cost 5–10 µs, most of it the
checks in Python (an ``anyOf`` tries its branches by raising and catching exceptions). msgspec decodes the same
bytes into a struct and checks every constraint in C while it parses. The structs are derived from the schema files
themselves (:func:`fast_decoder`), so ``schemas/`` stays the one statement of what is valid.

The fast path only ever accepts: whatever it does not accept goes to the slow path (``orjson`` and fastjsonschema),
which decides, and words the dead letter's reason and detail as before. So the fast path must accept nothing that
the slow path rejects (``tests/core/test_fastschema.py`` compares the two on generated documents); where msgspec
differs (an integer of more than 64 bits, a lone surrogate escape, the values of fields the schema does not name)
it errs on the side of refusing.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

# The keywords the translation understands; a schema using any other one gets no fast path (see ``fast_decoder``).
_KNOWN = {"type", "minLength", "maxLength", "pattern", "enum", "minimum", "maximum", "anyOf", "description"}
_TOP_KNOWN = {"$schema", "$id", "title", "description", "type", "properties", "required", "additionalProperties",
              "dependencies"}
# fastjsonschema anchors an unescaped ``$`` at the very end (``\Z``): Python's ``$`` also matches before a final
# newline, which the schema does not allow.
_DOLLAR = re.compile(r"(?<!\\)\$")


class SchemaNotSupported(ValueError):
    """A schema uses a keyword or form the translation does not know: that kind has no fast path."""


class FastDecoder:
    """Decodes one kind's valid input into a dict of its fields, or returns None (the slow path decides).

    Args:
        schema: the kind's JSON Schema (an object with ``properties``, ``required`` and ``dependencies``).
    """

    def __init__(self, schema: Mapping[str, Any]) -> None:
        unknown = set(schema) - _TOP_KNOWN
        if unknown or schema.get("type") != "object":
            raise SchemaNotSupported(f"top-level keywords {sorted(unknown)} or a type other than object")
        required = set(schema.get("required", ()))
        fields: list[Any] = []
        for name, rule in schema["properties"].items():
            kind = _field_type(name, rule)
            # An absent optional field is None, which its type does not admit: a JSON null is refused, as the
            # schemas refuse it, and absent and None stay one (as ``dict.get`` gives them to the slow path).
            fields.append((name, kind) if name in required else (name, kind, None))
        missing = required - set(schema["properties"])
        if missing:
            raise SchemaNotSupported(f"required fields without a rule: {sorted(missing)}")
        # Required fields first: a struct's fields without a default must precede those with one.
        fields.sort(key=lambda field: len(field) == 3)
        self._names = tuple(field[0] for field in fields)
        dependencies = schema.get("dependencies", {})
        named = set(self._names)
        if any(not isinstance(needs, list) or name not in named or not set(needs) <= named
               for name, needs in dependencies.items()):
            raise SchemaNotSupported("dependencies other than lists of the schema's own property names")
        self._dependencies = [(name, tuple(needs)) for name, needs in dependencies.items()]
        # Unknown fields are refused even where the schema allows them: msgspec skips an unknown field's value
        # without checking it as orjson does (a number of 1e400, an integer past 64 bits), so such input goes to
        # the slow path, which decides.
        struct = msgspec.defstruct("Input", fields, forbid_unknown_fields=True)
        self._decoder = msgspec.json.Decoder(struct)

    def decode(self, raw: bytes) -> dict[str, Any] | None:
        """The document's fields (None: absent), or None when msgspec does not accept it."""
        try:
            doc = dict(zip(self._names, msgspec.structs.astuple(self._decoder.decode(raw)), strict=True))
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        for name, needs in self._dependencies:
            if doc[name] is not None and any(doc[need] is None for need in needs):
                return None
        return doc


def fast_decoder(schema: Mapping[str, Any]) -> FastDecoder | None:
    """A fast decoder for the schema, or None when it uses something the translation does not know."""
    try:
        return FastDecoder(schema)
    except SchemaNotSupported:
        return None


def _field_type(name: str, rule: Mapping[str, Any]) -> Any:
    """The msgspec type of one property's rule."""
    unknown = set(rule) - _KNOWN
    if unknown:
        raise SchemaNotSupported(f"{name}: keywords {sorted(unknown)}")
    if "anyOf" in rule:
        if set(rule) - {"anyOf", "description"}:
            raise SchemaNotSupported(f"{name}: anyOf beside other constraints")
        branches = [_field_type(name, branch) for branch in rule["anyOf"]]
        return functools.reduce(operator.or_, branches)
    kind = rule.get("type")
    if kind == "string":
        _only(name, rule, {"type", "minLength", "maxLength", "pattern", "enum", "description"})
        if "enum" in rule:
            if set(rule) - {"type", "enum", "description"} or not all(isinstance(v, str) for v in rule["enum"]):
                raise SchemaNotSupported(f"{name}: an enum with other constraints or values other than strings")
            return Literal[tuple(rule["enum"])]
        pattern = rule.get("pattern")
        return Annotated[str, Meta(min_length=rule.get("minLength"), max_length=rule.get("maxLength"),
                                   pattern=None if pattern is None else _DOLLAR.sub(r"\\Z", pattern))]
    if kind == "integer":
        _only(name, rule, {"type", "minimum", "maximum", "description"})
        return Annotated[int, Meta(ge=rule.get("minimum"), le=rule.get("maximum"))]
    if kind == "number":
        _only(name, rule, {"type", "minimum", "maximum", "description"})
        # Both, so that an integer stays an int (a float would round one above 2**53).
        bounds = Meta(ge=rule.get("minimum"), le=rule.get("maximum"))
        return Annotated[int, bounds] | Annotated[float, bounds]
    raise SchemaNotSupported(f"{name}: type {kind!r}")


def _only(name: str, rule: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(rule) - allowed
    if extra:
        raise SchemaNotSupported(f"{name}: {sorted(extra)} on a {rule.get('type')}")
