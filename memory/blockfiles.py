"""Block files on disk: raw tensor bytes, CRC32-checked, written atomically, read memory-mapped."""

from __future__ import annotations

import json
import logging
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class TornBlock(RuntimeError):
    """A block file is missing, short or fails its checksum (a crash mid-write)."""


@dataclass(frozen=True)
class FileRef:
    path: str
    """Relative to the folder."""
    nbytes: int
    crc32: int
    shape: tuple[int, ...]
    dtype: str


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlockFiles:
    """One folder per stream: blocks/<name>.kv files and an append-only journal.jsonl.

    A block file is written to a temporary name, fsynced, then renamed, so a crash leaves either
    the whole file or none; the journal line naming it is written after the rename, so a torn
    journal tail (a crash mid-line) loses at most the block being written.
    """

    def __init__(self, folder: str | Path, durable: bool = True) -> None:
        self.folder = Path(folder)
        (self.folder / "blocks").mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self.journal_path = self.folder / "journal.jsonl"

    def write(self, name: str, kv: torch.Tensor) -> FileRef:
        data = kv.detach().contiguous().cpu()
        raw = data.view(torch.uint8).numpy().reshape(-1) if data.dtype == torch.bfloat16 else \
            data.numpy().reshape(-1).view(np.uint8)
        rel = f"blocks/{name}.kv"
        path = self.folder / rel
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(memoryview(raw))
            if self.durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if self.durable:
            _fsync_dir(path.parent)
        return FileRef(rel, int(raw.nbytes), zlib.crc32(memoryview(raw)), tuple(data.shape), _dtype_name(data.dtype))

    def read(self, ref: FileRef, verify: bool = True) -> torch.Tensor:
        """Memory-mapped CPU tensor of the block; raises TornBlock if it is missing, short or corrupt."""
        path = self.folder / ref.path
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise TornBlock(f"{ref.path}: missing") from None
        if size != ref.nbytes:
            raise TornBlock(f"{ref.path}: {size} bytes on disk, expected {ref.nbytes}")
        raw = torch.from_file(str(path), shared=False, size=ref.nbytes, dtype=torch.uint8)
        if verify and zlib.crc32(raw.numpy()) != ref.crc32:
            raise TornBlock(f"{ref.path}: checksum mismatch")
        return raw.view(_DTYPES[ref.dtype]).view(ref.shape)

    def delete(self, ref: FileRef) -> None:
        try:
            (self.folder / ref.path).unlink()
        except FileNotFoundError:
            pass

    def append_journal(self, record: dict) -> None:
        append_record(self.journal_path, record, self.durable)

    def replace_journal(self, records: list[dict]) -> None:
        """Swap the journal for `records` atomically (written beside it, synced, renamed)."""
        replace_records(self.journal_path, records)

    def read_journal(self) -> list[dict]:
        """Journal records in order; a torn last line (crash mid-write) is skipped with a warning."""
        return read_records(self.journal_path)

    def reset_journal(self) -> None:
        self.journal_path.unlink(missing_ok=True)


def _line(record: dict) -> str:
    return json.dumps(record, separators=(",", ":")) + "\n"


def append_record(path: Path, record: dict, durable: bool = True) -> None:
    """Append one JSON line to a journal (synced to disk when `durable`)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(_line(record))
        if durable:
            f.flush()
            os.fsync(f.fileno())


def replace_records(path: Path, records: list[dict]) -> None:
    """Swap the journal at `path` for `records` atomically (written beside it, synced, renamed)."""
    tmp = path.with_suffix(".compact.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(_line(r) for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_records(path: Path) -> list[dict]:
    """A journal's records in order ([] if there is none); a torn line (crash mid-write) is skipped, logged."""
    if not path.is_file():
        return []
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("journal %s line %d is torn; skipped", path, i + 1)
    return records


def ref_to_dict(ref: FileRef) -> dict:
    d = asdict(ref)
    d["shape"] = list(ref.shape)
    return d


def ref_from_dict(d: dict) -> FileRef:
    return FileRef(d["path"], int(d["nbytes"]), int(d["crc32"]), tuple(d["shape"]), d["dtype"])
