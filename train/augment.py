"""Training-time text augmentation: the same note told differently at every step.

A model trained on one generator's notes can learn the generator: where its templates put
each fact, its fixed phrases. Re-telling both notes of a pair at random (lines and
sentences dropped or reordered, a later start, typos, case) leaves what makes them the same
patient's (its drugs, devices, values, problems) and takes away the layout to memorise, so
what is learned has a better chance to transfer to notes written another way.
"""
from __future__ import annotations

import random
import re

_SPLIT = re.compile(r"(?<=[.;:!?])\s+|\n+")
_KEYBOARD = "qwertyuiopasdfghjklzxcvbnm"


def augment(text: str, rng: random.Random, strength: float) -> str:
    """`text` re-told; `strength` in [0, 1] scales every transform (0: unchanged)."""
    if strength <= 0 or not text:
        return text
    pieces = [p for p in _SPLIT.split(text) if p and p.strip()]
    if len(pieces) > 2:
        keep = [p for p in pieces if rng.random() >= 0.25 * strength]
        pieces = keep or pieces[:1]
        if rng.random() < 0.5 * strength:  # sections in another order
            rng.shuffle(pieces)
        if rng.random() < 0.3 * strength and len(pieces) > 3:  # start further in
            pieces = pieces[rng.randrange(len(pieces) // 2):]
    words = " ".join(pieces).split(" ")
    out = []
    for w in words:
        r = rng.random()
        if r < 0.03 * strength and len(w) > 3:  # a typo
            i = rng.randrange(len(w))
            w = w[:i] + rng.choice(_KEYBOARD) + w[i + 1:]
        elif r < 0.06 * strength:
            w = w.upper() if rng.random() < 0.5 else w.lower()
        out.append(w)
    return " ".join(out)
