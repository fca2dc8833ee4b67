"""A tiny causal LM and byte-level tokenizer, built deterministically on disk (no download).

The tokenizer is byte-level BPE with no merges (256 byte tokens + 3 chat specials) and a
ChatML template, so `AutoTokenizer` loads it as the Qwen2 tokenizer verl expects beside a
qwen2 config (transformers 5 insists on that pairing). The model is a randomly initialised
Qwen2 of a few tens of thousands of parameters: large enough to learn a toy task, small
enough to train with FSDP on two CPU cores.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# The demo's compact prompt format: the problem text, a newline, then the answer marker.
# Half the tokens of ChatML, and the tiny model's training cost is per token.
COMPACT_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>{% endif %}"
)
_MARKER = "skpo_tiny_model.json"


@dataclass(frozen=True)
class TinyModelSpec:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    # Heads of 32 dimensions: vLLM's CPU attention refuses head_dim 16 (32 and 64 work), and the
    # demo runs on both CPU rollouts. Two key/value heads: with one, the warm-started model's
    # answers from SKPO's [s, q] barely followed s (54% right after a right first step, 33% after
    # a slipped one; with two: 94% and 5%), and SKPO's 30-step demo stalled at 38-75%.
    num_attention_heads: int = 2
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    seed: int = 0
    chat_template: str = CHAT_TEMPLATE


def build_tokenizer(directory: str, chat_template: str = CHAT_TEMPLATE) -> None:
    """Write tokenizer.json and tokenizer_config.json for the byte-level tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(list(SPECIAL_TOKENS))
    os.makedirs(directory, exist_ok=True)
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": chat_template,
        "model_max_length": 4096,
        "add_prefix_space": False,
        "errors": "replace",
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2)


def build_tiny_model(directory: str, spec: TinyModelSpec = TinyModelSpec()) -> str:
    """Create (or reuse, when the same spec is already there) the tiny model at `directory`."""
    marker = os.path.join(directory, _MARKER)
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f) == asdict(spec):
                return directory

    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    build_tokenizer(directory, spec.chat_template)
    vocab_size = 256 + len(SPECIAL_TOKENS)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=256,
        bos_token_id=None,
        eos_token_id=258,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(directory)
    with open(marker, "w") as f:
        json.dump(asdict(spec), f)
    return directory
