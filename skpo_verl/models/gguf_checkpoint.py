"""A GGUF file -> a Hugging Face checkpoint verl loads, checked against the GGUF-loaded model.

transformers reads GGUF files itself (`from_pretrained(dir, gguf_file=...)`, with the `gguf`
package) and dequantizes every tensor, but three things stop the result from being a
checkpoint verl can train:

1. `save_pretrained` refuses the model: it carries a GGUF `quantization_config` ("quantized
   with QuantizationMethod.GGUF and is not serializable"). The weights are already plain
   float tensors, so the model is rebuilt from its config without that entry and given the
   same state dict.
2. transformers 5.10's GGUF tokenizer converter for Llama (`GGUFLlamaConverter.tokenizer` in
   `transformers/integrations/ggml.py`) takes the EOS token from the BOS id, so the loaded
   tokenizer's `eos_token` is `<|im_start|>` for SmolLM2 instead of `<|im_end|>`. A rollout
   would then never stop at the end of a turn. The special tokens are set again from the
   file's own metadata (`tokenizer.ggml.{bos,eos,padding}_token_id`).
3. The checkpoint is saved in float32: the dequantized weights (`d * q + m` with fp16 `d`, `m`)
   are not bf16 numbers, so a bf16 copy would be a different model (see `convert`).

`convert` then reloads the saved folder the way verl does (`AutoModelForCausalLM`,
`AutoTokenizer` from the path) and checks it against the GGUF-loaded model: the same greedy
tokens on fixed prompts, the same prompt token ids, the file's EOS id in the config, the
generation config and the tokenizer, and the file's chat template.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

# Greedy continuations compared between the GGUF-loaded model and the saved checkpoint.
VERIFY_PROMPTS = (
    "A baker makes 24 rolls and sells 9 of them. How many rolls are left? Give the final line as 'Answer: N'.",
    "What is the capital of France?",
    "Write one sentence about the sea.",
)
VERIFY_NEW_TOKENS = 24
MARKER = "skpo_gguf_source.json"  # written last: its presence means a finished, verified conversion
CONVERTER_VERSION = 1  # bump when the saved checkpoint would change for the same GGUF file


class ConversionError(RuntimeError):
    """The saved checkpoint does not behave like the GGUF-loaded model (the message says how)."""


@dataclass
class Verification:
    prompts: int
    new_tokens_per_prompt: int
    greedy_tokens_equal: bool
    prompt_ids_equal: bool
    max_logit_difference: float
    eos_token_id: int
    eos_token: str
    pad_token_id: int | None
    bos_token_id: int | None
    chat_template_kept: bool
    problems: list[str] = field(default_factory=list)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_special_tokens(gguf_path: str) -> dict:
    """The file's own tokenizer facts: special token ids and strings, and its chat template."""
    from gguf import GGUFReader

    reader = GGUFReader(gguf_path)

    def value(key: str):
        entry = reader.fields.get(key)
        return None if entry is None else entry.contents()

    tokens = value("tokenizer.ggml.tokens")
    if tokens is None:
        raise ConversionError(f"{gguf_path} has no tokenizer (tokenizer.ggml.tokens); cannot build a checkpoint")
    facts = {"chat_template": value("tokenizer.chat_template")}
    for role, key in (("bos", "bos_token_id"), ("eos", "eos_token_id"), ("pad", "padding_token_id")):
        token_id = value(f"tokenizer.ggml.{key}")
        facts[f"{role}_token_id"] = None if token_id is None else int(token_id)
        facts[f"{role}_token"] = None if token_id is None else tokens[int(token_id)]
    if facts["eos_token_id"] is None:
        raise ConversionError(f"{gguf_path} names no EOS token (tokenizer.ggml.eos_token_id)")
    return facts


def load_from_gguf(gguf_path: str):
    """(model, tokenizer) as transformers loads the GGUF file, the tokenizer's specials set from the file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name).eval()
    facts = gguf_special_tokens(gguf_path)
    special = {f"{role}_token": facts[f"{role}_token"] for role in ("bos", "eos", "pad") if facts[f"{role}_token"]}
    tokenizer.add_special_tokens(special)  # existing tokens: only the roles change, no new ids
    if facts["chat_template"]:
        tokenizer.chat_template = facts["chat_template"]
    # BPE decoding must not run WordPiece's space clean-up (it deletes the space before punctuation).
    tokenizer.clean_up_tokenization_spaces = False
    for config in (model.config, model.generation_config):
        config.eos_token_id = facts["eos_token_id"]
        config.bos_token_id = facts["bos_token_id"]
        config.pad_token_id = facts["pad_token_id"]
    return model, tokenizer


def unquantized_copy(model):
    """The same weights in a model with no GGUF quantization_config, which save_pretrained accepts."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    copy = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    copy.load_state_dict(model.state_dict(), strict=True)
    copy.generation_config = model.generation_config
    return copy.eval()


def _greedy(model, tokenizer, prompt_ids: list[int], new_tokens: int):
    """(new token ids, first-step logits) of a greedy continuation that runs `new_tokens` steps
    whatever tokens come (no EOS stop), so two models are compared over the same length."""
    import torch

    with torch.no_grad():
        output = model.generate(
            torch.tensor([prompt_ids]),
            attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return output.sequences[0, len(prompt_ids) :].tolist(), output.logits[0][0]


def _prompt_ids(tokenizer, prompt: str) -> list[int]:
    messages = [{"role": "user", "content": prompt}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    return list(ids["input_ids"] if isinstance(ids, dict) else ids)


def verify(
    reference_model,
    reference_tokenizer,
    checkpoint_dir: str,
    facts: dict,
    prompts=VERIFY_PROMPTS,
    new_tokens: int = VERIFY_NEW_TOKENS,
) -> Verification:
    """Compare the saved checkpoint, loaded as verl loads it, with the GGUF-loaded model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(checkpoint_dir)
    generation_config = GenerationConfig.from_pretrained(checkpoint_dir)
    problems = []
    tokens_equal = ids_equal = True
    largest_difference = 0.0
    for prompt in prompts:
        reference_ids, ids = _prompt_ids(reference_tokenizer, prompt), _prompt_ids(tokenizer, prompt)
        if ids != reference_ids:
            ids_equal = False
            problems.append(f"prompt {prompt[:30]!r}: token ids differ ({ids[:8]}... vs GGUF {reference_ids[:8]}...)")
        reference_tokens, reference_logits = _greedy(reference_model, reference_tokenizer, reference_ids, new_tokens)
        tokens, logits = _greedy(model, tokenizer, reference_ids, new_tokens)
        largest_difference = max(largest_difference, float((logits - reference_logits).abs().max()))
        if tokens != reference_tokens:
            tokens_equal = False
            problems.append(
                f"prompt {prompt[:30]!r}: greedy tokens {tokens} differ from the GGUF model's {reference_tokens}"
            )
    eos = facts["eos_token_id"]
    eos_seen = {
        "config": model.config.eos_token_id,
        "generation_config": generation_config.eos_token_id,
        "tokenizer": tokenizer.eos_token_id,
    }
    for where, found in eos_seen.items():
        if found != eos and not (isinstance(found, list) and eos in found):
            problems.append(f"{where} EOS id {found}, the GGUF file says {eos} ({facts['eos_token']!r})")
    template_kept = facts["chat_template"] is None or tokenizer.chat_template == facts["chat_template"]
    if not template_kept:
        problems.append("the saved tokenizer's chat template differs from the GGUF file's")
    return Verification(
        prompts=len(prompts),
        new_tokens_per_prompt=new_tokens,
        greedy_tokens_equal=tokens_equal,
        prompt_ids_equal=ids_equal,
        max_logit_difference=largest_difference,
        eos_token_id=eos,
        eos_token=facts["eos_token"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        chat_template_kept=template_kept,
        problems=problems,
    )


def finished_conversion(output_dir: str, source_sha256: str) -> dict | None:
    """The marker of an earlier conversion of the same file by this converter version, if any."""
    path = os.path.join(output_dir, MARKER)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        record = json.load(handle)
    if record.get("source_sha256") == source_sha256 and record.get("converter_version") == CONVERTER_VERSION:
        return record
    return None


def convert(gguf_path: str, output_dir: str, prompts=VERIFY_PROMPTS, new_tokens: int = VERIFY_NEW_TOKENS) -> dict:
    """Write the float32 checkpoint of `gguf_path` to `output_dir`, verify it, and return the record
    (also written as `output_dir/skpo_gguf_source.json`). Reuses a finished conversion of the same file.

    Raises ConversionError (and writes no marker) when the checkpoint fails verification.
    """
    source_sha256 = file_sha256(gguf_path)
    done = finished_conversion(output_dir, source_sha256)
    if done is not None:
        return {**done, "reused": True}
    marker = os.path.join(output_dir, MARKER)
    if os.path.exists(marker):
        os.remove(marker)  # an older conversion is being replaced: it is not valid until verified again
    reference_model, reference_tokenizer = load_from_gguf(gguf_path)
    facts = gguf_special_tokens(gguf_path)
    model = unquantized_copy(reference_model)
    os.makedirs(output_dir, exist_ok=True)
    model.save_pretrained(output_dir)
    reference_tokenizer.save_pretrained(output_dir)
    result = verify(reference_model, reference_tokenizer, output_dir, facts, prompts, new_tokens)
    if result.problems:
        raise ConversionError(f"{output_dir} does not match {gguf_path}: " + "; ".join(result.problems))
    record = {
        "source": os.path.abspath(gguf_path),
        "source_sha256": source_sha256,
        "converter_version": CONVERTER_VERSION,
        "dtype": "float32",
        "parameters": sum(p.numel() for p in model.parameters()),
        "architecture": model.config.architectures[0] if model.config.architectures else model.config.model_type,
        "verification": asdict(result),
    }
    with open(marker, "w") as handle:
        json.dump(record, handle, indent=2)
    return {**record, "reused": False}
