"""Sample k answers per benchmark problem with vLLM (the only part that needs a GPU).

Kept thin on purpose: everything after generation (judging, avg@k, tables) runs on CPU from
the generations file this writes. Prompts are the parquet's chat messages, rendered with the
model's chat template or, for base models, the plain template the training launchers use
(examples/common.sh PLAIN_CHAT_TEMPLATE).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import pandas as pd

from skpo_verl.evaluation.protocol import (
    BENCHMARKS,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    Benchmark,
)

PLAIN_CHAT_TEMPLATE = "{% for message in messages %}{{ message.content }}{% endfor %}"


@dataclass(frozen=True)
class Sampling:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_tokens: int = DEFAULT_MAX_TOKENS
    seed: int = 0


def import_vllm():
    try:
        import vllm
    except ImportError as error:
        raise RuntimeError(
            "Generation needs vLLM, which is not installed here: `pip install 'skpo-verl[gpu]'` on a GPU machine, "
            "or generate elsewhere and run `skpo-evaluate score --generations FILE` here."
        ) from error
    return vllm


def generate(
    model_path: str,
    data_dir: str,
    out_path: str,
    sampling: Sampling = Sampling(),
    prompt_format: str = "chat",
    tensor_parallel_size: int = 1,
    benchmarks: tuple[Benchmark, ...] = BENCHMARKS,
) -> None:
    """Write one JSON line per sample: data_source, index, sample, ground_truth, response."""
    vllm = import_vllm()
    llm = vllm.LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, seed=sampling.seed)
    tokenizer = llm.get_tokenizer()
    if prompt_format == "plain":
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE
    with open(out_path, "w") as out:
        for bench in benchmarks:
            rows = pd.read_parquet(os.path.join(data_dir, f"{bench.data_source}.parquet"))
            prompts = [
                tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, tokenize=False)
                for prompt in rows["prompt"]
            ]
            params = vllm.SamplingParams(
                n=bench.samples,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_tokens=sampling.max_tokens,
                seed=sampling.seed,
            )
            for row, result in zip(rows.itertuples(), llm.generate(prompts, params)):
                for number, completion in enumerate(result.outputs):
                    record = {
                        "data_source": row.data_source,
                        "index": int(row.extra_info["index"]),
                        "sample": number,
                        "ground_truth": row.reward_model["ground_truth"],
                        "response": completion.text,
                    }
                    out.write(json.dumps(record) + "\n")
