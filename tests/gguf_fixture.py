"""Write a tiny Llama GGUF file with the `gguf` package, laid out as llama.cpp's converter writes one.

The model is a seeded random Llama (2 layers, hidden 64, 4 query heads, 2 KV heads, tied
embeddings) and the tokenizer a byte-level BPE ("gpt2" in GGUF terms) with SmolLM2's three
specials first (`<|endoftext|>` 0, `<|im_start|>` 1, `<|im_end|>` 2), BOS 1, EOS 2, padding 2
and a ChatML chat template. Like llama.cpp (`convert_hf_to_gguf.py`, `LlamaModel.permute`),
q/k projection rows are permuted for its rotary layout; the attention and MLP matrices of
the first layer are stored Q4_1 (the SmolLM2 file's format) and the rest F32.

`write_tiny_gguf(path)` returns the Hugging Face model it was made from and the tensors as the
file holds them after dequantization, keyed by HF parameter name: what a correct conversion
must give back.
"""

from __future__ import annotations

import numpy as np

SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_ID, EOS_ID, PAD_ID = 1, 2, 2
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
QUANTIZED_LAYER = 0  # this layer's matrices are stored Q4_1


def _byte_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def _tokens() -> tuple[list[str], list[str]]:
    """(vocabulary, merges): the specials, the 256 byte symbols, and a few merged pairs."""
    merges = ["Ġ t", "h e", "Ġt he", "A n", "An s"]
    merged = [m.replace(" ", "") for m in merges]
    return [*SPECIALS, *_byte_alphabet(), *merged], merges


def _llama_cpp_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q/k: per head, the rotary pairs' halves interleaved."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _gguf_names(layer: int) -> dict[str, str]:
    prefix = f"model.layers.{layer}."
    return {
        f"blk.{layer}.attn_norm.weight": prefix + "input_layernorm.weight",
        f"blk.{layer}.attn_q.weight": prefix + "self_attn.q_proj.weight",
        f"blk.{layer}.attn_k.weight": prefix + "self_attn.k_proj.weight",
        f"blk.{layer}.attn_v.weight": prefix + "self_attn.v_proj.weight",
        f"blk.{layer}.attn_output.weight": prefix + "self_attn.o_proj.weight",
        f"blk.{layer}.ffn_norm.weight": prefix + "post_attention_layernorm.weight",
        f"blk.{layer}.ffn_gate.weight": prefix + "mlp.gate_proj.weight",
        f"blk.{layer}.ffn_up.weight": prefix + "mlp.up_proj.weight",
        f"blk.{layer}.ffn_down.weight": prefix + "mlp.down_proj.weight",
    }


def write_tiny_gguf(path: str, seed: int = 0, eos_id: int = EOS_ID):
    """Write the file; return (the HF model it came from, {HF name: the tensor the file holds, dequantized})."""
    import gguf
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokens, merges = _tokens()
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        bos_token_id=BOS_ID,
        eos_token_id=eos_id,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1.0, so a norm lost on the way would show
        for name, parameter in model.named_parameters():
            if name.endswith("norm.weight"):
                parameter.uniform_(0.5, 1.5)
    state = {name: tensor.numpy().astype(np.float32) for name, tensor in model.state_dict().items()}

    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny-llama-test")
    writer.add_block_count(LAYERS)
    writer.add_context_length(256)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if token in SPECIALS else 1 for token in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(eos_id)
    writer.add_pad_token_id(PAD_ID)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    held = {}

    def add(gguf_name: str, hf_name: str, quantize: bool) -> None:
        weights = state[hf_name]
        if gguf_name.endswith("attn_q.weight"):
            weights = _llama_cpp_permute(weights, HEADS)
        elif gguf_name.endswith("attn_k.weight"):
            weights = _llama_cpp_permute(weights, KV_HEADS)
        if quantize:
            stored = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q4_1)
            writer.add_tensor(gguf_name, stored, raw_dtype=gguf.GGMLQuantizationType.Q4_1)
            weights = gguf.quants.dequantize(stored, gguf.GGMLQuantizationType.Q4_1)
        else:
            writer.add_tensor(gguf_name, weights)
        if gguf_name.endswith("attn_q.weight"):  # back to the HF row order (the permutation is undone)
            weights = _llama_cpp_permute_inverse(weights, HEADS)
        elif gguf_name.endswith("attn_k.weight"):
            weights = _llama_cpp_permute_inverse(weights, KV_HEADS)
        held[hf_name] = weights

    add("token_embd.weight", "model.embed_tokens.weight", quantize=False)
    add("output_norm.weight", "model.norm.weight", quantize=False)
    for layer in range(LAYERS):
        for gguf_name, hf_name in _gguf_names(layer).items():
            add(gguf_name, hf_name, quantize=layer == QUANTIZED_LAYER and not gguf_name.endswith("norm.weight"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model, held


def _llama_cpp_permute_inverse(weights: np.ndarray, heads: int) -> np.ndarray:
    return (
        weights.reshape(heads, weights.shape[0] // heads // 2, 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )
