"""The body of a Ray worker actor: one model and the single-process API (create_api) on a port of its node.

The front door (app/serve/front.py) forwards HTTP requests to it with a key only the front door knows;
the actor's methods report where it listens and what it holds. Its streams journal under
serve.memory_dir/worker-<index>/, so a worker that Ray restarts after a crash reopens them
(StreamRegistry.restore): memory from the journal, sources reconnected, watches back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch
import uvicorn

from longwatch.app.config import Config
from longwatch.app.serve.app import create_api
from longwatch.app.serve.server import bind
from longwatch.backbone.model import Backbone

log = logging.getLogger(__name__)
START_TIMEOUT_S = 60.0


def worker_config(cfg: Config, index: int, host: str) -> Config:
    """`cfg` as one worker serves it: its node's address, a free port, its own memory folder, no page."""
    s = cfg.serve
    memory_dir = str(Path(s.memory_dir) / f"worker-{index}") if s.memory_dir else ""
    serve = dataclasses.replace(s, host=host, port=8000, ui=False, ray="", memory_dir=memory_dir, allow_no_auth=True)
    return dataclasses.replace(cfg, serve=serve)


def node_address(ray: Any) -> str:
    """The address Ray knows this node by (127.0.0.1 for the local cluster `--ray auto` starts), which the front
    door can reach; the machine's own address when Ray does not say."""
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("NodeManagerAddress"):
            return str(node["NodeManagerAddress"])
    return str(ray.util.get_node_ip_address())


class ServeWorker:
    """Ray actor body (cluster.py wraps it with ray.remote): loads the model and serves create_api's app."""

    def __init__(self, index: int, cfg: Config, key: str) -> None:
        import ray  # the optional extra: only a Ray worker process imports it here

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
        self.index = index
        self.host = node_address(ray)
        self.cfg = worker_config(cfg, index, self.host)
        self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.started = time.time()
        self.backbone = Backbone.load(self.cfg.model)
        self.app = create_api(self.cfg, self.backbone, frozenset({key}))
        sock = bind(self.host, 0)
        self.port = sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", timeout_keep_alive=30,
                                                    timeout_graceful_shutdown=3, access_log=False))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name=f"worker-{index}-http")
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"worker {index}: its HTTP server did not start")
            time.sleep(0.02)
        log.info("worker %d (pid %d%s) serves %s at %s", index, os.getpid(), ", restarted" if self.restarted else "",
                 self.backbone.name, self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def info(self) -> dict[str, Any]:
        """Where it listens and who it is (the front door calls this after a restart to find the new port)."""
        return {"index": self.index, "url": self.url, "pid": os.getpid(), "node": self.host,
                "model": self.backbone.name, "started": round(self.started, 3), "restarted": self.restarted}

    def metrics(self) -> dict[str, Any]:
        """Streams with their state, lag and tiers; slots and reserved device budget; process and GPU memory."""
        st = self.app.state.longwatch
        streams = []
        reserved = 0
        for stream in st.registry.list():
            info = stream.info()
            reserved += stream.spec.memory.device_budget
            streams.append({"id": info.id, "origin": info.origin, "state": info.state, "policy": info.policy,
                            "patches": info.patches, "encoded_up_to": info.encoded_up_to, "lag_s": info.lag_s,
                            "device_budget": stream.spec.memory.device_budget,
                            "tiers": {k: v.get("bytes", 0) for k, v in (info.memory or {}).items()}})
        gpu = None
        if torch.cuda.is_available():
            gpu = {"allocated": torch.cuda.memory_allocated(), "reserved": torch.cuda.memory_reserved(),
                   "total": torch.cuda.get_device_properties(0).total_memory, "name": torch.cuda.get_device_name(0)}
        return {**self.info(), "max_streams": self.cfg.serve.max_streams, "held": len(streams),
                "api_streams": sum(s["origin"] == "api" for s in streams), "device_reserved": reserved,
                "streams": streams, "max_lag_s": max((s["lag_s"] for s in streams), default=0.0),
                "rss": psutil.Process().memory_info().rss, "gpu": gpu}

    def stop(self) -> None:
        """Stop serving (the streams keep their journals: a new worker reopens them)."""
        self.server.should_exit = True
        self.thread.join(10)
