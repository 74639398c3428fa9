"""One registry of scorers: a scorer maps (prompt, output[, reference]) to a number.

Every scorer states the preference *dimension* it measures (``harmless``, ``helpful``, …), the
*range* of its scores and whether higher is better, so that compare, MORA and the evaluation
suites can orient and normalise them without knowing the scorer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prefvec.errors import ValidationError


@dataclass(frozen=True)
class ScorerInfo:
    """What a scorer measures.

    Attributes:
        name: registry name.
        dimension: the preference dimension (``harmless``, ``helpful``, ``refusal``...).
        range: (lowest, highest) score it can return.
        higher_is_better: orientation for win rates and Pareto fronts.
        needs_reference: whether ``score`` needs reference answers.
        description: one line for ``prefvec eval scorers``.
    """

    name: str
    dimension: str
    range: tuple[float, float]
    higher_is_better: bool = True
    needs_reference: bool = False
    description: str = ""


class Scorer(ABC):
    """Base class of every scorer: batch ``score`` plus ``score_one``."""

    info: ScorerInfo

    @abstractmethod
    def score(
        self,
        prompts: Sequence[str],
        outputs: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> list[float]:
        """Score ``outputs[i]`` as a reply to ``prompts[i]`` (optionally against ``references[i]``).

        Returns:
            One float per output, inside ``self.info.range``.
        """

    def check(self) -> None:  # noqa: B027 - a no-op for scorers that need nothing outside
        """Raise if the scorer cannot score now (e.g. its judge is unreachable), so callers can
        refuse before they generate what it would score."""

    def score_one(self, prompt: str, output: str, reference: str | None = None) -> float:
        """Score one output."""
        return self.score([prompt], [output], None if reference is None else [reference])[0]

    def check_lengths(
        self,
        prompts: Sequence[str],
        outputs: Sequence[str],
        references: Sequence[str | None] | None,
    ) -> None:
        """Raise ValidationError when the batch lists differ in length or a reference is missing."""
        if len(prompts) != len(outputs):
            raise ValidationError(
                f"`outputs` must have one item per prompt, got {len(outputs)} for "
                f"{len(prompts)} prompts",
                field="outputs",
            )
        if self.info.needs_reference and (references is None or len(references) != len(outputs)):
            got = None if references is None else len(references)
            raise ValidationError(
                f"`references` must have one item per output for scorer {self.info.name!r}, "
                f"got {got}",
                field="references",
            )


ScorerFactory = Callable[..., Scorer]
_REGISTRY: dict[str, ScorerFactory] = {}


def register_scorer(name: str, factory: ScorerFactory | None = None) -> Any:
    """Register a scorer factory (a Scorer subclass or a function returning one) under ``name``.

    Usable as a decorator (``@register_scorer("refusal")``) or a call. Re-registering a name
    replaces it.
    """

    def deco(f: ScorerFactory) -> ScorerFactory:
        _REGISTRY[name] = f
        return f

    return deco(factory) if factory is not None else deco


def available_scorers() -> list[str]:
    """The registered scorer names, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_scorer(name: str, **options: Any) -> Scorer:
    """Build the scorer registered as ``name`` with its options (``model=...``, ``url=...``).

    Raises:
        ValidationError: an unknown name (the message lists the known ones).
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValidationError(
            f"`scorer` must be one of {available_scorers()}, got {name!r}", field="scorer"
        )
    return _REGISTRY[name](**options)


def _load_builtin() -> None:
    """Import the built-in scorer modules (each registers itself; heavy deps load lazily)."""
    from prefvec.scoring import embedding, llm_judge, refusal, reward_model, text  # noqa: F401
