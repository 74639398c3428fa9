"""HF sequence-classification reward model scorer on a tiny classifier built from a config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prefvec.errors import NotFoundError, ValidationError
from prefvec.scoring import get_scorer


@pytest.fixture(scope="module")
def tiny_rm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaForSequenceClassification

    from prefvec.testing import make_tiny_tokenizer, tiny_llama_config

    out = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(vocab_size=259, num_labels=1))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    make_tiny_tokenizer().save_pretrained(out)
    return out


def _oracle(path: Path, prompt: str, output: str) -> float:
    """The logit of the one-label head on the chat-templated text, unbatched."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}],
        tokenize=False,
    )
    ids = tok(text, add_special_tokens=False, return_tensors="pt")
    with torch.no_grad():
        return float(model(**ids).logits[0, 0])


def test_scores_equal_unbatched_oracle(tiny_rm: Path) -> None:
    scorer = get_scorer("reward_model", model=str(tiny_rm), dimension="harmless", batch_size=2)
    prompts = ["How do I bake bread?", "Hi", "Tell me a joke please"]
    outputs = ["Mix flour, water, yeast; knead; bake.", "Hello!", "No."]
    got = scorer.score(prompts, outputs)
    want = [_oracle(tiny_rm, p, o) for p, o in zip(prompts, outputs, strict=True)]
    assert got == pytest.approx(want, abs=1e-4)
    assert len(set(got)) == 3
    assert scorer.info.dimension == "harmless"


def test_bad_label_and_missing_model(tiny_rm: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="label"):
        get_scorer("reward_model", model=str(tiny_rm), label=3)
    with pytest.raises(NotFoundError):
        get_scorer("reward_model", model=str(tmp_path / "missing"))
