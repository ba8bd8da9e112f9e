"""Will vLLM load this saved model folder as it is? ``check_vllm(model_dir)`` lists the problems (empty: OK).

What is checked, and why (vLLM builds the model from config.json and reads the safetensors by name):

* no custom code: no ``auto_map`` in config.json or tokenizer_config.json, and every ``architectures`` entry is a
  class transformers itself defines (vLLM maps those names to its own implementations; remote code is not run);
* the vocabulary is consistent: ``vocab_size`` equals the embedding's rows (and the head's), and the tokenizer has no
  id at or beyond it (vLLM allocates ``vocab_size`` rows and rejects a checkpoint of another shape);
* the head is saved the way vLLM expects: a tied model says ``tie_word_embeddings: true`` and has no separate
  ``lm_head.weight`` in its safetensors; an untied one has both matrices;
* the weights are safetensors in a dtype vLLM serves (float32, float16, bfloat16).

Only file headers are read, never the weights, so this runs in a second on any model size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import transformers

from redwhale.models.info import safetensors_tensors

EMBEDDING_NAMES = ("model.embed_tokens.weight", "transformer.wte.weight", "model.embed_in.weight")
HEAD_NAMES = ("lm_head.weight", "embed_out.weight")
DTYPES = ("float32", "float16", "bfloat16")


def check_vllm(model_dir: Path) -> list[str]:
    """Problems that would stop vLLM from loading ``model_dir`` (or make it load something else); empty = OK."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        return [f"{model_dir} has no config.json"]
    config = _text_config(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    shapes = _tensor_shapes(model_dir)
    problems = _code_problems(model_dir, config)
    if not shapes:
        return [*problems, "no *.safetensors weights"]
    problems += _vocab_problems(model_dir, config, shapes)
    problems += _head_problems(config, shapes)
    dtype = config.get("dtype") or config.get("torch_dtype")
    if dtype is not None and dtype not in DTYPES:
        problems.append(f"dtype {dtype!r} is not one vLLM serves ({', '.join(DTYPES)})")
    return problems


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    return {**config, **config["text_config"]} if isinstance(config.get("text_config"), dict) else config


def _tensor_shapes(model_dir: Path) -> dict[str, tuple[int, ...]]:
    return {name: shape for name, (shape, _) in safetensors_tensors(model_dir).items()}


def _code_problems(model_dir: Path, config: dict[str, Any]) -> list[str]:
    problems = []
    if config.get("auto_map"):
        problems.append("config.json has auto_map (custom code): vLLM would need trust_remote_code")
    tokenizer_config = model_dir / "tokenizer_config.json"
    if tokenizer_config.is_file() and json.loads(tokenizer_config.read_text(encoding="utf-8")).get("auto_map"):
        problems.append("tokenizer_config.json has auto_map (custom tokenizer code)")
    architectures = config.get("architectures") or []
    if not architectures:
        problems.append("config.json names no architectures")
    for name in architectures:
        if not isinstance(getattr(transformers, name, None), type):
            problems.append(f"architecture {name!r} is not a transformers class")
    return problems


def _vocab_problems(model_dir: Path, config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    vocab = config.get("vocab_size")
    embedding = next((shapes[n] for n in EMBEDDING_NAMES if n in shapes), None)
    if vocab is None:
        return ["config.json has no vocab_size"]
    problems = []
    if embedding is None:
        problems.append("no input embedding found in the safetensors")
    elif embedding[0] != vocab:
        problems.append(f"vocab_size {vocab} but the embedding has {embedding[0]} rows")
    head = next((shapes[n] for n in HEAD_NAMES if n in shapes), None)
    if head is not None and head[0] != vocab:
        problems.append(f"vocab_size {vocab} but lm_head has {head[0]} rows")
    top = _largest_token_id(model_dir)
    if top is not None and top >= vocab:
        problems.append(f"the tokenizer has id {top}, beyond vocab_size {vocab}")
    return problems


def _largest_token_id(model_dir: Path) -> int | None:
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    vocab = data.get("model", {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))  # Unigram: a list of pieces
    ids += [t["id"] for t in data.get("added_tokens", [])]
    return max(ids) if ids else None


def _head_problems(config: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> list[str]:
    has_head = any(n in shapes for n in HEAD_NAMES)
    tied = config.get("tie_word_embeddings")
    if tied is None:
        return ["config.json does not say tie_word_embeddings (vLLM and transformers defaults differ by model)"]
    if tied and has_head:
        return ["tie_word_embeddings is true but the safetensors also hold a separate lm_head.weight"]
    if not tied and not has_head:
        return ["tie_word_embeddings is false but the safetensors hold no lm_head.weight"]
    return []
