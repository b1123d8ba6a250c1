"""Persistence: a per-stream journal of block files so memory survives restarts and crashes.

With `memory_dir`, every block is written when it is created or compressed (atomic file, then a
journal line), and every drop, tier move and re-base is a journal line. Loading replays the
journal: a block whose file is missing, short or fails its CRC32 is skipped with a warning, and a
torn last journal line is ignored, so a crash loses at most the block being written. `save`
writes a fresh, compact journal of the current state (also used to compact a long journal).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path

import torch

from longwatch.memory.block import DEVICE, DISK, HOST, MEMORY, Block
from longwatch.memory.blockfiles import BlockFiles, FileRef, TornBlock, ref_from_dict, ref_to_dict

log = logging.getLogger(__name__)
VERSION = 1
_TENSOR_FIELDS = ("summary", "scores", "kept")


class IncompatibleMemory(ValueError):
    user_facing = True


def _block_meta(block: Block) -> dict:
    d = {f.name: getattr(block, f.name) for f in dataclasses.fields(Block) if f.name not in _TENSOR_FIELDS}
    d["grid"] = list(block.grid)
    return d


def _state(stream) -> dict:
    return {"next_position": stream.next_position, "base": stream.base, "next_id": stream.next_id,
            "tick": stream.tick, "patches": stream.patches, "t_last": stream.t_last, "rebases": stream.rebases,
            "evicted": stream.evicted, "size": list(stream.size) if stream.size else None}


def _header(stream) -> dict:
    d = stream.bb.dims
    return {"op": "open", "version": VERSION, "model": stream.bb.name, "policy": stream.cfg.policy,
            "dims": [d.num_layers, d.kv_heads, d.head_dim], "dtype": str(stream.bb.dtype).removeprefix("torch.")}


class Journal:
    def __init__(self, folder: str | os.PathLike, journal_name: str = "journal.jsonl", prefix: str = "") -> None:
        self.files = BlockFiles(folder, durable=True)
        self.files.journal_path = self.files.folder / journal_name
        self.prefix = prefix
        self.refs: dict[int, tuple[FileRef, int]] = {}  # block id -> (latest file, its rot_base)
        self.aux: dict[int, list[FileRef]] = {}
        self.versions: dict[int, int] = {}
        self.lines = 0

    def attach(self, stream) -> None:
        """Resume from an existing journal, or start one."""
        if self.files.journal_path.is_file():
            _replay(stream, self)
        else:
            self._write(_header(stream))

    def _write(self, record: dict) -> None:
        self.files.append_journal(record)
        self.lines += 1

    def put(self, block: Block, kv: torch.Tensor, stream) -> None:
        v = self.versions.get(block.id, -1) + 1
        name = f"{self.prefix}blk-{block.id + 1:09d}-v{v}"
        ref = self.files.write(name, kv)
        aux = {key: self.files.write(f"{name}.{key}", getattr(block, key).float().cpu())
               for key in _TENSOR_FIELDS if getattr(block, key) is not None}
        record = {"op": "put", "id": block.id, "block": _block_meta(block), "kv": ref_to_dict(ref),
                  "state": _state(stream), **{k: ref_to_dict(r) for k, r in aux.items()}}
        self._write(record)
        self._forget(block.id)
        self.refs[block.id] = (ref, block.rot_base)
        self.aux[block.id] = list(aux.values())
        self.versions[block.id] = v

    def _forget(self, block_id: int) -> None:
        old = self.refs.pop(block_id, None)
        for ref in ([old[0]] if old else []) + self.aux.pop(block_id, []):
            self.files.delete(ref)

    def drop(self, block: Block) -> None:
        self._write({"op": "drop", "id": block.id})
        self._forget(block.id)

    def tier(self, block: Block) -> None:
        self._write({"op": "tier", "id": block.id, "tier": block.tier})

    def rebase(self, stream) -> None:
        self._write({"op": "rebase", "state": _state(stream)})

    def ref_for(self, block: Block) -> FileRef | None:
        """The journal's file of `block` for the disk tier to adopt; sets block.rot_base to match it."""
        got = self.refs.get(block.id)
        if got is None:
            return None
        block.rot_base = got[1]
        return got[0]

    def close(self, stream) -> None:
        self._write({"op": "close", "state": _state(stream)})
        if self.lines > 1000 + 4 * len(self.refs):
            snapshot(stream, self.files.folder)


def snapshot(stream, folder: str | os.PathLike) -> None:
    """Write the stream's whole memory to `folder` as a fresh journal (atomic swap of journal.jsonl).

    Saving into the stream's own memory_dir compacts its journal: new files are written under a
    fresh name prefix, the journal is swapped atomically, then the old files are deleted.
    """
    folder = Path(folder)
    own = stream.journal is not None and Path(stream.journal.files.folder).resolve() == folder.resolve()
    gen = f"g{time.time_ns()}-"
    fresh = Journal(folder, journal_name=f"journal.{gen}tmp", prefix=gen)
    fresh._write(_header(stream))
    for block in sorted(stream.blocks.values(), key=lambda b: b.id):
        if block.tier == DEVICE:
            kv, copy = stream.region.read(block), dataclasses.replace(block, rot_base=stream.base)
        elif block.tier == HOST:
            kv, copy = stream.host.get(block.id), block
        elif block.tier == MEMORY:
            kv, copy = stream.memstore[block.id], block
        else:
            kv, copy = stream.disk.get(block.id), block
        fresh.put(copy, kv, stream)
        if block.tier != DEVICE:
            fresh.tier(block)
    fresh._write({"op": "close", "state": _state(stream)})
    os.replace(fresh.files.journal_path, folder / "journal.jsonl")
    if not own:
        return
    old = stream.journal
    for bid in list(old.refs):
        old._forget(bid)
    fresh.files.journal_path = folder / "journal.jsonl"
    stream.journal = fresh
    if stream.disk is not None:
        stream.disk.files = fresh.files
        for bid in stream.disk.ids():
            stream.disk._refs[bid] = fresh.refs[bid][0]


def _replay(stream, journal: Journal) -> None:
    """Rebuild `stream` from its journal; torn blocks are skipped with a warning."""
    records = journal.files.read_journal()
    if not records or records[0].get("op") != "open":
        raise IncompatibleMemory(f"{journal.files.journal_path}: not a longwatch memory journal")
    head = records[0]
    want = _header(stream)
    for key in ("dims", "dtype", "policy"):
        if head.get(key) != want[key]:
            raise IncompatibleMemory(f"memory dir {journal.files.folder} was written with {key}={head.get(key)}, "
                                     f"this stream has {key}={want[key]}")
    puts: dict[int, dict] = {}
    tiers: dict[int, str] = {}
    state: dict = {}
    for r in records[1:]:
        op = r.get("op")
        if op == "put":
            puts[r["id"]] = r
            tiers.pop(r["id"], None)
            state = r.get("state", state)
        elif op == "drop":
            puts.pop(r["id"], None)
            tiers.pop(r["id"], None)
        elif op == "tier":
            tiers[r["id"]] = r["tier"]
        elif op in ("rebase", "close"):
            state = r.get("state", state)
    for key in ("next_position", "base", "next_id", "tick", "patches", "t_last", "rebases", "evicted"):
        if key in state:
            setattr(stream, key, state[key])
    if state.get("size"):
        stream._plan(tuple(state["size"]))
    skipped = 0
    for bid in sorted(puts):
        r = puts[bid]
        meta = dict(r["block"])
        meta["grid"] = tuple(meta["grid"])
        block = Block(**meta)
        ref = ref_from_dict(r["kv"])
        try:
            kv = journal.files.read(ref)
            aux = {key: ref_from_dict(r[key]) for key in _TENSOR_FIELDS if r.get(key)}
            for key, aref in aux.items():
                value = journal.files.read(aref).clone()
                setattr(block, key, value.long() if key == "kept" else value)
        except TornBlock as e:
            log.warning("memory %s: block %d is torn (%s); skipped", journal.files.folder, bid, e)
            skipped += 1
            continue
        journal.refs[bid] = (ref, block.rot_base)
        journal.aux[bid] = list(aux.values())
        journal.versions[bid] = int(ref.path.rsplit("-v", 1)[-1].split(".")[0])
        block.tier = tiers.get(bid, DEVICE)
        stream.blocks[bid] = block
        if block.tier == DEVICE:
            stream.region.append(block, stream._placed(block, kv, None))
            block.rot_base = stream.base
        elif block.tier == HOST:
            stream.host.put(bid, kv.clone())
        elif block.tier == MEMORY:
            stream.memstore[bid] = kv.to(stream.cache.device, stream.cache.dtype).clone()
        elif block.tier == DISK and stream.disk is not None:
            stream.disk.put(bid, kv, ref)
        else:
            stream.blocks.pop(bid)
            continue
        if block.tier != DEVICE and stream.index is not None and block.summary is not None:
            stream.index.add(bid, block.summary)
            block.meta["indexed"] = True
    journal.lines = len(records)
    stream.skipped_on_load = skipped
    if skipped:
        log.warning("memory %s: %d torn block(s) skipped on load", journal.files.folder, skipped)


def restore(cls, backbone, cfg, folder: str, stream_id: str = "default"):
    if not (Path(folder) / "journal.jsonl").is_file():
        raise IncompatibleMemory(f"{folder}: no saved memory (journal.jsonl missing)")
    return cls(backbone, cfg, stream_id=stream_id, memory_dir=folder)
