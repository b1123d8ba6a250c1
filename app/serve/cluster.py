"""Scale-out on Ray: connect to (or start) a cluster, run one worker actor per GPU or node, place and route streams.

Ray runs the workers as stateful actors (app/serve/ray_worker.py), puts each on its own GPU (num_gpus)
or CPUs (num_cpus) and spread over the nodes, and restarts one that dies (max_restarts); the worker then
reopens its streams from serve.memory_dir. Placement of streams is ours: Ray's resources are fixed per
node and reserved by whole actors, while a stream is a few threads inside one, so each worker reports
its free stream slots and device budget (ServeWorker.metrics) and a new stream goes to the worker with
the most room.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from longwatch.app.config import Config
from longwatch.app.serve.errors import APIError
from longwatch.app.serve.ray_worker import ServeWorker

log = logging.getLogger(__name__)
INSTALL = 'Ray is not installed: pip install "longwatch[ray]" (or pip install "ray>=2.40")'
READY_TIMEOUT_S = 600.0
"""Longest wait for the workers to load their models at start (a large checkpoint from disk takes minutes)."""


class ClusterError(RuntimeError):
    """The cluster cannot be used (Ray missing, address unreachable, no room for the workers): one line, exit 2."""

    user_facing = True


class WorkerDown(RuntimeError):
    """A worker does not answer (dead, or being restarted by Ray): the request is retryable (503)."""


def import_ray() -> Any:
    """The ray module, usage statistics off; ClusterError saying how to install it when missing."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL) from None
    return ray


def probe(address: str, timeout: float) -> None:
    """ClusterError within `timeout` when nothing listens at a cluster address (HOST:PORT or ray://HOST:PORT):
    Ray's own connect retries for minutes."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port or (10001 if address.startswith("ray://") else 6379)
    except ValueError:
        raise ClusterError(f"--ray {address}: not an address (HOST:PORT or ray://HOST:PORT)") from None
    if not host:
        raise ClusterError(f"--ray {address}: not an address (HOST:PORT or ray://HOST:PORT)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"--ray {address}: no Ray cluster answers at {host}:{port} "
                           f"({getattr(e, 'strerror', None) or e}); start one with `ray start --head`") from None


def connect(cfg: Config) -> tuple[Any, bool]:
    """ray, initialised for `cfg.serve.ray`, and whether this process started the cluster (then it stops it).

    "auto" joins $RAY_ADDRESS when it is set (Ray's own convention) and otherwise starts a private cluster
    of this machine bound to 127.0.0.1: Ray would bind a local cluster to the machine's network address
    unless told that it is single-machine (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, read when ray is imported;
    the name is Ray's, the effect is loopback-only on Linux too). An address joins that cluster, within
    serve.ray_connect_timeout_s or one line saying nothing answers there."""
    s = cfg.serve
    address = os.environ.get("RAY_ADDRESS", "") if s.ray == "auto" else s.ray
    if not address:
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        probe(address, s.ray_connect_timeout_s)
        try:
            ray.init(address=address, **quiet)
        except Exception as e:  # Ray raises ConnectionError, RuntimeError or its own errors here
            raise ClusterError(f"--ray {address}: cannot join the cluster: {e}") from None
        return ray, False
    need = workers_wanted(cfg, gpus=0, nodes=1) * s.ray_worker_cpus
    ray.init(num_cpus=max(os.cpu_count() or 1, int(need + 0.999)), **quiet)
    return ray, True


def workers_wanted(cfg: Config, gpus: float, nodes: int) -> int:
    s = cfg.serve
    if s.ray_workers:
        return s.ray_workers
    return max(1, int(gpus // max(s.ray_worker_gpus, 1e-9)) if gpus else nodes)


@dataclass
class WorkerRef:
    index: int
    handle: Any
    url: str = ""
    pid: int = 0
    up: bool = True
    restarts: int = 0
    """Restarts the front door has seen (the pid changed)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class Cluster:
    """The workers of one front door: start them, find a restarted one's new address, place streams."""

    def __init__(self, cfg: Config, ray: Any, owned: bool) -> None:
        self.cfg, self.ray, self.owned = cfg, ray, owned
        self.key = secrets.token_urlsafe(24)
        """Workers accept requests with this key only: nothing but this front door reaches them."""
        s = cfg.serve
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0))
        nodes = len([n for n in ray.nodes() if n.get("Alive")])
        n = workers_wanted(cfg, gpus, nodes)
        options: dict[str, Any] = {"num_cpus": s.ray_worker_cpus, "num_gpus": s.ray_worker_gpus if gpus else 0,
                                   "max_restarts": s.ray_max_restarts, "max_task_retries": 0,
                                   "max_concurrency": 8, "scheduling_strategy": "SPREAD"}
        if gpus and cfg.model.device == "cpu":
            options["num_gpus"] = 0
        actor = ray.remote(**options)(ServeWorker)
        self.workers = [WorkerRef(i, actor.options(name=f"longwatch-worker-{i}-{self.key[:6]}").remote(i, cfg, self.key))
                        for i in range(n)]
        self.routes: dict[str, int] = {}
        """Stream id -> worker index (a stream stays on its worker; after a restart too)."""
        self.videos: dict[str, int] = {}
        """Chat video key (policy|uuid or policy|url) -> worker index."""
        self._lock = threading.Lock()
        self._next = 0
        try:
            infos = ray.get([w.handle.info.remote() for w in self.workers], timeout=READY_TIMEOUT_S)
        except Exception as e:
            self.close()
            raise ClusterError(f"the {n} Ray workers did not start ({type(e).__name__}: {str(e)[:300]}); the "
                               "cluster needs " + (f"{options['num_gpus']:g} GPU and " if options["num_gpus"] else "")
                               + f"{s.ray_worker_cpus:g} CPU per worker (--ray-workers, serve.ray_worker_cpus)") from None
        for w, info in zip(self.workers, infos):
            w.url, w.pid = info["url"], info["pid"]
        self.model = infos[0]["model"]

    def __len__(self) -> int:
        return len(self.workers)

    # ---- finding workers ------------------------------------------------------------------------

    def refresh(self, index: int, timeout: float | None = None) -> str:
        """The worker's address now (after a restart: its new port); WorkerDown when it does not answer in time."""
        w = self.workers[index]
        try:
            info = self.ray.get(w.handle.info.remote(), timeout=timeout or self.cfg.serve.ray_connect_timeout_s)
        except Exception as e:  # GetTimeoutError, ActorUnavailableError, ActorDiedError, RayActorError
            w.up = False
            raise WorkerDown(f"worker {index} does not answer ({type(e).__name__})") from None
        with w.lock:
            if info["pid"] != w.pid:
                w.restarts += 1 if w.pid else 0
                log.warning("worker %d is back (pid %d, was %d)", index, info["pid"], w.pid)
            w.url, w.pid, w.up = info["url"], info["pid"], True
        return w.url

    def url(self, index: int) -> str:
        w = self.workers[index]
        return w.url if w.up else self.refresh(index)

    def down(self, index: int) -> None:
        """A request to the worker failed in transport: find it again before the next one."""
        self.workers[index].up = False

    def metrics(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Each worker's ServeWorker.metrics, or its state when it does not answer within `timeout`."""
        refs = [w.handle.metrics.remote() for w in self.workers]
        out = []
        for w, ref in zip(self.workers, refs):
            try:
                m = self.ray.get(ref, timeout=timeout)
                with w.lock:
                    if m["pid"] != w.pid:
                        w.restarts += 1 if w.pid else 0
                        w.url, w.pid = m["url"], m["pid"]
                    w.up = True
                out.append({"state": "running", "restarts": w.restarts, **m})
            except Exception as e:  # GetTimeoutError / ActorUnavailableError: restarting; ActorDiedError: gone
                w.up = False
                gone = "Died" in type(e).__name__
                out.append({"index": w.index, "state": "dead" if gone else "restarting", "restarts": w.restarts,
                            "reason": type(e).__name__ + (" (past serve.ray_max_restarts)" if gone else "")})
        return out

    # ---- placing streams --------------------------------------------------------------------------

    def place(self, device_budget: int) -> int:
        """The worker for a new stream: the most free slots among those with the device budget left
        (serve.ray_worker_memory); APIError 429 naming the limit when none has room. When every slot is taken,
        one whose slots hold chat videos (it frees the least recently used idle one, or answers 429)."""
        s = self.cfg.serve
        live = [m for m in self.metrics() if m["state"] == "running"]
        if not live:
            raise WorkerDown("no worker answers")
        fits = [m for m in live if not s.ray_worker_memory or m["device_reserved"] + device_budget <= s.ray_worker_memory]
        free = [m for m in fits if m["held"] < m["max_streams"]]
        if not free:  # a worker whose slots hold chat videos frees an idle one (or says 429 itself)
            free = [m for m in fits if m["api_streams"] < m["max_streams"]]
        if not free:
            total = sum(m["max_streams"] for m in live)
            memory = (f" or {s.ray_worker_memory} bytes of device budget per worker (serve.ray_worker_memory)"
                      if s.ray_worker_memory else "")
            raise APIError(429, f"the cluster holds {sum(m['held'] for m in live)} streams on {len(live)} workers, "
                           f"its maximum ({s.max_streams} per worker, serve.max_streams{memory}); delete one or add "
                           "workers", "capacity_reached")
        best = max(free, key=lambda m: (m["max_streams"] - m["held"], -m["device_reserved"], -m["index"]))
        return int(best["index"])

    def any_worker(self) -> int:
        """Round robin over the workers (requests about no stream or video: none, today, but /v1/models)."""
        with self._lock:
            self._next = (self._next + 1) % len(self.workers)
            return self._next

    def close(self) -> None:
        """Stop the workers (their journals stay); stop the cluster if this process started it."""
        for w in self.workers:
            try:
                self.ray.kill(w.handle, no_restart=True)
            except Exception:  # already gone
                pass
        if self.owned:
            self.ray.shutdown()
