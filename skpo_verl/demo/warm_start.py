"""A short supervised warm start of the tiny model on the chain-sum task, to an imperfect start.

A randomly initialised model never writes `Answer: n`, so RL from scratch would see only -1
rewards. The warm start imitates a careless worked solver: it knows the format and the
additions, but in `slip_rate` of its solutions the first partial sum is one too high, and
the slip is carried through (`3+5=9. 9+4=13.` and `Answer: 13`). With the slip more frequent than
the right first step, greedy decoding (verl's validation) starts near 0% on held-out
problems, while sampled answers are right often enough (about 1 - slip_rate) that every
group of G answers mixes +1 and -1. RL then has one thing to learn, the first step, which
decides the outcome; it must learn it for every problem, held-out ones included.

`slip_at="carry"` (the `long` task) is a solver careless at any step instead: each step whose
partial sum crosses a multiple of ten slips (one too high, carried through) with probability
`slip_rate`, independently, and the other steps never do. A problem's first wrong step is then
wherever its first slipped carry is: in SKPO's kept segment or after it.

In `prefix_rate` of the examples the problem is preceded by the first few tokens of one of
the solver's solutions to it (raw tokens before the chat turn, as SKPO's skip-connected
input [s, q] is built), and the target is that same solution: the model learns that it may
build on a worked beginning it is shown. GRPO never shows it one; SKPO's downstream answers
then depend on the kept segment, so its upstream reward measures the segment.

Everything is seeded: the same specs give the same weights on every machine (CPU torch).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from skpo_verl.demo.task import TaskSpec, carries, problems, prompt_text, worked_solution

SLIP_RULES = ("first", "carry")


@dataclass(frozen=True)
class WarmStartSpec:
    steps: int = 600  # the demo's (skpo_verl.demo.prepare says why not fewer)
    batch_size: int = 64
    lr: float = 3e-3
    slip_rate: float = 0.6  # share of solutions whose first partial sum is one too high ("first"), or of
    # carrying steps that slip ("carry")
    prefix_rate: float = 0.3  # share of examples shown a worked beginning before the problem
    prefix_tokens: tuple[int, int] = (5, 16)  # its length range, SKPO's U[L/6, L/2] at L = 32
    seed: int = 0
    slip_at: str = "first"  # SLIP_RULES: the first step only, or any step that carries
    # torch's intra-op threads while training: with more than one, float sums are split by the thread count, so
    # machines with different core counts built different models (the long task's greedy held-out accuracy at step
    # 0 was 2.7%, 4.3% and 6.2% on three builds; GRPO then learned at very different speeds). 1: the same model
    # on every machine with the same CPU kind and libraries.
    threads: int = 1

    def __post_init__(self):
        if self.slip_at not in SLIP_RULES:
            raise ValueError(f"WarmStartSpec.slip_at={self.slip_at!r} is not one of {', '.join(SLIP_RULES)}")


def careless_slips(operands, spec: WarmStartSpec, rng: random.Random) -> bool | tuple[int, ...]:
    """The careless solver's slips on one problem: a bool (first step one too high) for "first", one
    0/1 per step for "carry". Draws from `rng` exactly as the warm start always did for "first"."""
    if spec.slip_at == "first":
        return rng.random() < spec.slip_rate
    return tuple(int(carry and rng.random() < spec.slip_rate) for carry in carries(operands))


def prompt_ids(tokenizer, operands) -> list[int]:
    """The chat-templated problem's token ids, ending in the generation prompt."""
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt_text(operands)}], add_generation_prompt=True, tokenize=True
    )
    return list(prompt) if isinstance(prompt, list) else list(prompt["input_ids"])  # transformers 5: BatchEncoding


def _example(tokenizer, operands, slipped: bool | tuple[int, ...], prefix_length: int) -> tuple[list[int], list[int]]:
    """(input ids, target ids + EOS): chat-templated problem, optionally after a solution's first tokens.
    `slipped`: the first step one too high (bool), or each step's slip (tuple)."""
    prompt = prompt_ids(tokenizer, operands)
    if isinstance(slipped, tuple):
        solution = worked_solution(operands, slips=slipped)
    else:
        solution = worked_solution(operands, 1 if slipped else 0)
    target = tokenizer.encode(solution, add_special_tokens=False)
    return target[:prefix_length] + list(prompt), target + [tokenizer.eos_token_id]


def warm_start(model, tokenizer, task: TaskSpec, spec: WarmStartSpec) -> list[float]:
    """Train `model` in place on the careless solver's solutions; return the loss per step."""
    import torch  # here, so that reading the specs (the launcher's `prepare --lengths`) needs no torch

    train_problems, _ = problems(task)
    rng = random.Random(spec.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.0)
    losses = []
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            for _ in range(spec.steps):
                batch = []
                for _ in range(spec.batch_size):
                    # The draws' order (problem, slips, prefix) is the one every existing warm start was built with.
                    operands = rng.choice(train_problems)
                    slipped = careless_slips(operands, spec, rng)
                    prefix_length = rng.randint(*spec.prefix_tokens) if rng.random() < spec.prefix_rate else 0
                    batch.append(_example(tokenizer, operands, slipped, prefix_length))
                width = max(len(inputs) + len(target) for inputs, target in batch)
                input_ids = torch.full((len(batch), width), tokenizer.pad_token_id, dtype=torch.long)
                labels = torch.full((len(batch), width), -100, dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, (inputs, target) in enumerate(batch):
                    sequence = inputs + target
                    input_ids[row, : len(sequence)] = torch.tensor(sequence)
                    labels[row, len(inputs) : len(sequence)] = torch.tensor(target)
                    attention_mask[row, : len(sequence)] = 1
                loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return losses
