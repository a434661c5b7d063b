"""A job hash's stored form (seedq.records): what compaction keeps, packs and drops, and
that every reader gets the same record back, packed or not. On a real Redis the bytes
are checked in tests/worker/test_retention.py."""

from __future__ import annotations

import json
import zlib
from typing import Any

import pytest

from seedq.records import (
    COMPACT_DROP_FIELDS,
    COMPACT_DROP_SPEC,
    LISTPACK_VALUE_BYTES,
    PACK_DICTIONARY,
    PACKED_PREFIX,
    compacted,
    stored_spec,
    unpacked,
)

PROMPT = (
    "A slow dolly shot along a rain-soaked street at night, neon reflections in the "
    "puddles, a cyclist in a yellow raincoat passing under flickering signs, « naïve » "
    "signage, 雨の夜, steam rising from a manhole, shallow depth of field, 35mm film grain"
)
PARAMS = {
    "prompt": PROMPT,
    "input_image": "s3://a-bucket/inputs/2026-12-01/frame-00000.png",
    "duration": 5,
    "resolution": "720p",
    "generate_audio": True,
}
SPEC = {
    "id": "clip-00000",
    "fingerprint": "f" * 64,
    "est_cost": 0.384,
    "priority": 10,
    "source": "/home/someone/manifests/a-rather-long-folder-name/night.csv",
    "line": 2,
    "model": "bytedance-seedance-2-0-image-to-video",
    "params": PARAMS,
    "output_key": "night/clip-00000.mp4",
}
SENT = {**PARAMS, "input_image": "https://a-bucket.s3.eu-west-1.amazonaws.com/inputs/frame.png"}


def delivered_record() -> dict[str, str]:
    """A delivered job's hash as the pipeline leaves it (text, as the store reads it)."""
    return {
        "state": "delivered",
        "run_id": "r20261201-102002-c85787",
        "fingerprint": "f" * 64,
        "spec": json.dumps(SPEC, sort_keys=True),
        "sent_params": json.dumps(SENT, sort_keys=True),
        "output_uri": "s3://a-bucket/outputs/a-rather-long-prefix/night/clip-00000.mp4",
        "warnings": json.dumps(["duration 4.2 s, asked for 5 s", "no audio track"]),
        "last_error": "provider answered 503 Service Unavailable; retried after 2.0 s",
        "generation_id": "6bcbdf2b-ea73-482b-a796-ff9cc0deaccb",
        "sha256": "c" * 64,
        "created_at": "1796120402.3603563",
        "delivered_at": "1796120406.3976457",
        "billed_cost": "0.384",
        "billing_counted": "1",
        "result_url": "https://files.example/x.mp4?X-Amz-Signature=" + "0" * 64,
        "updated_at": "1796120406.3976545",
        "est_cost": "0.384",
    }


def as_stored(fields: dict[str, Any]) -> dict[bytes, bytes]:
    """Fields as redis-py answers a HGETALL of them."""
    return {k.encode(): v if isinstance(v, bytes) else str(v).encode() for k, v in fields.items()}


def parsed(record: dict[str, str]) -> dict[str, Any]:
    """JSON fields compared by meaning: packing writes them back compactly."""
    json_fields = ("spec", "sent_params", "warnings")
    return {k: json.loads(v) if k in json_fields else v for k, v in record.items()}


def test_compaction_drops_the_bookkeeping_and_keeps_everything_else() -> None:
    record = delivered_record()

    read_back = unpacked(as_stored(compacted(record)))

    expected = {k: v for k, v in record.items() if k not in COMPACT_DROP_FIELDS}
    expected["spec"] = json.dumps({k: v for k, v in SPEC.items() if k not in COMPACT_DROP_SPEC})
    assert parsed(read_back) == parsed(expected)
    assert json.loads(read_back["spec"])["params"]["prompt"] == PROMPT  # not ASCII-escaped


def test_every_compacted_value_fits_the_default_listpack() -> None:
    """Redis keeps a hash compact (listpack) only while every value is at most 64 bytes
    by default: the spec, the parameters sent, URLs and messages are packed."""
    record = delivered_record()
    record["spec"] = json.dumps({**SPEC, "params": {**PARAMS, "prompt": PROMPT * 20}})

    stored = compacted(record)

    too_long = {k: len(v) for k, v in stored.items() if len(v) > LISTPACK_VALUE_BYTES}
    assert not too_long, too_long
    assert sum(1 for k in stored if k.startswith(PACKED_PREFIX)) > 1
    assert json.loads(unpacked(as_stored(stored))["spec"])["params"]["prompt"] == PROMPT * 20


def test_a_field_written_after_compaction_wins_over_its_packed_copy() -> None:
    """A compacted job delivered again (an audit's repair) gets a new output_uri and
    warnings in its hash; the packed ones are older."""
    stored = as_stored(compacted(delivered_record()))
    stored[b"output_uri"] = b"/elsewhere/clip-00000.mp4"
    stored[b"warnings"] = b"[]"

    record = unpacked(stored)

    assert record["output_uri"] == "/elsewhere/clip-00000.mp4" and record["warnings"] == "[]"
    assert json.loads(record["sent_params"]) == SENT


def test_a_record_that_was_never_compacted_reads_as_stored() -> None:
    record = delivered_record()
    assert unpacked(as_stored(record)) == record
    assert unpacked({}) == {}


def test_the_spec_is_registered_without_what_the_hash_holds_already() -> None:
    stored = json.loads(stored_spec(SPEC))
    assert "id" not in stored and "fingerprint" not in stored
    assert stored["est_cost"] == 0.384 and stored["priority"] == 10  # read from the spec


@pytest.mark.parametrize("text", ["not json", '"a json string"', "12", "null", ""])
def test_a_packed_text_comes_back_exactly(text: str) -> None:
    stored = as_stored(compacted({"state": "delivered", "error": text}))
    assert unpacked(stored)["error"] == text


def test_a_packed_json_list_or_object_comes_back_equal() -> None:
    warnings = '["a", {"b": 1.5e-07}, "naïve"]'
    stored = as_stored(compacted({"state": "delivered", "warnings": warnings}))
    assert json.loads(unpacked(stored)["warnings"]) == json.loads(warnings)


def test_the_pack_dictionary_is_frozen() -> None:
    """Every packed record in a Redis needs these very bytes to be read again: a new
    dictionary goes beside this one, it never replaces it."""
    assert zlib.adler32(PACK_DICTIONARY) == 0xCCCED8D2
