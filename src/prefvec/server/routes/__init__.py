"""One router per resource."""

from __future__ import annotations

from prefvec.server.routes import (
    compare,
    experiments,
    generation,
    health,
    models,
    recipes,
    tokenizer,
    ui,
    vectors,
)

ROUTERS = [
    health.router,
    generation.router,
    tokenizer.router,
    models.router,
    vectors.router,
    recipes.router,
    compare.router,
    experiments.router,
    ui.router,
]
