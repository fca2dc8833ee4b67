"""SPO's offline warm start: estimate each training prompt's value from n0 answers of the initial policy.

    python -m skpo_verl.training.offline_values --out values.json [--n0 8] -- LAUNCHER [OVERRIDES ...]
    python -m skpo_verl.training.offline_values --out values.json -- python -m verl.trainer.main_ppo OVERRIDES ...

then train with `+algorithm.skpo.tracker.initial_values=values.json` (docs/config.md).

LAUNCHER is the command that would start the training run (any launcher in examples/, which
all end in verl's `python -m verl.trainer.main_ppo` with their overrides, honour
`PRINT_OVERRIDES=1` and append extra overrides). The command runs it once more, as verl's own
validation-only run over the *training* files (`trainer.val_only=true`,
`data.val_files=<data.train_files>`, `rollout.val_kwargs.n=n0` at the rollout's own
temperature, top-p and top-k, dumped with `trainer.validation_data_dir`), so the answers come
through the real rollout path of that run: verl's agent-loop manager, the run's rollout
replicas (vLLM or SGLang on a GPU cluster, the project's `hf_cpu` server on CPU), the run's
chat template and response budget, and verl's reward loop with the run's reward function.
It then reads verl's dump, matches each answer group to its training row and writes, per
prompt (its `extra_info.index`), the success rate mean((r + 1) / 2) over its n0 answers
(`skpo_verl.training.initial_values` describes the file), and the decoded tokens it cost.

Why this path (docs/algorithm.md, "Interventions on the dip"): the estimate must be of the
policy that training starts from, sampled as training samples it, and judged as training
judges it; a separate generator (plain `transformers.generate`, another prompt format) would
estimate something else. verl's validation is the one mode of its trainer that generates
many answers per prompt without training, and it scales out like the run itself.

verl's dump does not carry `extra_info.index`; a group is matched to its row by its prompt
text (the row's chat-templated prompt, decoded as verl decodes it) and ground truth. Rows
that share both are the same problem and get the same (pooled) estimate.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import Any

from skpo_verl.core.tracker import reward_to_tracker
from skpo_verl.training.initial_values import KEY, write_initial_values

MAIN_PPO = "verl.trainer.main_ppo"


def run_overrides(command: Sequence[str], env: dict | None = None) -> list[str]:
    """The Hydra overrides `command` would start verl with.

    `... -m verl.trainer.main_ppo A B`: A, B. Otherwise a launcher: run with PRINT_OVERRIDES=1,
    which prints the final override list NUL-separated and starts nothing (examples/common.sh).
    """
    command = list(command)
    if MAIN_PPO in command:
        return command[command.index(MAIN_PPO) + 1 :]
    printed = subprocess.run(
        command,
        env={**(os.environ if env is None else env), "PRINT_OVERRIDES": "1"},
        check=True,
        stdout=subprocess.PIPE,
    ).stdout.decode()
    return [item for item in printed.split("\0") if item]


def _hydra_list(items: Sequence[str]) -> str:
    return "[" + ",".join(f"'{item}'" for item in items) + "]"


def estimation_overrides(config, n0: int, dump_dir: str) -> list[str]:
    """Overrides that turn the training run into verl's validation of n0 sampled answers per training prompt."""
    rollout = config.actor_rollout_ref.rollout
    train_files = config.data.train_files
    train_files = [train_files] if isinstance(train_files, str) else list(train_files)
    return [
        "trainer.val_only=True",
        "trainer.val_before_train=True",
        f"data.val_files={_hydra_list(train_files)}",
        "data.val_max_samples=-1",
        "data.validation_shuffle=False",
        f"actor_rollout_ref.rollout.val_kwargs.n={n0}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        f"actor_rollout_ref.rollout.val_kwargs.temperature={rollout.temperature}",
        f"actor_rollout_ref.rollout.val_kwargs.top_p={rollout.top_p}",
        f"actor_rollout_ref.rollout.val_kwargs.top_k={rollout.top_k}",
        f"trainer.validation_data_dir={dump_dir}",
    ]


def prompt_texts(config, rows) -> tuple[list[str], Any]:
    """Each training row's prompt as verl's validation dump writes it (chat-templated, tokenized, decoded),
    and the tokenizer."""
    from verl.utils import hf_tokenizer

    model = config.actor_rollout_ref.model
    tokenizer = hf_tokenizer(model.path, trust_remote_code=model.get("trust_remote_code", False))
    if model.get("custom_chat_template"):
        tokenizer.chat_template = model.custom_chat_template
    kwargs = dict(config.data.get("apply_chat_template_kwargs") or {})
    texts = []
    for messages in rows:
        ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True, **kwargs)
        ids = list(ids) if isinstance(ids, list) else list(ids["input_ids"])
        texts.append(tokenizer.decode(ids, skip_special_tokens=True))
    return texts, tokenizer


def success_rates(
    dumped: Sequence[dict], row_keys: Sequence[Hashable], row_texts: Sequence[str], row_truths: Sequence[Any], n0: int
) -> tuple[dict, dict, list]:
    """Per training row key: success rate and answer count from verl's validation dump, and the keys of rows
    with no answers (verl's overlong-prompt filter drops rows from validation as from training).

    `dumped`: the dump's records (`input`, `gts`, `score`, `uid` = `{group}_{session}_{index}`).
    A row's estimate is the mean of (r + 1) / 2 over every answer whose (input, gts) is the
    row's; each such problem must have n0 answers per row sharing it.
    """
    answers: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in dumped:
        score = float(record["score"])
        if not -1.0 <= score <= 1.0 or math.isnan(score):
            raise ValueError(f"a dumped answer has reward {score}: the tracker maps rewards in [-1, 1] to [0, 1]")
        answers[(record["input"], str(record["gts"]))].append(float(reward_to_tracker(score)))
    rows_per_problem: dict[tuple[str, str], int] = defaultdict(int)
    for text, truth in zip(row_texts, row_truths):
        rows_per_problem[(text, str(truth))] += 1
    rates, counts, missing = {}, {}, []
    for key, text, truth in zip(row_keys, row_texts, row_truths):
        problem = (text, str(truth))
        found = answers.get(problem)
        if not found:
            missing.append(key)
            continue
        if len(found) != n0 * rows_per_problem[problem]:
            raise ValueError(
                f"prompt {key!r} has {len(found)} dumped answers, expected n0={n0} for each of its "
                f"{rows_per_problem[problem]} row(s): verl's dump and the training data disagree"
            )
        rates[key] = sum(found) / len(found)
        counts[key] = len(found)
    unmatched = set(answers) - set(rows_per_problem)
    if unmatched:
        raise ValueError(
            f"{len(unmatched)} answered prompts match no training row (first: {next(iter(unmatched))[0]!r}): "
            "the prompt text as the dump decodes it differs from the training rows'"
        )
    return rates, counts, missing


def read_dump(dump_dir: str) -> list[dict]:
    files = [path for path in sorted(Path(dump_dir).glob("*.jsonl")) if path.stem.isdigit()]  # `<step>.jsonl`
    if len(files) != 1:
        raise RuntimeError(f"expected one validation dump in {dump_dir}, found {[f.name for f in files]}")
    return [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]


def estimate(
    command: Sequence[str], out: str, n0: int, dump_dir: str | None = None, env: dict | None = None, output=None
) -> dict:
    """Run the estimation; write the values file; return a summary.

    `env`: the command's environment (default: this process's); `output`: a file for its output (default: ours)."""
    import pandas as pd

    from skpo_verl.validation import prompt_keys_from_extra_info
    from skpo_verl.verl_config import compose_ppo_config

    env = dict(os.environ if env is None else env)
    overrides = run_overrides(command, env)
    if any(override.lstrip("+~").startswith(KEY) for override in overrides):
        raise SystemExit(f"the run's overrides set {KEY}: estimate with the launcher as it runs without it")
    config = compose_ppo_config(overrides)
    dump_dir = dump_dir or tempfile.mkdtemp(prefix="skpo-offline-values-")
    if any(path.stem.isdigit() for path in Path(dump_dir).glob("*.jsonl")):
        raise SystemExit(f"{dump_dir} already holds a dump; give an empty --dump-dir")
    extra = estimation_overrides(config, n0, dump_dir)
    env["VERL_FILE_LOGGER_PATH"] = os.path.join(dump_dir, "metrics.jsonl")
    # The extra overrides go last, so they win over the launcher's.
    subprocess.run([*command, *extra], check=True, env=env, stdout=output, stderr=subprocess.STDOUT if output else None)
    dumped = read_dump(dump_dir)

    train_files = config.data.train_files
    train_files = [train_files] if isinstance(train_files, str) else list(train_files)
    frame = pd.concat([pd.read_parquet(path) for path in train_files], ignore_index=True)
    keys = prompt_keys_from_extra_info(frame["extra_info"], files=train_files)
    texts, tokenizer = prompt_texts(config, frame[config.data.prompt_key])
    truths = [(row or {}).get("ground_truth") for row in frame["reward_model"]]
    rates, counts, missing = success_rates(dumped, keys, texts, truths, n0)
    if len(missing) == len(keys):
        raise RuntimeError("no training prompt was found in verl's dump")
    decoded = sum(len(tokenizer.encode(record["output"], add_special_tokens=False)) for record in dumped)
    rollout = config.actor_rollout_ref.rollout
    source = {
        "model": str(config.actor_rollout_ref.model.path),
        "train_files": train_files,
        "rollout": str(rollout.name),
        "temperature": float(rollout.temperature),
        "top_p": float(rollout.top_p),
        "top_k": int(rollout.top_k),
        "response_length": int(rollout.response_length),
        "rollout_seed": rollout.get("seed"),
        "not_estimated": len(missing),  # rows verl's overlong filter dropped
    }
    write_initial_values(out, rates, counts, n0, decoded, source)
    mean = sum(rates.values()) / len(rates)
    summary = {"prompts": len(rates), "not_estimated": len(missing), "answers": len(dumped)}
    summary.update(mean_success_rate=mean, decoded_tokens=decoded, out=out)
    return summary


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the values file to write (JSON)")
    parser.add_argument("--n0", type=int, default=8, help="answers per training prompt (SPO's n0; default 8)")
    parser.add_argument("--dump-dir", default=None, help="where verl dumps the answers (default: a temp dir)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the training launcher and its overrides")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the training command after --, e.g. -- bash examples/cpu_tiny_skpo.sh")
    if args.n0 < 1:
        parser.error("--n0 must be >= 1")
    summary = estimate(command, args.out, args.n0, args.dump_dir)
    print(
        f"[skpo_verl.training.offline_values] {summary['prompts']} prompts x n0={args.n0}: mean success rate "
        f"{summary['mean_success_rate']:.3f}, {summary['decoded_tokens']} decoded tokens; wrote {summary['out']}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
