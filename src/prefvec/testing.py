"""Tiny models and tokenizers built from a config, for tests and benchmark smoke runs.

Nothing here downloads: the tokenizer is a byte-level BPE with no merges (256 byte tokens plus the
ChatML specials), the model a two-layer Llama initialised from a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def make_tiny_tokenizer():  # type: ignore[no-untyped-def]
    """A byte-level tokenizer with the ChatML specials and template (ids 0..258)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(alphabet):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHATML_TEMPLATE
    return tok


def tiny_llama_config(**overrides: object):  # type: ignore[no-untyped-def]
    """Config of a two-layer Llama small enough for unit tests (~60k parameters)."""
    from transformers import LlamaConfig

    kwargs: dict[str, Any] = dict(
        vocab_size=320,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def make_tiny_model(out_dir: str | Path, seed: int = 0, **config_overrides: object) -> Path:
    """Build a tiny Llama + tokenizer from a config and save both (safetensors) to ``out_dir``."""
    from transformers import LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**config_overrides))
    # Larger-than-default init so greedy outputs differ visibly between nearby weights.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    model.save_pretrained(out)
    make_tiny_tokenizer().save_pretrained(out)
    return out


def perturb_model(
    base_dir: str | Path, out_dir: str | Path, seed: int, scale: float = 0.05
) -> Path:
    """Save a copy of the model at ``base_dir`` with every parameter moved by seeded noise.

    Stands in for a fine-tune (θ+ or θ−) in oracle tests.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    out = Path(out_dir)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out
