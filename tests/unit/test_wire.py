"""The wire contract: Avro single-object encoding, evolution both ways, interop."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
import pytest
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from hypothesis import given
from hypothesis import strategies as st

from agents_bridge.canonical import args_hash, canonical_json
from agents_bridge.codec import Codec, DecodeError, EncodeError, codec
from agents_bridge.similarity import estimate_jaccard, sketch

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EVENT = "trc.AgentEvent"


def an_event(**fields: Any) -> dict[str, Any]:
    return {
        "event_id": "e1",
        "event_type": "tool_call",
        "agent_id": "a1",
        "task_id": "t1",
        "correlation_id": "c1",
        "emitted_at": 1_700_000_000_000_000,
        "tool_name": "search",
        "prompt_tokens": 12,
        "attributes": {"framework": "langgraph"},
        **fields,
    }


def schema_json(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


class TestSingleObjectEncoding:
    def test_header_is_magic_and_the_crc64_fingerprint(self) -> None:
        data = codec.encode(EVENT, an_event())
        canonical = to_parsing_canonical_form(parse_schema(schema_json("agent_event.avsc")))
        assert data[:2] == b"\xc3\x01"
        assert data[2:10] == bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO"))

    @pytest.mark.parametrize(
        ("name", "record"),
        [
            (EVENT, an_event(duration_ms=3.5, tool_args_sketch=[1, 2, 3])),
            (
                "trc.ControlCommand",
                {
                    "command_id": "k",
                    "kind": "KILL",
                    "target_type": "task",
                    "target_id": "t1",
                    "issued_at": 5,
                },
            ),
            (
                "trc.Anomaly",
                {
                    "anomaly_id": "x",
                    "detector": "d",
                    "category": "runaway",
                    "severity": "critical",
                    "agent_id": "a",
                    "task_id": "t",
                    "correlation_id": "c",
                    "detected_at": 9,
                },
            ),
            (
                "trc.DeadLetter",
                {
                    "reason": "r",
                    "source_topic": "s",
                    "source_partition": 0,
                    "source_offset": 1,
                    "payload": b"\x00",
                    "failed_at": 2,
                },
            ),
        ],
    )
    def test_round_trip_fills_defaults(self, name: str, record: dict[str, Any]) -> None:
        decoded_name, decoded = codec.decode(codec.encode(name, record))
        assert decoded_name == name
        assert {k: decoded[k] for k in record} == record

    @pytest.mark.parametrize(
        ("data", "reason"),
        [
            (b"", "missing C3 01 header"),
            (b"\x00\x01" + b"\x00" * 20, "missing C3 01 header"),
            (b"\xc3\x01" + b"\xff" * 8 + b"\x00", "unknown schema fingerprint ffffffffffffffff"),
        ],
    )
    def test_undecodable_bytes_say_why(self, data: bytes, reason: str) -> None:
        with pytest.raises(DecodeError) as error:
            codec.decode(data)
        assert reason in error.value.reason

    def test_truncated_trailing_and_unexpected_records(self) -> None:
        data = codec.encode(EVENT, an_event())
        with pytest.raises(DecodeError, match=r"corrupt trc\.AgentEvent body"):
            codec.decode(data[:-5])
        with pytest.raises(DecodeError, match="trailing bytes"):
            codec.decode(data + b"\x00")
        with pytest.raises(DecodeError, match=r"expected a trc\.ControlCommand record"):
            codec.decode(data, expect="trc.ControlCommand")

    def test_a_record_that_does_not_fit_names_the_problem(self) -> None:
        with pytest.raises(EncodeError, match=r"trc\.AgentEvent"):
            codec.encode(EVENT, {"event_id": "only this"})
        with pytest.raises(EncodeError):
            codec.encode(EVENT, an_event(prompt_tokens="many"))

    @given(
        ids=st.tuples(*[st.text(min_size=1, max_size=30)] * 4),
        tokens=st.integers(min_value=0, max_value=2**31 - 1),
        duration=st.none() | st.floats(allow_nan=False, allow_infinity=False),
        attributes=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
    )
    def test_any_event_round_trips(
        self, ids: tuple[str, ...], tokens: int, duration: float | None, attributes: dict[str, str]
    ) -> None:
        event = an_event(
            event_id=ids[0],
            agent_id=ids[1],
            task_id=ids[2],
            correlation_id=ids[3],
            prompt_tokens=tokens,
            duration_ms=duration,
            attributes=attributes,
        )
        _, decoded = codec.decode(codec.encode(EVENT, event))
        assert {k: decoded[k] for k in event} == event


_V1_RECORDS: dict[str, tuple[dict[str, Any], str]] = {
    EVENT: ({k: v for k, v in an_event().items() if k != "attributes"}, "event_id"),
    "trc.Anomaly": (
        {
            "anomaly_id": "x",
            "detector": "d",
            "category": "c",
            "severity": "s",
            "agent_id": "a",
            "task_id": "t",
            "correlation_id": "c",
            "detected_at": 1,
        },
        "anomaly_id",
    ),
    "trc.ControlCommand": (
        {
            "command_id": "k",
            "kind": "KILL",
            "target_type": "task",
            "target_id": "t",
            "issued_at": 1,
        },
        "command_id",
    ),
}
"""A record each historical schema (``schemas/history/*.v1``) could write."""


class TestEvolution:
    def test_new_readers_read_records_of_every_earlier_schema(self, tmp_path: Path) -> None:
        for old in sorted((SCHEMAS / "history").glob("*.avsc")):
            writer = Codec(schema_dir=_dir_with(tmp_path / old.stem, old))
            name = (
                json.loads(old.read_text())["namespace"] + "." + json.loads(old.read_text())["name"]
            )
            record, id_field = _V1_RECORDS[name]
            _, decoded = codec.decode(writer.encode(name, record))
            assert decoded[id_field] == record[id_field], old.name

    def test_old_readers_read_new_records_once_they_know_the_schema(self, tmp_path: Path) -> None:
        old = Codec(
            schema_dir=_dir_with(tmp_path / "old", SCHEMAS / "history" / "agent_event.v1.avsc")
        )
        newer = schema_json("agent_event.avsc")
        newer["fields"].append({"name": "future_field", "type": "string", "default": "x"})
        new_writer = Codec(schema_dir=_dir_with_json(tmp_path / "new", "agent_event.avsc", newer))
        data = new_writer.encode(EVENT, an_event(future_field="hello"))
        with pytest.raises(DecodeError, match="unknown schema fingerprint"):
            old.decode(data)
        old.register(newer)  # e.g. fetched by fingerprint from a registry
        _, decoded = old.decode(data)
        assert decoded["event_id"] == "e1"
        assert "future_field" not in decoded and "attributes" not in decoded


class TestInterop:
    @pytest.mark.parametrize(
        ("name", "file", "record"),
        [
            (EVENT, "agent_event.avsc", an_event(duration_ms=1.5)),
            (
                "trc.ControlCommand",
                "control_command.avsc",
                {
                    "command_id": "k",
                    "kind": "KILL",
                    "target_type": "all",
                    "target_id": "*",
                    "issued_at": 7,
                    "expires_at": 99,
                },
            ),
        ],
    )
    def test_the_apache_implementation_reads_what_fastavro_writes(
        self, name: str, file: str, record: dict[str, Any]
    ) -> None:
        body = codec.encode(name, record)[10:]
        reader = avro.io.DatumReader(avro.schema.parse((SCHEMAS / file).read_text()))
        decoded = reader.read(avro.io.BinaryDecoder(io.BytesIO(body)))
        assert {k: decoded[k] for k in record} == record


class TestArgumentsAndSimilarity:
    def test_equivalent_arguments_hash_alike(self) -> None:
        a = {"query": "Refund  policy", "limit": 5}
        assert args_hash(a) == args_hash('{"limit": 5.0, "query": "refund policy"}')
        assert canonical_json('{ "b": 1, "a": 2 }') == '{"a":2,"b":1}'
        assert args_hash({"q": "refund"}) != args_hash({"q": "refunds"})

    def test_unserialisable_arguments_are_a_clear_error(self) -> None:
        with pytest.raises(TypeError, match="JSON-serialisable"):
            canonical_json({"when": object()})

    @given(st.dictionaries(st.text(max_size=8), st.integers(), min_size=2, max_size=6))
    def test_key_order_never_matters(self, args: dict[str, int]) -> None:
        assert args_hash(dict(reversed(list(args.items())))) == args_hash(args)

    def test_rephrased_text_is_similar_and_other_text_is_not(self) -> None:
        a = sketch("refund policy for damaged items")
        assert estimate_jaccard(a, sketch("Damaged items: refund policy")) >= 0.8
        assert estimate_jaccard(a, sketch("weather in Oslo tomorrow")) == 0.0


def _dir_with(directory: Path, schema: Path) -> Path:
    """A schema directory holding only ``schema``, as the current version."""
    return _dir_with_json(directory, schema.name.replace(".v1", ""), json.loads(schema.read_text()))


def _dir_with_json(directory: Path, file_name: str, schema: dict[str, Any]) -> Path:
    directory.mkdir()
    (directory / file_name).write_text(json.dumps(schema))
    return directory
