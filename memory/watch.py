"""Watches: "tell me when" a yes/no condition turns true on a stream's newest patches.

A `Watch` is checked after patches arrive. At most once per `interval_s` of stream time it scores its
condition with `MemoryStream.yes_no` (one short forward over sinks + window, not a free-form answer), so
its cost per interval is bounded whatever the stream's length. It fires when P(Yes) reaches `threshold`
after having been below it (or at the first check), and re-arms once P(Yes) falls below
`threshold - hysteresis`, so one long appearance is one alert, and the next appearance is another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from longwatch.memory.engine import Evidence, YesNo
from longwatch.memory.stream import MemoryStream


@dataclass(frozen=True)
class WatchFired:
    """A watch's condition turned true."""

    condition: str
    t: float
    """Stream time of the newest patch when it fired."""
    p_yes: float
    evidence: Evidence
    """The newest patch: its times name the frame to show."""


@dataclass
class Watch:
    """One yes/no condition on one stream; see the module docstring. Owns its firing state."""

    condition: str
    interval_s: float = 1.0
    """Stream seconds between checks (at most one forward per interval)."""
    threshold: float = 0.5
    hysteresis: float = 0.2
    checks: int = 0
    fired: int = 0
    last: YesNo | None = None
    _armed: bool = field(default=True, repr=False)
    _next_t: float = field(default=float("-inf"), repr=False)

    def __post_init__(self) -> None:
        if not self.condition or not self.condition.strip():
            raise ValueError("watch condition: empty")
        if not self.interval_s > 0:
            raise ValueError(f"watch interval_s: must be > 0, got {self.interval_s}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"watch threshold: must be in (0, 1), got {self.threshold}")
        if not 0 <= self.hysteresis < self.threshold:
            raise ValueError(f"watch hysteresis: must be in [0, threshold), got {self.hysteresis}")

    def due(self, t_last: float) -> bool:
        """True when the stream has advanced an interval since the last check."""
        return t_last >= self._next_t

    def check(self, stream: MemoryStream) -> WatchFired | None:
        """Score the condition if an interval has passed; the alert when it turns true, else None."""
        t_last = stream.stats()["t_last"]
        if not self.due(t_last):
            return None
        return self.observe(stream.yes_no(self.condition))

    def observe(self, score: YesNo) -> WatchFired | None:
        """Advance the state by one score (pure decision logic, testable without a model)."""
        self.checks += 1
        self.last = score
        self._next_t = score.t + self.interval_s - 1e-6
        if score.p_yes >= self.threshold and self._armed:
            self._armed = False
            self.fired += 1
            return WatchFired(self.condition, score.t, score.p_yes, score.evidence)
        if score.p_yes < self.threshold - self.hysteresis:
            self._armed = True
        return None
