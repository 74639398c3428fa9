"""The refusal-preference set for the ``harmless`` vector (``prefvec data refusal``)."""

from prefvec.training.refusal.build import RefusalDataConfig, build_refusal_set
from prefvec.training.refusal.templates import RefusalTemplates, load_templates

__all__ = ["RefusalDataConfig", "RefusalTemplates", "build_refusal_set", "load_templates"]
