"""Planted needles for the text and frame policies' retrieval tests: 50 signs among 200 captions."""

from __future__ import annotations

import numpy as np

WORDS = ("APPLE BANANA CHERRY GRAPE LEMON MANGO MELON PEACH PEAR PLUM KIWI LIME FIG DATE OLIVE ONION GARLIC PEPPER "
         "TOMATO CARROT RIVER MOUNTAIN FOREST DESERT ISLAND CASTLE BRIDGE TOWER HARBOR GARDEN TIGER ZEBRA EAGLE "
         "SHARK WHALE PANDA KOALA OTTER BISON CAMEL PIANO GUITAR VIOLIN TRUMPET DRUM ROCKET PLANET COMET GALAXY "
         "ORBIT").split()


def planted_captions(n: int = 200, seed: int = 0) -> tuple[list[int], list[str]]:
    """(the 50 slots holding a sign, every caption): each sign has its own word, so the other 49 are its decoys;
    the rest are shape captions drawn from 60."""
    rng = np.random.default_rng(seed)
    shapes = [f"a {c} {s}, {p}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "star")
              for p in ("top left", "top right", "bottom left", "bottom right", "centre")]
    slots = sorted(rng.choice(n, len(WORDS), replace=False).tolist())
    words = iter(WORDS)
    return slots, [f"a sign that says {next(words)}" if i in slots else str(rng.choice(shapes)) for i in range(n)]
