"""Sweep points of `longwatch eval --budget`: which tier budgets one run sets, and the label it is reported under."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from longwatch.memory.schema import format_bytes, parse_bytes

TIERS = ("device", "host", "disk")
CONFIG = "config"
"""The label of the point that sets no tier: every budget as the config and flags say."""
_UNITS = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10),
          ("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3))


def compact_bytes(n: int) -> str:
    """The shortest exact spelling in a unit that parse_bytes reads back (2621440: '2.5MiB', 2000000: '2MB'),
    else bytes ('1001B')."""
    spellings = []
    for unit, size in _UNITS:
        if n >= size:
            text = f"{n / size:.2f}".rstrip("0").rstrip(".")
            if parse_bytes(text + unit) == n:
                spellings.append(text + unit)
    return min(spellings, key=len) if spellings else f"{n}B"


@dataclass(frozen=True)
class Budget:
    """One sweep point: the byte budget of each tier it sets; None leaves that tier as the config says.

    Its label is its canonical spelling and parses back to it (`Budget.from_label`): a device-only point is a
    plain size ("2.5MiB", as `--budget` always took), others `tier=size` joined by `+` in tier order
    ("device=1MiB+host=1MiB"), the point that sets nothing "config".
    """

    device: int | None = None
    host: int | None = None
    disk: int | None = None

    def __post_init__(self) -> None:
        for tier in TIERS:
            value = getattr(self, tier)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{tier}: a budget is a byte count >= 0, got {value!r}")

    @classmethod
    def of(cls, value: Budget | int | None) -> Budget:
        """A sweep point from what RunOptions.budgets held before points had tiers: None or a device budget."""
        return value if isinstance(value, Budget) else cls(device=None if value is None else int(value))

    @classmethod
    def from_label(cls, label: str) -> Budget:
        """The point a label (or a `--budget` item) names; ValueError naming the item when it names none."""
        return cls() if label == CONFIG else parse_point(label)

    def tiers(self) -> dict[str, int]:
        """The tiers this point sets, as memory config fields: {"host_budget": 524288}."""
        return {f"{t}_budget": getattr(self, t) for t in TIERS if getattr(self, t) is not None}

    @property
    def device_only(self) -> bool:
        return self.device is not None and self.host is None and self.disk is None

    @property
    def label(self) -> str:
        if self.device_only:
            return compact_bytes(self.device)  # type: ignore[arg-type]
        parts = [f"{t}={compact_bytes(getattr(self, t))}" for t in TIERS if getattr(self, t) is not None]
        return "+".join(parts) or CONFIG

    def cell(self) -> str:
        """How summary.md shows the point: a device-only one as its size (the table before points had tiers)."""
        return format_bytes(self.device) if self.device_only else self.label  # type: ignore[arg-type]

    def apply(self, memory: Any, **changes: Any) -> Any:
        """`memory` (a MemoryConfig) with `changes` and the tiers this point sets; the others stay."""
        return dataclasses.replace(memory, **changes, **self.tiers())


def parse_point(item: str) -> Budget:
    """One `--budget` item: a plain size (the device budget) or `tier=size` pairs joined by `+`."""
    text = item.strip()
    if not text:
        raise ValueError("an empty item")
    if "=" not in text and "+" not in text:
        try:
            return Budget(device=parse_bytes(text))
        except ValueError as e:
            raise ValueError(f"item {item!r}: {e}") from None
    sizes: dict[str, int] = {}
    for part in text.split("+"):
        tier, eq, size = (s.strip() for s in part.partition("="))
        if not eq or not tier or not size:
            raise ValueError(f"item {item!r}: {part.strip()!r} is not tier=size (e.g. host=512KiB)")
        if tier not in TIERS:
            raise ValueError(f"item {item!r}: unknown tier {tier!r} (choose from {', '.join(TIERS)})")
        if tier in sizes:
            raise ValueError(f"item {item!r}: sets {tier} twice")
        try:
            sizes[tier] = parse_bytes(size)
        except ValueError as e:
            raise ValueError(f"item {item!r}: {e}") from None
    return Budget(**sizes)


def parse_budgets(spec: str | None) -> list[Budget]:
    """`--budget` as sweep points, in order; no spec: the one point that keeps the config's budgets."""
    if spec is None or not spec.strip():
        return [Budget()]
    points: list[Budget] = []
    for i, item in enumerate(spec.split(","), 1):
        if not item.strip():
            raise ValueError(f"item {i} of {spec!r} is empty")
        point = parse_point(item)
        if point in points:
            raise ValueError(f"item {item.strip()!r}: the same point as {points[points.index(point)].label!r}")
        points.append(point)
    return points


def row_budget(row: dict[str, Any]) -> Budget:
    """The point a result row (record, timeline row, summary row) was run at, rows from before labels included."""
    label = row.get("budget_label")
    return Budget.from_label(label) if label else Budget.of(row.get("budget"))
