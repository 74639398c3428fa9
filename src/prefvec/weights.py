"""Preference weights written as text (``helpful=1,harmless=-0.5``), torch-free: the local CLI,
the client CLI and the evaluation CLI all parse them here."""

from __future__ import annotations

import math

from prefvec.errors import ValidationError


def parse_weights(text: str, flag: str = "--weights") -> dict[str, float]:
    """``"helpful=1,harmless=-0.5"`` -> ``{"helpful": 1.0, "harmless": -0.5}``.

    A name given twice has its weights summed.

    Raises:
        ValidationError: an item is not ``name=finite-number`` (the message names it).
    """
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = item.partition("=")
        try:
            w = float(value) if sep else math.nan
        except ValueError:
            w = math.nan
        if not sep or not name.strip() or not math.isfinite(w):
            raise ValidationError(
                f"`{flag}` items must be name=finite-number, got {item!r}", field=flag.lstrip("-")
            )
        out[name.strip()] = out.get(name.strip(), 0.0) + w
    return out
