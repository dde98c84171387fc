"""The tamper-evident audit trail: a hash-chained JSON-lines file and its verifier.

Each line is one record whose ``hash`` is the SHA-256 of its canonical JSON without
``hash``, and whose ``prev_hash`` is the previous record's ``hash``. Editing, deleting,
reordering or truncating a record breaks the chain at that record; deleting records
from the end cannot be seen in the file alone, which is one reason to forward them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pyagent.encoders import CANONICAL
from pyagent.errors import AuditChainBroken

if TYPE_CHECKING:
    from pyagent.splunk import SplunkForwarder

GENESIS_HASH = "0" * 64
RESERVED_KEYS = frozenset({"seq", "ts", "instance", "kind", "prev_hash", "hash"})


def canonical_json(obj: object) -> bytes:
    """The bytes a record is hashed (and written) as: sorted keys, no spaces, UTF-8."""
    return CANONICAL.encode(obj).encode("utf-8")


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of the canonical JSON of ``record`` without its ``hash`` key."""
    unsealed = {key: value for key, value in record.items() if key != "hash"}
    return hashlib.sha256(canonical_json(unsealed)).hexdigest()


def seal(unsealed: Mapping[str, Any]) -> tuple[str, bytes]:
    """The hash of a record without ``hash``, and its canonical line with it, serialised once.

    Canonical JSON is the sorted keys joined by commas, so the sealed line is the unsealed
    JSON with ``"hash":...`` spliced in where its key sorts; the same bytes as
    ``canonical_json`` of the sealed record, for half the work.
    """
    before = canonical_json({k: v for k, v in unsealed.items() if k < "hash"})[1:-1]
    after = canonical_json({k: v for k, v in unsealed.items() if k > "hash"})[1:-1]
    digest = hashlib.sha256(b"{" + b",".join(p for p in (before, after) if p) + b"}").hexdigest()
    middle = b'"hash":"' + digest.encode("ascii") + b'"'
    return digest, b"{" + b",".join(p for p in (before, middle, after) if p) + b"}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def rfc3339(moment: datetime) -> str:
    """``moment`` as RFC 3339 UTC with microseconds (``2024-05-01T12:00:00.000000Z``)."""
    if moment.utcoffset() is None:
        raise ValueError(f"audit clock returned a naive datetime: {moment!r}")
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AuditRecord:
    """One durable record: its ``seq``, its ``hash``, and ``as_dict()`` for a copy of all its keys."""

    seq: int
    hash: str
    line: str

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = json.loads(self.line)
        return record


@dataclass(frozen=True)
class VerifyResult:
    """Whether a log's chain holds; ``records`` verified before any break, and where and why it broke."""

    ok: bool
    records: int
    first_bad_seq: int | None
    reason: str


@dataclass(frozen=True)
class _Break:
    seq: int
    reason: str


@dataclass(frozen=True)
class _Walk:
    records: int
    last_hash: str
    broken: _Break | None


def _parse_line(raw: bytes, seq: int) -> dict[str, Any] | _Break:
    """The JSON object on a line that should hold record ``seq``, or why it does not."""
    if not raw.endswith(b"\n"):
        return _Break(seq, f"line {seq}: truncated (no trailing newline)")
    try:
        record: object = json.loads(raw)
    except ValueError:
        return _Break(seq, f"line {seq}: not valid JSON")
    if not isinstance(record, dict):
        return _Break(seq, f"line {seq}: not a JSON object")
    return record


def _seal_problem(record: Mapping[str, Any], raw: bytes) -> str | None:
    """Why ``record`` does not match its own ``hash`` or its line, or None when it does."""
    try:
        expected = record_hash(record)
    except (TypeError, ValueError):
        return "cannot be canonicalised"
    if record.get("hash") != expected:
        return "hash mismatch: the record was altered"
    if raw != canonical_json(record) + b"\n":
        return "line is not in canonical form"
    return None


def _link(record: Mapping[str, Any], raw: bytes, seq: int, prev_hash: str) -> str | _Break:
    """The hash of ``record`` when it continues the chain as record ``seq``, else where it breaks."""
    found = record.get("seq")
    if not isinstance(found, int) or isinstance(found, bool):
        return _Break(seq, f"line {seq}: record has no integer seq")
    if found != seq:
        return _Break(found, f"line {seq}: seq {found} where {seq} was expected (deleted or reordered)")
    if record.get("prev_hash") != prev_hash:
        return _Break(seq, f"line {seq}: prev_hash does not match the previous record's hash")
    problem = _seal_problem(record, raw)
    if problem is not None:
        return _Break(seq, f"line {seq}: {problem}")
    return str(record["hash"])


def _walk(path: Path) -> _Walk:
    """Follow the chain in ``path`` from the first line to the first break or the end."""
    records, prev_hash = 0, GENESIS_HASH
    with path.open("rb") as lines:
        for raw in lines:
            parsed = _parse_line(raw, records + 1)
            outcome = parsed if isinstance(parsed, _Break) else _link(parsed, raw, records + 1, prev_hash)
            if isinstance(outcome, _Break):
                return _Walk(records, prev_hash, outcome)
            records, prev_hash = records + 1, outcome
    return _Walk(records, prev_hash, None)


def verify(path: Path) -> VerifyResult:
    """Recompute the whole chain in ``path`` and name the first record that breaks it."""
    if not path.is_file():
        return VerifyResult(ok=False, records=0, first_bad_seq=None, reason=f"no audit log at {path}")
    walk = _walk(path)
    if walk.broken is not None:
        return VerifyResult(False, walk.records, walk.broken.seq, walk.broken.reason)
    return VerifyResult(ok=True, records=walk.records, first_bad_seq=None, reason="chain intact")


def _fsync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class AuditLog:
    """Appends hash-chained records to one JSON-lines file; safe to share between threads.

    ``append`` returns only once the record is on disk, so act after it returns. Opening
    a log that fails verification raises :class:`AuditChainBroken`. One writing process
    per file. ``close`` closes the file; the forwarder, if any, stays the caller's to close.
    """

    def __init__(
        self,
        path: Path,
        instance: str,
        clock: Callable[[], datetime] = utc_now,
        forwarder: SplunkForwarder | None = None,
    ) -> None:
        self.path = path
        self.instance = instance
        self._clock = clock
        self._forwarder = forwarder
        self._lock = threading.Lock()  # sealing: seq, prev_hash and the queue of lines
        self._flush_lock = threading.Lock()  # one writer at a time
        self._failure: str | None = None
        created = not path.exists()
        self._seq, self._prev_hash = self._resume(path)
        self._durable_seq = self._seq
        self._unwritten: list[bytes] = []
        self._file = path.open("ab")
        if created:
            _fsync_directory(path.parent)

    @staticmethod
    def _resume(path: Path) -> tuple[int, str]:
        """The last seq and hash in an existing, verified log (0 and the genesis hash if none)."""
        if not path.exists():
            return 0, GENESIS_HASH
        walk = _walk(path)
        if walk.broken is not None:
            raise AuditChainBroken(str(path), walk.broken.seq, walk.broken.reason)
        return walk.records, walk.last_hash

    def append(self, kind: str, fields: Mapping[str, Any]) -> AuditRecord:
        """Write one record of ``kind`` with ``fields``, durably, and hand it to the forwarder."""
        [record] = self.append_many([(kind, fields)])
        return record

    def append_many(self, entries: Sequence[tuple[str, Mapping[str, Any]]]) -> list[AuditRecord]:
        """Write one record per ``(kind, fields)``, consecutive in the chain, with one fsync."""
        for _, fields in entries:
            clash = RESERVED_KEYS.intersection(fields)
            if clash:
                raise ValueError(f"audit fields may not use reserved keys: {sorted(clash)}")
        sealed: list[tuple[dict[str, Any], bytes]] = []
        with self._lock:
            if self._failure is not None:
                raise AuditChainBroken(str(self.path), self._seq + 1, self._failure)
            for kind, fields in entries:
                record = dict(fields)
                record.update(
                    seq=self._seq + 1,
                    ts=rfc3339(self._clock()),
                    instance=self.instance,
                    kind=kind,
                    prev_hash=self._prev_hash,
                )
                record["hash"], line = seal(record)
                self._unwritten.append(line + b"\n")
                self._seq, self._prev_hash = record["seq"], record["hash"]
                sealed.append((record, line))
        if not sealed:
            return []
        self._make_durable(sealed[-1][0]["seq"])
        if self._forwarder is not None:
            for record, _ in sealed:
                self._forwarder.submit(record)
        return [AuditRecord(seq=r["seq"], hash=r["hash"], line=line.decode("utf-8")) for r, line in sealed]

    def _make_durable(self, seq: int) -> None:
        """Return once record ``seq`` is on disk (group commit).

        Whoever holds the flush lock writes every record sealed so far, in seq order, and
        fsyncs once; a caller whose record went out in someone else's batch finds it
        durable when it gets the lock. After a failed write the file's state is unknown,
        so every later append is refused.
        """
        with self._flush_lock:
            if self._failure is not None:
                raise AuditChainBroken(str(self.path), seq, self._failure)
            if self._durable_seq >= seq:
                return
            with self._lock:
                batch, self._unwritten = self._unwritten, []
                last = self._seq
            try:
                self._file.write(b"".join(batch))
                self._file.flush()
                os.fsync(self._file.fileno())
            except OSError as exc:
                first = self._durable_seq + 1
                self._failure = f"writing seq {first} to {last} failed ({exc}); reopen the log to verify it"
                raise
            self._durable_seq = last

    def close(self) -> None:
        with self._flush_lock, self._lock:
            self._file.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
