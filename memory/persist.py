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

from longwatch import __version__
from longwatch.backbone.model import Backbone
from longwatch.memory.block import DEVICE, Block
from longwatch.memory.blockfiles import BlockFiles, FileRef, TornBlock, ref_from_dict, ref_to_dict
from longwatch.memory.config import MemoryConfig
from longwatch.memory.engine import Encoder
from longwatch.memory.store import BlockStore

log = logging.getLogger(__name__)
VERSION = 1
_TENSOR_FIELDS = ("summary", "scores", "kept")


class IncompatibleMemory(ValueError):
    user_facing = True


def _block_meta(block: Block) -> dict:
    d = {f.name: getattr(block, f.name) for f in dataclasses.fields(Block) if f.name not in _TENSOR_FIELDS}
    d["grid"] = list(block.grid)
    return d


def header(backbone: Backbone, cfg: MemoryConfig) -> dict:
    """The journal's first record: what a saved memory must match to be loaded (`MATCH`)."""
    d = backbone.dims
    return {"op": "open", "version": VERSION, "longwatch": __version__, "model": backbone.name,
            "policy": cfg.policy, "retrieval_keys": cfg.retrieval_keys,
            "dims": [d.num_layers, d.kv_heads, d.head_dim], "dtype": str(backbone.dtype).removeprefix("torch.")}


MATCH = ("model", "longwatch", "dims", "dtype", "policy", "retrieval_keys")
"""Header fields a saved memory must share with the stream loading it: K/V from another model (even one
with the same dimensions), another longwatch (block layout, scores), or summaries of the other
retrieval-key mode would load and answer wrongly without a word."""


class Journal:
    """The append-only record of one stream's memory (see the module docstring); the store's Recorder."""

    def __init__(self, folder: str | os.PathLike, journal_name: str = "journal.jsonl", prefix: str = "") -> None:
        self.files = BlockFiles(folder, durable=True)
        self.files.journal_path = self.files.folder / journal_name
        self.prefix = prefix
        self.refs: dict[int, tuple[FileRef, int]] = {}  # block id -> (latest file, its rot_base)
        self.aux: dict[int, dict[str, FileRef]] = {}  # block id -> its tensor fields' files
        self.versions: dict[int, int] = {}
        self.lines = 0
        self.skipped = 0
        """Torn blocks skipped when the journal was replayed."""

    def attach(self, store: BlockStore, encoder: Encoder, head: dict) -> None:
        """Resume `store` from an existing journal, or start one."""
        if self.files.journal_path.is_file():
            _replay(store, encoder, self, head)
        else:
            self.write(head)

    def write(self, record: dict) -> None:
        self.files.append_journal(record)
        self.lines += 1

    def put(self, block: Block, kv: torch.Tensor, state: dict) -> None:
        v = self.versions.get(block.id, -1) + 1
        name = f"{self.prefix}blk-{block.id + 1:09d}-v{v}"
        ref = self.files.write(name, kv)
        aux = {key: self.files.write(f"{name}.{key}", getattr(block, key).float().cpu())
               for key in _TENSOR_FIELDS if getattr(block, key) is not None}
        record = {"op": "put", "id": block.id, "block": _block_meta(block), "kv": ref_to_dict(ref),
                  "state": state, **{k: ref_to_dict(r) for k, r in aux.items()}}
        self.write(record)
        self.forget(block.id)
        self.refs[block.id] = (ref, block.rot_base)
        self.aux[block.id] = aux
        self.versions[block.id] = v

    def forget(self, block_id: int) -> None:
        """Delete the files of a block's latest version."""
        old = self.refs.pop(block_id, None)
        for ref in ([old[0]] if old else []) + list(self.aux.pop(block_id, {}).values()):
            self.files.delete(ref)

    def drop(self, block: Block) -> None:
        self.write({"op": "drop", "id": block.id})
        self.forget(block.id)

    def tier(self, block: Block) -> None:
        self.write({"op": "tier", "id": block.id, "tier": block.tier})

    def rebase(self, state: dict, pinned: dict[int, int]) -> None:
        """A re-base; `pinned`: block id -> how far its absolute position (and rot_base) moved forward."""
        self.write({"op": "rebase", "state": state, "pinned": {str(k): v for k, v in pinned.items()}})
        for bid, shift in pinned.items():
            if bid in self.refs:
                ref, rot = self.refs[bid]
                self.refs[bid] = (ref, rot + shift)

    def ref_for(self, block: Block) -> FileRef | None:
        """The journal's file of `block` for the disk tier to adopt; sets block.rot_base to match it."""
        got = self.refs.get(block.id)
        if got is None:
            return None
        block.rot_base = got[1]
        return got[0]

    def close(self, store: BlockStore, head: dict) -> None:
        """The closing record; a journal grown long is compacted (`compact`: no block file is rewritten)."""
        self.write({"op": "close", "state": store.state.as_dict()})
        if self.lines > 1000 + 4 * len(self.refs):
            self.compact(store, head)

    def compact(self, store: BlockStore, head: dict) -> None:
        """Replace the journal by one record per live block naming the files it already has (written
        beside it, then swapped atomically); the block files stay as they are."""
        state = store.state.as_dict()
        records = [head]
        for block in sorted(store.blocks.values(), key=lambda b: b.id):
            ref, rot_base = self.refs[block.id]
            meta = dict(_block_meta(block), rot_base=rot_base, tier=DEVICE)  # the file's rotation
            records.append({"op": "put", "id": block.id, "block": meta, "kv": ref_to_dict(ref), "state": state,
                            **{k: ref_to_dict(r) for k, r in self.aux.get(block.id, {}).items()}})
            if block.tier != DEVICE:
                records.append({"op": "tier", "id": block.id, "tier": block.tier})
        records.append({"op": "close", "state": state})
        self.files.replace_journal(records)
        self.lines = len(records)


def snapshot(store: BlockStore, head: dict, folder: str | os.PathLike) -> None:
    """Write the stream's whole memory to `folder` as a fresh journal (atomic swap of journal.jsonl).

    Saving into the stream's own memory_dir compacts its journal: new files are written under a
    fresh name prefix, the journal is swapped atomically, then the old files are deleted.
    """
    folder = Path(folder)
    old = store.journal
    own = isinstance(old, Journal) and Path(old.files.folder).resolve() == folder.resolve()
    gen = f"g{time.time_ns()}-"
    fresh = Journal(folder, journal_name=f"journal.{gen}tmp", prefix=gen)
    fresh.write(head)
    state = store.state.as_dict()
    for block in sorted(store.blocks.values(), key=lambda b: b.id):
        copy, kv = store.export(block)
        fresh.put(copy, kv, state)
        if block.tier != DEVICE:
            fresh.tier(block)
    fresh.write({"op": "close", "state": state})
    os.replace(fresh.files.journal_path, folder / "journal.jsonl")
    if not own:
        return
    for bid in list(old.refs):
        old.forget(bid)
    fresh.files.journal_path = folder / "journal.jsonl"
    store.rebind_journal(fresh, {bid: ref for bid, (ref, _) in fresh.refs.items()})


def _replay(store: BlockStore, encoder: Encoder, journal: Journal, want: dict) -> None:
    """Rebuild `store` from its journal; torn blocks are skipped with a warning."""
    records = journal.files.read_journal()
    if not records or records[0].get("op") != "open":
        raise IncompatibleMemory(f"{journal.files.journal_path}: not a longwatch memory journal")
    head = records[0]
    differ = [k for k in MATCH if head.get(k) != want[k]]
    if differ:
        saved = ", ".join(f"{k}={head.get(k, 'unknown')}" for k in differ)
        now = ", ".join(f"{k}={want[k]}" for k in differ)
        raise IncompatibleMemory(f"memory dir {journal.files.folder} was saved with {saved}; this stream has {now} "
                                 "(nothing was loaded or changed)")
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
            for bid, shift in r.get("pinned", {}).items():  # prefix and sinks kept their model positions
                if int(bid) in puts:
                    put = puts[int(bid)] = dict(puts[int(bid)], block=dict(puts[int(bid)]["block"]))
                    put["block"]["pos_start"] += shift
                    put["block"]["rot_base"] += shift
    store.restore_state(state)
    if state.get("size"):
        encoder.plan_for(tuple(state["size"]))
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
        journal.aux[bid] = aux
        journal.versions[bid] = int(ref.path.rsplit("-v", 1)[-1].split(".")[0])
        block.tier = tiers.get(bid, DEVICE)
        store.restore(block, kv, ref)
    journal.lines = len(records)
    journal.skipped = skipped
    if skipped:
        log.warning("memory %s: %d torn block(s) skipped on load", journal.files.folder, skipped)


def check_saved(folder: str | os.PathLike) -> None:
    """Raise IncompatibleMemory unless `folder` holds a saved memory."""
    if not (Path(folder) / "journal.jsonl").is_file():
        raise IncompatibleMemory(f"{folder}: no saved memory (journal.jsonl missing)")
