"""The audit trail: hash chain, verifier, resume, and forwarding to a fake Splunk HEC at the wire."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from pyagent.audit import RESERVED_KEYS, AuditLog, VerifyResult, canonical_json, seal, verify
from pyagent.errors import AuditChainBroken
from pyagent.opa import free_port
from pyagent.splunk import SplunkForwarder
from tests.fakes import FakeHec

START = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
TOKEN = "11111111-2222-3333-4444-555555555555"


def step_clock(start: datetime = START) -> Callable[[], datetime]:
    """A clock that moves one millisecond per reading."""
    readings = iter(range(1_000_000))
    return lambda: start + timedelta(milliseconds=next(readings))


def write_records(path: Path, count: int, **kwargs: Any) -> None:
    with AuditLog(path, "agent-1", step_clock(), **kwargs) as log:
        for n in range(1, count + 1):
            log.append("decision", {"alert": f"alert-{n}", "level": n % 5})


def broken(records: int, seq: int, reason: str) -> VerifyResult:
    """What ``verify`` says of a log whose chain holds for ``records`` and breaks at ``seq``."""
    return VerifyResult(ok=False, records=records, first_bad_seq=seq, reason=reason)


def sha256_of_canonical(record: dict[str, Any]) -> str:
    """The documented recomputation, written out independently of the module."""
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def write_records_as_json(path: Path, written: list[dict[str, Any]]) -> None:
    """Rewrite ``path`` from records, as a careful forger would: canonical lines."""
    path.write_text(
        "".join(json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n" for r in written), "utf-8"
    )


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.jsonl"


@pytest.fixture
def five(log_path: Path) -> Path:
    """A log of five good records."""
    write_records(log_path, 5)
    return log_path


def test_chain_of_records_verifies(five: Path) -> None:
    assert VerifyResult(ok=True, records=5, first_bad_seq=None, reason="chain intact") == verify(five)


def test_record_has_documented_keys(log_path: Path) -> None:
    with AuditLog(log_path, "agent-1", step_clock()) as log:
        returned = log.append("intake", {"alert": "a1"})

    (written,) = records(log_path)
    expected = {
        "seq": 1,
        "ts": "2024-05-01T12:00:00.123456Z",
        "instance": "agent-1",
        "kind": "intake",
        "alert": "a1",
        "prev_hash": "0" * 64,
        "hash": returned.hash,
    }
    assert expected == written
    assert written == returned.as_dict()


def test_hash_is_sha256_of_canonical_record_without_hash(five: Path) -> None:
    for record in records(five):
        claimed = record.pop("hash")
        assert sha256_of_canonical(record) == claimed


@pytest.mark.parametrize(
    "unsealed",
    [
        {},
        {"a": 1},
        {"zeta": [1, {"b": "é"}], "alpha": None},
        {"seq": 3, "ts": "2026-01-01T00:00:00Z", "kind": "decision", "prev_hash": "0" * 64, "gate": 1.5},
    ],
)
def test_seal_gives_the_canonical_line_of_the_sealed_record(unsealed: dict[str, Any]) -> None:
    digest, line = seal(unsealed)
    assert hashlib.sha256(canonical_json(unsealed)).hexdigest() == digest
    assert canonical_json({**unsealed, "hash": digest}) == line


def test_first_prev_hash_is_64_zeros_and_each_links_to_the_one_before(five: Path) -> None:
    written = records(five)
    zeros = "0" * 64

    assert zeros == written[0]["prev_hash"]
    assert [r["hash"] for r in written[:-1]] == [r["prev_hash"] for r in written[1:]]


def test_reopened_log_continues_seq_and_chain(five: Path) -> None:
    last_hash = records(five)[-1]["hash"]

    with AuditLog(five, "agent-1", step_clock()) as log:
        sixth = log.append("fallback", {"reason": "policy_engine_unavailable"})

    assert (6, last_hash) == (sixth.seq, sixth.as_dict()["prev_hash"])
    assert verify(five).ok


def test_verify_names_edited_field_value(five: Path) -> None:
    text = lines(five)
    text[2] = text[2].replace(b'"alert":"alert-3"', b'"alert":"alert-X"')
    five.write_bytes(b"".join(text))

    assert broken(2, 3, "line 3: hash mismatch: the record was altered") == verify(five)


def test_verify_names_record_after_one_edited_and_rehashed(five: Path) -> None:
    """Recomputing the edited record's own hash moves the break to the next record."""
    written = records(five)
    written[2]["level"] = 0
    del written[2]["hash"]
    written[2]["hash"] = sha256_of_canonical(written[2])
    write_records_as_json(five, written)

    assert broken(3, 4, "line 4: prev_hash does not match the previous record's hash") == verify(five)


def test_verify_names_record_after_deleted_middle_record(five: Path) -> None:
    text = lines(five)
    del text[2]
    five.write_bytes(b"".join(text))

    assert broken(2, 4, "line 3: seq 4 where 3 was expected (deleted or reordered)") == verify(five)


def test_verify_names_first_misplaced_record_when_two_are_swapped(five: Path) -> None:
    text = lines(five)
    text[1], text[2] = text[2], text[1]
    five.write_bytes(b"".join(text))

    assert broken(1, 3, "line 2: seq 3 where 2 was expected (deleted or reordered)") == verify(five)


def test_verify_names_truncated_last_line(five: Path) -> None:
    five.write_bytes(five.read_bytes()[:-20])

    assert broken(4, 5, "line 5: truncated (no trailing newline)") == verify(five)


def test_verify_names_garbage_line_appended(five: Path) -> None:
    with five.open("ab") as file:
        file.write(b"garbage\n")

    assert broken(5, 6, "line 6: not valid JSON") == verify(five)


def test_verify_names_line_that_is_not_an_object(five: Path) -> None:
    with five.open("ab") as file:
        file.write(b"[1, 2]\n")

    assert broken(5, 6, "line 6: not a JSON object") == verify(five)


def test_verify_names_record_without_seq(five: Path) -> None:
    written = records(five)
    del written[1]["seq"]
    write_records_as_json(five, written)

    assert broken(1, 2, "line 2: record has no integer seq") == verify(five)


def test_verify_absent_file_is_not_ok(log_path: Path) -> None:
    expected = VerifyResult(ok=False, records=0, first_bad_seq=None, reason=f"no audit log at {log_path}")
    assert expected == verify(log_path)


def test_verify_empty_file_is_ok_with_no_records(log_path: Path) -> None:
    log_path.touch()

    assert VerifyResult(ok=True, records=0, first_bad_seq=None, reason="chain intact") == verify(log_path)


def test_opening_tampered_log_raises_chain_broken_and_appends_nothing(five: Path) -> None:
    text = lines(five)
    del text[1]
    five.write_bytes(b"".join(text))
    before = five.read_bytes()

    with pytest.raises(AuditChainBroken) as caught:
        AuditLog(five, "agent-1", step_clock())

    expected = (3, "line 2: seq 3 where 2 was expected (deleted or reordered)")
    assert expected == (caught.value.seq, caught.value.reason)
    assert before == five.read_bytes()


def test_concurrent_appends_from_8_threads_all_verify(log_path: Path) -> None:
    with AuditLog(log_path, "agent-1") as log:

        def append_50(thread: int) -> None:
            for n in range(50):
                log.append("action_step", {"thread": thread, "step": n})

        threads = [threading.Thread(target=append_50, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert VerifyResult(ok=True, records=400, first_bad_seq=None, reason="chain intact") == verify(log_path)
    assert list(range(1, 401)) == [r["seq"] for r in records(log_path)]


def test_appended_together_records_are_consecutive_and_interleave_with_no_other(log_path: Path) -> None:
    """A batch's records take consecutive seqs even while other threads append one by one."""
    with AuditLog(log_path, "agent-1") as log:

        def singles() -> None:
            for n in range(100):
                log.append("intake", {"n": n})

        thread = threading.Thread(target=singles)
        thread.start()
        batches = [log.append_many([("decision", {"b": b, "i": i}) for i in range(5)]) for b in range(20)]
        thread.join()
        assert [] == log.append_many([])

    assert VerifyResult(ok=True, records=200, first_bad_seq=None, reason="chain intact") == verify(log_path)
    for batch in batches:
        seqs = [r.seq for r in batch]
        assert list(range(seqs[0], seqs[0] + 5)) == seqs
    written = records(log_path)
    assert [(b, i) for b in range(20) for i in range(5)] == [
        (r["b"], r["i"]) for r in written if r["kind"] == "decision"
    ]


def test_a_batch_with_a_reserved_key_writes_none_of_its_records(log_path: Path) -> None:
    with AuditLog(log_path, "agent-1") as log, pytest.raises(ValueError, match="seq"):
        log.append_many([("decision", {"ok": 1}), ("decision", {"seq": 7})])

    assert not log_path.read_bytes()


@pytest.mark.parametrize("key", sorted(RESERVED_KEYS))
def test_reserved_keys_are_rejected(log_path: Path, key: str) -> None:
    with AuditLog(log_path, "agent-1") as log, pytest.raises(ValueError, match=key):
        log.append("decision", {key: "forged"})

    assert not log_path.read_bytes()


def test_naive_clock_is_rejected(log_path: Path) -> None:
    naive = datetime(2024, 5, 1)  # noqa: DTZ001 - the mistake under test
    with AuditLog(log_path, "agent-1", lambda: naive) as log, pytest.raises(ValueError, match="naive"):
        log.append("decision", {})


# --- Splunk HTTP Event Collector, faked at the wire ---


@dataclass(frozen=True)
class Counts:
    """What a forwarder says became of the records submitted to it."""

    sent: int
    failed: int
    dropped: int


def counts(forwarder: SplunkForwarder) -> Counts:
    return Counts(sent=forwarder.sent, failed=forwarder.failed, dropped=forwarder.dropped)


def unique_events(hec: FakeHec) -> list[dict[str, Any]]:
    """The audit records the collector received, once each (retries resend), in seq order."""
    by_seq = {event["event"]["seq"]: event["event"] for event in hec.events()}
    return [by_seq[seq] for seq in sorted(by_seq)]


@pytest.fixture
def hec_factory() -> Iterator[Callable[..., FakeHec]]:
    started: list[FakeHec] = []

    def start(*statuses: HTTPStatus) -> FakeHec:
        started.append(FakeHec(statuses))
        return started[-1]

    yield start
    for hec in started:
        hec.close()


@pytest.fixture
def forwarders() -> Iterator[Callable[..., SplunkForwarder]]:
    """Makes forwarders with test defaults (small backoff, fixed host) and closes them after."""
    made: list[SplunkForwarder] = []

    def make(url: str, **kwargs: Any) -> SplunkForwarder:
        kwargs = {"host": "test-host", "backoff": 0.01, "timeout": 5.0, **kwargs}
        made.append(SplunkForwarder(url, TOKEN, **kwargs))
        return made[-1]

    yield make
    for forwarder in made:
        forwarder.close(timeout=5)


def test_events_arrive_as_concatenated_json_with_documented_fields(
    log_path: Path, hec_factory: Callable[..., FakeHec], forwarders: Callable[..., SplunkForwarder]
) -> None:
    hec = hec_factory()
    forwarder = forwarders(hec.url, index="audit", batch_size=10)
    with AuditLog(log_path, "agent-1", step_clock(), forwarder) as log:
        first = log.append("decision", {"alert": "a1"})
        log.append("decision", {"alert": "a2"})
    assert forwarder.flush(timeout=5)

    expected_first = {
        "time": START.timestamp(),
        "host": "test-host",
        "source": "pyagent",
        "sourcetype": "_json",
        "index": "audit",
        "event": first.as_dict(),
    }
    assert expected_first == hec.events()[0]
    assert records(log_path) == [event["event"] for event in hec.events()]
    assert {("POST", "/services/collector/event", f"Splunk {TOKEN}")} == {
        (r.method, r.path, r.authorization) for r in hec.requests
    }
    assert not hec.requests[0].body.lstrip().startswith(b"[")
    assert Counts(sent=2, failed=0, dropped=0) == counts(forwarder)


def test_index_is_omitted_when_none(
    log_path: Path, hec_factory: Callable[..., FakeHec], forwarders: Callable[..., SplunkForwarder]
) -> None:
    hec = hec_factory()
    forwarder = forwarders(hec.url)
    with AuditLog(log_path, "agent-1", step_clock(), forwarder) as log:
        log.append("intake", {})
    assert forwarder.flush(timeout=5)

    assert "index" not in hec.events()[0]


def test_two_503s_are_retried_until_delivered(
    log_path: Path, hec_factory: Callable[..., FakeHec], forwarders: Callable[..., SplunkForwarder]
) -> None:
    hec = hec_factory(HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.SERVICE_UNAVAILABLE)
    forwarder = forwarders(hec.url, batch_size=50)
    hec.gate.clear()  # hold the first answer so all three records travel in one batch
    with AuditLog(log_path, "agent-1", step_clock(), forwarder) as log:
        log.append("decision", {"alert": "a0"})
        assert hec.arrived.wait(timeout=5)
        for n in range(1, 4):
            log.append("decision", {"alert": f"a{n}"})
    hec.gate.set()
    assert forwarder.flush(timeout=5)

    assert Counts(sent=4, failed=0, dropped=0) == counts(forwarder)
    assert records(log_path) == unique_events(hec)
    assert len(["a0 503", "a0 503", "a0 200", "a1..a3 200"]) == len(hec.requests)


def test_400_is_not_retried(
    log_path: Path, hec_factory: Callable[..., FakeHec], forwarders: Callable[..., SplunkForwarder]
) -> None:
    hec = hec_factory(HTTPStatus.BAD_REQUEST)
    forwarder = forwarders(hec.url)
    with AuditLog(log_path, "agent-1", step_clock(), forwarder) as log:
        log.append("decision", {"alert": "a1"})
    assert forwarder.flush(timeout=5)

    assert Counts(sent=0, failed=1, dropped=0) == counts(forwarder)
    assert len(["a1 400"]) == len(hec.requests)


def test_hec_down_leaves_local_log_complete_and_counts_failed(
    log_path: Path, forwarders: Callable[..., SplunkForwarder]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/services/collector/event"
    forwarder = forwarders(url, max_attempts=3, batch_size=5)

    write_records(log_path, 20, forwarder=forwarder)
    assert forwarder.flush(timeout=10)

    assert VerifyResult(ok=True, records=20, first_bad_seq=None, reason="chain intact") == verify(log_path)
    assert Counts(sent=0, failed=20, dropped=0) == counts(forwarder)


def test_full_queue_drops_records_but_not_local_writes(
    log_path: Path, hec_factory: Callable[..., FakeHec], forwarders: Callable[..., SplunkForwarder]
) -> None:
    hec = hec_factory()
    forwarder = forwarders(hec.url, queue_size=2)
    hec.gate.clear()  # the worker is stuck sending record 1 while the queue fills
    with AuditLog(log_path, "agent-1", step_clock(), forwarder) as log:
        log.append("decision", {"alert": "a1"})
        assert hec.arrived.wait(timeout=5)
        for n in range(2, 6):
            log.append("decision", {"alert": f"a{n}"})
    hec.gate.set()
    assert forwarder.flush(timeout=5)

    assert VerifyResult(ok=True, records=5, first_bad_seq=None, reason="chain intact") == verify(log_path)
    assert Counts(sent=3, failed=0, dropped=2) == counts(forwarder)
    assert records(log_path)[:3] == unique_events(hec)
