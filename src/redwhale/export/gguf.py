"""``redwhale model export --format gguf``: a Hugging Face model folder as one GGUF file for llama.cpp and Ollama.

Contract: ``export_gguf(model_dir, out, kind, base_spec)`` writes ``out`` atomically (a temporary file beside it, then
``os.replace``) with the architecture metadata llama.cpp reads (``llama`` or ``qwen2``: sizes, heads, RMS epsilon,
``rope.freq_base`` and RoPE scaling), every tensor (norms and 1-D tensors in F32, 2-D weights as ``kind``), and the
merged tokenizer: vocabulary with token types, merges, special ids, add-BOS/EOS flags that match what the HF tokenizer
does, the chat template, and the pre-tokenizer type of the BASE model. A tied model gets no ``output.weight``
(llama.cpp reuses ``token_embd``). With llama-cpp-python installed, the written file is loaded back and tokenizes a
Korean and an English text to the same ids as the HF tokenizer (``llama_cpp_check``).

Why the pre-tokenizer type comes from the base: llama.cpp names a BPE pre-tokenizer by hashing the ids of a fixed
text (``chkhsh``); appended Korean merges can change those ids, so a merged tokenizer is "not recognized" although its
pre-tokenizer is the base's. We check that the merged tokenizer's pre-tokenizer and normalizer JSON equal the base's,
then name the type from the base: its chkhsh in llama.cpp's table, else the ``tokenizer.ggml.pre`` of the GGUF file it
came from, else (a plain GPT-2 byte-level pre-tokenizer, e.g. a tokenizer trained from scratch) ``gpt-2`` with a
warning, else an error, since llama.cpp would load an unknown type with degraded tokenization.

What the gguf package does and what is written here by hand: gguf-py writes the file (``GGUFWriter``, streamed one
tensor at a time so that an 8B model does not sit in memory), packs Q8_0/BF16 (``gguf.quants.quantize``), maps tensor
names (``get_tensor_name_map``) and reads merges, special ids and the chat template (``SpecialVocab``). Hand-written,
because only llama.cpp's converter script does them and it is not a package: the Q/K row permutation, the token list
and types, the chkhsh table, the per-tensor type rules and the llama3 RoPE factors (all mirroring
``convert_hf_to_gguf.py`` / ``conversion/`` of llama.cpp 0c1e57098).
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors import safe_open

from redwhale.core.errors import ModelSourceError, RedwhaleError
from redwhale.core.source import LoadOptions, load_tokenizer, materialize, resolve
from redwhale.export.gguf_vocab import add_tokenizer, pre_tokenizer_type, token_list
from redwhale.export.llama_cpp import llama_cpp_check
from redwhale.models.info import safetensors_tensors

log = logging.getLogger(__name__)

Q = gguf.GGMLQuantizationType
#: kind -> (type of the 2-D weights, general.file_type)
KINDS: dict[str, tuple[Q, int]] = {
    "f32": (Q.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (Q.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (Q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (Q.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
#: HF model_type -> (llama.cpp architecture, whether q/k rows are permuted into llama.cpp's rotary layout)
ARCHES: dict[str, tuple[gguf.MODEL_ARCH, bool]] = {
    "llama": (gguf.MODEL_ARCH.LLAMA, True),
    "mistral": (gguf.MODEL_ARCH.LLAMA, True),  # llama.cpp's converter registers MistralForCausalLM as LlamaModel
    "qwen2": (gguf.MODEL_ARCH.QWEN2, False),
}


@dataclass(frozen=True)
class Planned:
    """One tensor of the output: where it comes from and how it is written."""

    name: str  # GGUF name
    source: str | None  # HF name (None: computed here, e.g. rope_freqs)
    file: Path | None
    shape: tuple[int, ...]
    qtype: Q
    heads: int | None = None  # q/k rows permuted for this many heads


def export_gguf(
    model_dir: Path,
    out: Path,
    kind: str,
    base_spec: str | None = None,
    load: LoadOptions | None = None,
    check: bool = True,
) -> dict:
    """Write ``model_dir`` as a GGUF file of ``kind`` (f32, f16, bf16, q8_0); see the module docstring."""
    load = load or LoadOptions()
    if kind not in KINDS:
        raise RedwhaleError(f"GGUF type {kind!r} is not supported: choose one of {', '.join(KINDS)}")
    started = time.perf_counter()
    folder = _model_folder(Path(model_dir), load)
    config = _config(folder)
    arch, permute = _arch(config)
    tokenizer = load_tokenizer(str(folder), **load.tokenizer_kwargs())
    pre, how = pre_tokenizer_type(folder, tokenizer, base_spec, load)
    plan = tensor_plan(folder, config, arch, permute, KINDS[kind][0])
    rows = next(p.shape[0] for p in plan if p.name == "token_embd.weight")
    tokens, types = token_list(folder, rows)

    def fill(writer: gguf.GGUFWriter) -> None:
        _add_metadata(writer, folder, config, rows, KINDS[kind][1])
        add_tokenizer(writer, folder, tokenizer, tokens, types, pre)
        for planned in plan:
            writer.add_tensor_info(planned.name, *_byte_layout(planned), raw_dtype=planned.qtype)

    out = Path(out)
    _write_atomic(out, gguf.MODEL_ARCH_NAMES[arch], fill, lambda w: _write_tensors(w, plan, config))
    outcome = llama_cpp_check(out, tokenizer) if check else None
    return {
        "path": str(out),
        "kind": kind,
        "bytes": out.stat().st_size,
        "seconds": round(time.perf_counter() - started, 2),
        "tensors": len(plan),
        "vocab": rows,
        "pre_tokenizer": pre,
        "pre_tokenizer_from": how,
        "llama_cpp_check": outcome,
    }


# --- the model folder and its hyperparameters ---------------------------------------------------------------------


def _model_folder(model_dir: Path, load: LoadOptions) -> Path:
    """A local folder with config.json and safetensors; an alias or .gguf file is materialized first."""
    if not (model_dir / "config.json").is_file():
        model_dir = Path(materialize(resolve(str(model_dir)), load.cache_dir))
        if not model_dir.is_dir():
            raise ModelSourceError(f"{model_dir}: give a local model folder (redwhale model convert makes one)")
    if not _weight_files(model_dir):
        raise ModelSourceError(f"{model_dir} has no *.safetensors weights (re-save it with save_pretrained)")
    return model_dir


def _config(folder: Path) -> dict[str, Any]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if "text_config" in config:  # a multimodal wrapper: the language model's fields are the ones that matter
        config = {**config, **config["text_config"]}
    if config.get("auto_map"):
        raise RedwhaleError(f"{folder}: models with custom code (auto_map) cannot be exported")
    return config


def _arch(config: dict[str, Any]) -> tuple[gguf.MODEL_ARCH, bool]:
    model_type = config.get("model_type")
    if model_type not in ARCHES:
        raise RedwhaleError(f"GGUF export supports {', '.join(ARCHES)} models, not {model_type!r}")
    return ARCHES[model_type]


def _rope(config: dict[str, Any]) -> dict[str, Any]:
    """RoPE parameters in either dialect: transformers 5 ``rope_parameters``, transformers 4 ``rope_theta`` plus
    ``rope_scaling``."""
    rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    if "rope_type" not in rope and "type" in rope:
        rope["rope_type"] = rope["type"]
    rope.setdefault("rope_type", "default")
    return rope


def _head_dim(config: dict[str, Any]) -> int:
    return config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]


def _add_metadata(writer: gguf.GGUFWriter, folder: Path, config: dict[str, Any], rows: int, ftype: int) -> None:
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(folder.name)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config.get("num_key_value_heads", config["num_attention_heads"]))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    rope = _rope(config)
    # llama.cpp defaults to 10000 when this key is missing; SmolLM2 uses 100000, so it is always written
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(_head_dim(config))
    if config.get("head_dim"):
        writer.add_key_length(config["head_dim"])
        writer.add_value_length(config["head_dim"])
    _add_rope_scaling(writer, rope)
    writer.add_vocab_size(rows)
    writer.add_file_type(ftype)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _add_rope_scaling(writer: gguf.GGUFWriter, rope: dict[str, Any]) -> None:
    """The RoPE scalings whose meaning is certain in llama.cpp; anything else is refused rather than approximated."""
    rope_type = rope["rope_type"].lower()
    if rope_type == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope_type not in ("default", "llama3"):  # llama3 is carried by the rope_freqs tensor
        raise RedwhaleError(f"RoPE type {rope_type!r} is not supported by the GGUF export (default, linear, llama3)")


def llama3_rope_factors(config: dict[str, Any]) -> np.ndarray:
    """Per-frequency factors of Llama 3.1's RoPE scaling, as llama.cpp's converter writes them (``rope_freqs``)."""
    rope, dim = _rope(config), _head_dim(config)
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            factors.append(1.0)
        elif wavelen > old / low:
            factors.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


# --- tensors --------------------------------------------------------------------------------------------------------


def _weight_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def _tied(config: dict[str, Any], names: set[str]) -> bool:
    if config.get("tie_word_embeddings", False):
        return True
    if "lm_head.weight" not in names:
        raise ModelSourceError("config.json says the head is untied but there is no lm_head.weight")
    return False


def tensor_plan(folder: Path, config: dict[str, Any], arch: gguf.MODEL_ARCH, permute: bool, target: Q) -> list[Planned]:
    """Every tensor of the output with its GGUF name, shape and type, read from the safetensors headers only."""
    shapes = safetensors_tensors(folder)
    tied = _tied(config, set(shapes))
    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    n_head, n_kv = config["num_attention_heads"], config.get("num_key_value_heads", config["num_attention_heads"])
    plan = []
    for key, (shape, file) in shapes.items():
        if key.endswith("rotary_emb.inv_freq") or (tied and key == "lm_head.weight"):
            continue  # recomputed by llama.cpp / the head is token_embd when tied
        name = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RedwhaleError(f"cannot map tensor {key!r} to a llama.cpp name")
        heads = None
        if permute and key.endswith(("q_proj.weight", "q_proj.bias")):
            heads = n_head
        elif permute and key.endswith(("k_proj.weight", "k_proj.bias")):
            heads = n_kv
        plan.append(Planned(name, key, file, shape, _qtype(name, shape, target), heads))
    if _rope(config)["rope_type"].lower() == "llama3":
        rope_freqs = gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"
        plan.append(Planned(rope_freqs, None, None, (_head_dim(config) // 2,), Q.F32))
    return plan


def _qtype(name: str, shape: tuple[int, ...], target: Q) -> Q:
    """llama.cpp's converter rules: norms, biases and 1-D tensors stay F32; a row length that is not a multiple of the
    block size falls back to F16 (as the converter does on QuantError)."""
    if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(".weight"):
        return Q.F32
    block = gguf.GGML_QUANT_SIZES[target][0]
    return target if shape[-1] % block == 0 else Q.F16


def _byte_layout(planned: Planned) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, numpy dtype, bytes) of the array ``gguf.quants.quantize`` returns for this tensor."""
    if planned.qtype in (Q.F32, Q.F16):
        dtype = np.dtype(np.float32 if planned.qtype == Q.F32 else np.float16)
        return planned.shape, dtype, int(np.prod(planned.shape)) * dtype.itemsize
    shape = gguf.quant_shape_to_byte_shape(planned.shape, planned.qtype)
    return shape, np.dtype(np.uint8), int(np.prod(shape))


def permute_rows(weights: np.ndarray, heads: int) -> np.ndarray:
    """HF's rotate-half layout -> llama.cpp's interleaved rotary layout (``LlamaModel.permute``)."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def _write_tensors(writer: gguf.GGUFWriter, plan: list[Planned], config: dict[str, Any]) -> None:
    """Load, convert and write one tensor at a time, in the order of the tensor infos."""
    handles: dict[Path, Any] = {}
    try:
        for planned in plan:
            if planned.source is None:
                array = llama3_rope_factors(config)
            else:
                if planned.file not in handles:
                    handles[planned.file] = safe_open(str(planned.file), framework="pt")
                tensor = handles[planned.file].get_tensor(planned.source)
                array = tensor.to(torch.float32).numpy()  # bf16 has no numpy dtype
                if planned.heads:
                    array = permute_rows(array, planned.heads)
            writer.write_tensor_data(gguf.quants.quantize(array, planned.qtype))
    finally:
        handles.clear()


def _write_atomic(
    out: Path, arch: str, fill: Callable[[gguf.GGUFWriter], None], tensors: Callable[[gguf.GGUFWriter], None]
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    writer = gguf.GGUFWriter(path=None, arch=arch)
    try:
        fill(writer)
        writer.write_header_to_file(path=tmp)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        tensors(writer)
        writer.close()
        os.replace(tmp, out)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
