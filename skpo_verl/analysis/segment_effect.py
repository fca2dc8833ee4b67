"""How much the kept segment decides the answers: a warm-started chain-sum model, answers sampled after a given s.

    python -m skpo_verl.analysis.segment_effect [--task benchmark|demo|long] [--workdir DIR] [--problems 64]
                                                [--answers 8]

For each of the first `--problems` training problems, s is the worked solution's first step
(`a+b=c. `, through the space after its period), once right and once with the careless
solver's slip (c one too high). From each s, `--answers` answers are sampled at temperature 1
from SKPO's skip-connected input [s, q] (s's tokens, then the chat-templated problem) and from
the continual input (the problem, then s, answered by continuing it), and judged on their
`Answer:` line (continual: s + answer). If the answers' accuracy after a right s is far above
that after a slipped s, the segment decides the outcome and R_I is a signal about it
(docs/algorithm.md, "On the learning benchmark's task"). Answers get the task's response budget
(`skpo_verl.demo.prepare.task_lengths`: 64 tokens on the long task). On the long task a right
first step does not settle the outcome: a later carry can still slip, after the segment, so
the share right after a right s is also the share of answers without a later decisive error.
"""

from __future__ import annotations

import argparse
import os
import re

import torch

from skpo_verl.cpu.generation import SamplingRequest, generate_batch
from skpo_verl.demo import task
from skpo_verl.demo.warm_start import prompt_ids

_ANSWER = re.compile(r"Answer: (-?\d+)")


def first_step_tokens(tokenizer, operands, slip: int) -> list[int]:
    """The tokens of the worked solution's first step `a+b=c. ` (with `slip` added to c)."""
    text = task.worked_solution(operands, slip)
    return tokenizer.encode(text[: text.index(".") + 2], add_special_tokens=False)


def segment_effect(model, tokenizer, problems, answers: int = 8, max_tokens: int = 32, seed: int = 0) -> dict:
    """{(first step, input): share of right answers} for first step in (right, slipped), input in (skip, continual)."""
    generator = torch.Generator().manual_seed(seed)
    rates = {}
    for label, slip in (("right", 0), ("slipped", 1)):
        for conditioning in ("skip", "continual"):
            inputs, prefixes = [], []
            for operands in problems:
                segment, prompt = first_step_tokens(tokenizer, operands, slip), prompt_ids(tokenizer, operands)
                inputs.append(segment + prompt if conditioning == "skip" else prompt + segment)
                prefixes.append(tokenizer.decode(segment) if conditioning == "continual" else "")
            requests = [
                SamplingRequest(ids, max_tokens, [tokenizer.eos_token_id], temperature=1.0, generator=generator)
                for ids in inputs
                for _ in range(answers)
            ]
            with torch.no_grad():
                outputs = generate_batch(model, requests, tokenizer.pad_token_id)
            right = 0
            for n, output in enumerate(outputs):
                text = prefixes[n // answers] + tokenizer.decode(output.token_ids, skip_special_tokens=True)
                found = _ANSWER.search(text)
                right += bool(found) and int(found.group(1)) == task.answer(problems[n // answers])
            rates[(label, conditioning)] = right / len(outputs)
    return rates


def main(argv=None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from skpo_verl.demo.prepare import DEFAULT_DIR, TASKS, prepare, task_lengths

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=list(TASKS), default="benchmark")
    parser.add_argument("--workdir", default=DEFAULT_DIR)
    parser.add_argument("--problems", type=int, default=64, help="the first N training problems")
    parser.add_argument("--answers", type=int, default=8, help="answers sampled per segment")
    args = parser.parse_args(argv)
    path = prepare(os.path.expanduser(args.workdir), args.task)["MODEL_PATH"]
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, _ = task.problems(TASKS[args.task][0])
    problems = train[: args.problems]
    rates = segment_effect(model, tokenizer, problems, args.answers, max_tokens=task_lengths(args.task)[1])
    print(f"answers right after the warm start ({len(problems)} training problems x {args.answers} answers, T = 1):")
    for label in ("right", "slipped"):
        print(
            f"  first step {label:7s}  from [s, q]: {rates[(label, 'skip')]:.0%}   "
            f"from q + s (continual): {rates[(label, 'continual')]:.0%}"
        )


if __name__ == "__main__":
    main()
