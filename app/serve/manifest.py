"""The streams a server holds, journaled under serve.memory_dir, so a restarted server (or Ray worker) reopens them.

`memory_dir/streams.jsonl` gets one line when an API stream starts (its id and full spec, source
credentials included: the file is the server's own, mode 0600), one when its first patch is encoded
(the wall-clock time of stream time 0, which a reopened live source continues from), and one when it is
deleted. Each stream's memory journals itself in `memory_dir/<id>/` (memory/persist.py). Chat videos
are not listed: the next request that names one encodes it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longwatch.app.schema import as_dict, replace
from longwatch.app.serve.specs import StreamSpec
from longwatch.ingest.config import IngestConfig
from longwatch.memory.blockfiles import append_record, read_records, replace_records
from longwatch.memory.config import MemoryConfig

log = logging.getLogger(__name__)
NAME = "streams.jsonl"


@dataclass(frozen=True)
class Entry:
    """One stream the manifest says is held: what reopens it."""

    id: str
    spec: StreamSpec
    created: int
    epoch0: float | None = None
    watches: tuple[dict[str, Any], ...] = ()
    """The watches' requests (POST /v1/streams/{id}/watches bodies), in creation order, by watch id."""


def spec_to_dict(spec: StreamSpec) -> dict[str, Any]:
    return {"source": spec.source, "origin": spec.origin, "name": spec.name, "key": spec.key,
            "ingest": as_dict(spec.ingest), "memory": as_dict(spec.memory)}


def spec_from_dict(d: dict[str, Any]) -> StreamSpec:
    """The spec a line recorded, validated like a config file's values (ValueError naming the key)."""
    return StreamSpec(source=d["source"], origin=d["origin"], name=d.get("name"), key=d.get("key"),
                      ingest=replace(IngestConfig(), d["ingest"]), memory=replace(MemoryConfig(), d["memory"]))


class Manifest:
    """Append-only record of the API streams held (see the module docstring); thread-safe."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / NAME
        self._lock = threading.Lock()

    def memory_dir(self, stream_id: str) -> str:
        return str(self.folder / stream_id)

    def _append(self, record: dict[str, Any]) -> None:
        with self._lock:
            new = not self.path.exists()
            append_record(self.path, record)
            if new:
                os.chmod(self.path, 0o600)  # it holds camera credentials

    def add(self, stream_id: str, spec: StreamSpec, created: int) -> None:
        self._append({"op": "create", "id": stream_id, "created": created, "spec": spec_to_dict(spec)})

    def started(self, stream_id: str, epoch0: float) -> None:
        self._append({"op": "started", "id": stream_id, "epoch0": round(epoch0, 3)})

    def watch(self, stream_id: str, watch_id: str, request: dict[str, Any]) -> None:
        self._append({"op": "watch", "id": stream_id, "watch": watch_id, "request": request})

    def unwatch(self, stream_id: str, watch_id: str) -> None:
        self._append({"op": "unwatch", "id": stream_id, "watch": watch_id})

    def remove(self, stream_id: str) -> None:
        """The stream was deleted: its line goes and so does its memory folder."""
        self._append({"op": "delete", "id": stream_id})
        shutil.rmtree(self.folder / stream_id, ignore_errors=True)

    def entries(self) -> list[Entry]:
        """The streams held, in creation order; a line that no longer validates is skipped with a warning."""
        with self._lock:
            records = read_records(self.path)
        held: dict[str, dict[str, Any]] = {}
        for r in records:
            sid = r.get("id")
            if r.get("op") == "create":
                held[sid] = {"record": r, "epoch0": None, "watches": {}}
            elif sid in held and r.get("op") == "started":
                held[sid]["epoch0"] = r.get("epoch0")
            elif sid in held and r.get("op") == "watch":
                held[sid]["watches"][r["watch"]] = r["request"]
            elif sid in held and r.get("op") == "unwatch":
                held[sid]["watches"].pop(r.get("watch"), None)
            elif r.get("op") == "delete":
                held.pop(sid, None)
        out = []
        for sid, h in held.items():
            try:
                spec = spec_from_dict(h["record"]["spec"])
            except (KeyError, TypeError, ValueError) as e:
                log.warning("%s: stream %s cannot be reopened: %s", self.path, sid, e)
                continue
            out.append(Entry(sid, spec, int(h["record"].get("created", 0)), h["epoch0"],
                             tuple({"watch": w, **req} for w, req in h["watches"].items())))
        return out

    def compact(self) -> list[Entry]:
        """Rewrite the manifest with the held streams only (done when a server opens it); returns them."""
        entries = self.entries()
        records: list[dict[str, Any]] = []
        for e in entries:
            records.append({"op": "create", "id": e.id, "created": e.created, "spec": spec_to_dict(e.spec)})
            if e.epoch0 is not None:
                records.append({"op": "started", "id": e.id, "epoch0": e.epoch0})
            for w in e.watches:
                request = {k: v for k, v in w.items() if k != "watch"}
                records.append({"op": "watch", "id": e.id, "watch": w["watch"], "request": request})
        with self._lock:
            if self.path.exists() or records:
                replace_records(self.path, records)
                os.chmod(self.path, 0o600)
        return entries
