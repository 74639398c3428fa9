"""MORA (arXiv 2605.11679, our documented reading of its abstract): a prompt bounds which
multi-dimensional rewards its replies can reach; rewriting prompts to carry several intents
expands that region.

Flow (``prefvec mora run``), one resumable stage per module:

1. :mod:`.prompts`: prompt records from AdvBench / AlpacaEval training halves, JSONL;
2. :mod:`.generate`: N rollouts per prompt (in process or a server);
3. :mod:`.profiles`: every rollout scored on every dimension;
4. :mod:`.mining`: single-reward prompts;
5. :mod:`.fusion`: intent-fusion rewrites with an intent-preservation check;
6. :mod:`.pairs`: fresh rollouts of the rewrites → max-margin DPO pairs (JSONL);
7. :mod:`.report`: reachable region and reward diversity, before vs after.
"""

from prefvec.training.mora.config import CLI_STAGES, STAGES, MoraConfig
from prefvec.training.mora.fusion import (
    Fuser,
    LLMRewriter,
    Rewriter,
    Template,
    TemplateRewriter,
    available_templates,
    load_template,
    overlap_similarity,
)
from prefvec.training.mora.generate import (
    Generator,
    InProcessGenerator,
    ServerGenerator,
    prompt_seed,
)
from prefvec.training.mora.pipeline import MoraPipeline
from prefvec.training.mora.profiles import build_dimensions, pareto_indices, summarise
from prefvec.training.mora.prompts import PromptRecord, load_prompts
from prefvec.training.mora.report import convex_hull, polygon_area, region_metrics

__all__ = [
    "CLI_STAGES",
    "STAGES",
    "Fuser",
    "Generator",
    "InProcessGenerator",
    "LLMRewriter",
    "MoraConfig",
    "MoraPipeline",
    "PromptRecord",
    "Rewriter",
    "ServerGenerator",
    "Template",
    "TemplateRewriter",
    "available_templates",
    "build_dimensions",
    "convex_hull",
    "load_prompts",
    "load_template",
    "overlap_similarity",
    "pareto_indices",
    "polygon_area",
    "prompt_seed",
    "region_metrics",
    "summarise",
]
