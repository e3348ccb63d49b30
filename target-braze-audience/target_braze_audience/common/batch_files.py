# generated from common/batch_files.py by scripts/sync_common.py: edit the original
"""SDK BATCH messages read as a stream of records.

The reference is the SDK's ``Sink.process_batch_files`` (same manifest URLs, encodings,
``StorageTarget``), replaced here because it loads a whole file into one list (memory grows
with the file) and hands that list to ``process_batch``, which bypasses schema validation
and stream maps and, for sinks like these targets' (they handle each record as it arrives),
drops every record. Here each record is yielded one at a time and the target gives it the
same path as a RECORD message. Lines follow the input-line rule of the message reader
(input_lines.py).

Every plugin installs on its own, so each target carries a copy of this module
(scripts/sync_common.py).
"""

from __future__ import annotations

import gzip
import typing as t

from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchFileFormat, StorageTarget

from .input_lines import decode_line, is_blank

if t.TYPE_CHECKING:
    from collections.abc import Iterator


class BatchFileError(Exception):
    """A BATCH message whose files cannot be read; nothing after it is processed."""


def iter_batch_records(message: dict[str, t.Any]) -> Iterator[dict[str, t.Any]]:
    """Yield the records of a BATCH message's files, in manifest order.

    Raises:
        BatchFileError: naming the file (and line) that cannot be read or decoded.

    """
    stream = message.get("stream")
    try:
        encoding = BaseBatchFileEncoding.from_dict(message["encoding"])
        manifest = list(message["manifest"])
    except (KeyError, TypeError, ValueError) as exc:
        msg = f"BATCH message of stream '{stream}' has no valid encoding/manifest: {exc!r}"
        raise BatchFileError(msg) from exc
    if encoding.format not in {BatchFileFormat.JSONL, BatchFileFormat.PARQUET}:
        msg = f"BATCH message of stream '{stream}': unsupported format '{encoding.format}'"
        raise BatchFileError(msg)
    for url in manifest:
        where = f"BATCH file {url} (stream '{stream}')"
        head, tail = StorageTarget.split_url(url)
        try:
            with StorageTarget.from_url(head).open(tail, mode="rb") as raw:
                if encoding.format == BatchFileFormat.PARQUET:
                    yield from _parquet_records(raw, where)
                    continue
                lines = gzip.GzipFile(fileobj=raw) if encoding.compression == "gzip" else raw
                yield from _jsonl_records(lines, where)
        except (OSError, EOFError) as exc:
            msg = f"{where} cannot be read: {type(exc).__name__}: {exc}"
            raise BatchFileError(msg) from exc


def _jsonl_records(lines: t.Iterable[bytes], where: str) -> Iterator[dict[str, t.Any]]:
    """Yield the records of a JSONL file's lines, under the input-line rule (input_lines.py)."""
    for number, line in enumerate(lines, 1):
        if is_blank(line):
            continue
        try:
            record = decode_line(line)
        except ValueError as exc:
            msg = f"{where} line {number} is not JSON: {exc}"
            raise BatchFileError(msg) from exc
        if not isinstance(record, dict):
            msg = f"{where} line {number} is not a JSON object"
            raise BatchFileError(msg)
        yield record


def _parquet_records(raw: t.IO[bytes], where: str) -> Iterator[dict[str, t.Any]]:
    try:
        import pyarrow.parquet as pq  # optional, like in the SDK
    except ImportError as exc:
        msg = f"{where} is Parquet: install pyarrow to read it, or send JSONL batches"
        raise BatchFileError(msg) from exc
    for chunk in pq.ParquetFile(raw).iter_batches(batch_size=10_000):
        yield from chunk.to_pylist()
