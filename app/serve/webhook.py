"""Webhooks of watches: which URLs a watch may POST to, and delivery that never blocks or raises.

A webhook URL is http(s) only and its host goes through the server's source-host policy, the same
checks camera URLs get (server-side request forgery: loopback, private and link-local hosts are 403
unless listed in --allowed-source-hosts). Delivery runs on a small pool with a short timeout, no
redirects followed and no retries; its outcome goes to a callback (the watch counts it). Known gap, as
for cameras: the name is resolved again when the POST connects (DNS rebinding).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from longwatch.app.serve.errors import APIError
from longwatch.app.serve.security import SourcePolicy
from longwatch.ingest.uri import redact, scrub

log = logging.getLogger(__name__)
SCHEMES = ("http://", "https://")
TIMEOUT_S = 5.0
"""A POST may take this long (connect, send, answer); then it counts as failed."""
MAX_QUEUED = 64
"""Deliveries waiting at once; beyond, a firing's POST is dropped (and counted as failed)."""
Outcome = Callable[[str | None], None]
"""Called with None when delivered, else with why not (credentials removed)."""


def check_webhook(url: str, sources: SourcePolicy, param: str = "webhook") -> str:
    """`url` when a watch may POST to it; APIError 400 (not http(s)) or 403 (a refused host)."""
    text = url.strip()
    if not text.lower().startswith(SCHEMES):
        raise APIError(400, f"the webhook {redact(text)[:200]!r} is not an http:// or https:// URL",
                       "invalid_webhook", param)
    return sources.check(text, param)


class Webhooks:
    """POSTs JSON to webhook URLs on `workers` threads; `send` returns at once and never raises."""

    def __init__(self, timeout_s: float = TIMEOUT_S, workers: int = 2) -> None:
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serve-webhook")
        self._queued = 0
        self._lock = threading.Lock()
        self._closed = False

    def send(self, url: str, payload: dict[str, Any], outcome: Outcome) -> None:
        with self._lock:
            if self._closed or self._queued >= MAX_QUEUED:
                full = not self._closed
                accepted = False
            else:
                self._queued += 1
                accepted = True
        if not accepted:
            outcome(f"not sent: {MAX_QUEUED} deliveries already waiting" if full else "not sent: server stopping")
            return
        self._pool.submit(self._post, url, payload, outcome)

    def _post(self, url: str, payload: dict[str, Any], outcome: Outcome) -> None:
        try:
            error = None
            r = self._client.post(url, json=payload)
            if not 200 <= r.status_code < 300:
                error = f"HTTP {r.status_code}" + (" (redirects are not followed)" if r.is_redirect else "")
        except httpx.TimeoutException:
            error = f"timed out after {self._client.timeout.read:g} s"
        except Exception as e:  # refused, unresolvable, closed: counted, never raised
            error = scrub(f"{type(e).__name__}: {e}", url)
        finally:
            with self._lock:
                self._queued -= 1
        if error:
            log.warning("webhook %s: %s", redact(url), error)
        try:
            outcome(error)
        except Exception:
            log.exception("webhook outcome callback failed")

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._client.close()
