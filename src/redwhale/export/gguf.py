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
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from safetensors import safe_open

from redwhale.core.errors import ModelSourceError, RedwhaleError, missing_extra
from redwhale.core.source import LoadOptions, load_tokenizer, materialize, resolve

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

# llama.cpp's check text, copied byte for byte from conversion/base.py (get_vocab_base_pre).
CHKTXT = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n🚀 (normal) 😶\u200d🌫️ (multiple emojis concatenated) ✅ 🦙🦙 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 កាន់តែពិសេសអាច😁 ?我想在apple工作1314151天～ ------======= нещо на Български ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL"  # noqa: E501
#: chkhsh -> tokenizer.ggml.pre, from llama.cpp's table (conversion/base.py): the decoder families one adapts.
KNOWN_PRE = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",
    "d353350c764d8c3b39c763113960e4fb4919bea5fbf208a0e3b22e8469dc7406": "llama4",
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",
    "0fe1cf6eda062318a1af7270f3331a85c539a01778ff948e24388e949c5282f4": "gpt-2",
    "63b97e4253352e6f357cc59ea5b583e3a680eaeaf2632188c2b952de2588485e": "tekken",
    "35d91631860c815f952d711435f48d356ebac988362536bed955d43bfa436e34": "starcoder",
    "049ecf7629871e3041641907f3de7c733e4dbfdc736f57d882ba0b0845599754": "deepseek-llm",
    "347715f544604f9118bb75ed199f68779f423cabb20db6de6f31b908d04d7821": "deepseek-coder",
    "877081d19cf6996e2c4ff0e1236341e9b7bde288f5311a56a937f0afbbb3aeb5": "deepseek-v3",
    "b3f499bb4255f8ca19fccd664443283318f2fd2414d5e0b040fbdd0cc195d6c5": "deepseek-r1-qwen",
    "8aeee3860c56296a157a1fe2fad249ec40aa59b1bb5709f4ade11c4e6fe652ed": "falcon",
    "9d032fcbd5501f4a38150912590928bfb36091efb5df11b8e2124b0390e3fb1e": "falcon3",
    "b6dc8df998e1cfbdc4eac8243701a65afe638679230920b50d6f17d81c098166": "olmo",
    "32d85c31273f8019248f2559fed492d929ea28b17e51d81d3bb36fff23ca72b3": "stablelm2",
    "9c2227e4dd922002fb81bde4fc02b0483ca4f12911410dee2255e4987644e3f8": "command-r",
    "fcace8b9cac38ce847670c970cd5892031a753a1ef381abd1d9af00f713da085": "phi-2",
    "3c30d3ad1d6b64202cd222813e7736c2db6e1bd6d67197090fc1211fbc612ae7": "bloom",
    "ccc2ef013c104be7bae2965776d611e1d7a8a2a9c547dd93a682c9a9fc80352e": "gpt-4o",
    "c136ed14d01c2745d4f60a9596ae66800e2b61fa45643e72436041855ad4089d": "smaug-bpe",
    # Korean-first bases
    "4e2b24cc4770243d65a2c9ec19770a72f08cffc161adbb73fcbb6b7dd45a0aae": "exaone",
    "2085e1638f6c377a0aa4ead21b27bb4cb941bf800df86ed391011769c1758dfb": "exaone4",
    "1994ffd01900cfb37395608534236ecd63f2bd5995d6cb1004dda1af50240f15": "trillion",
    "b0a6b1c0bd5998ebd9df08611efde34a4ff03faed45ae09c43e6b31ebd4b94cf": "a.x-4.0",
    "f6791d196f87ce6b56a7d234be618e0d58f8cda3549416635b2bebcd22cd95c4": "midm-2.0",
    "4a2e2abae11ca2b86d570fc5b44be4d5eb5e72cc8f22dd136a94b37da83ab665": "kormo",
    "e4d54df1ebc1f2b91acd986c5b51aa50837d5faf7c7398e73c1f9e9ee5d19869": "kanana2",
}
#: A plain GPT-2 byte-level pre-tokenizer (what ``tokenizers`` trains by default) splits like llama.cpp's ``gpt-2``
#: regex (trim_offsets only changes offsets, not the split, so it is not compared).
GPT2_BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}

CHECK_TEXTS = {
    "Korean": "대한민국의 주권은 국민에게 있고, 모든 권력은 국민으로부터 나온다. 2024년 3월 1일.",
    "English": "The quick brown fox jumps over the lazy dog; it's 3.14 miles away.\n  def f(x): return x",
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
        _add_tokenizer(writer, folder, tokenizer, tokens, types, pre)
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
    shapes: dict[str, tuple[tuple[int, ...], Path]] = {}
    for file in _weight_files(folder):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (a safe_open handle is not iterable)
                shapes[key] = (tuple(handle.get_slice(key).get_shape()), file)
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


# --- tokenizer ------------------------------------------------------------------------------------------------------


def _tokenizer_json(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise RedwhaleError(f"{folder} has no tokenizer.json: only fast (tokenizers) tokenizers are exported")
    data = json.loads(path.read_text(encoding="utf-8"))
    if data["model"].get("type") != "BPE" or "ByteLevel" not in json.dumps(data.get("pre_tokenizer")):
        raise RedwhaleError(
            f"{folder}: the GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, SmolLM, Qwen); "
            "SentencePiece tokenizers are not supported yet"
        )
    return data


def looks_special(token: str) -> bool:
    """llama.cpp converter's ``does_token_look_special``."""
    seps = token.startswith("<|") and token.endswith("|>") or token.startswith("<｜") and token.endswith("｜>")
    return seps or token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or token.startswith("<unused")


def token_list(folder: Path, rows: int) -> tuple[list[str], list[int]]:
    """Tokens and llama.cpp token types for ids 0..rows-1: vocab entries NORMAL (byte-level spelling), special added
    tokens CONTROL, other added tokens USER_DEFINED (raw text), ids without a token ``[PAD{i}]`` UNUSED."""
    data = _tokenizer_json(folder)
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in data["model"]["vocab"].items()}
    for added in data.get("added_tokens", []):
        special = added.get("special") or looks_special(added["content"])
        by_id[added["id"]] = (added["content"], gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
    if by_id and max(by_id) >= rows:
        raise RedwhaleError(f"the tokenizer has ids up to {max(by_id)} but the embedding only {rows} rows")
    tokens, types = [], []
    for i in range(rows):
        token, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(token)
        types.append(int(kind))
    if len(set(tokens)) != len(tokens):  # llama.cpp asserts id_to_token.size() == token_to_id.size() on load
        seen: set[str] = set()
        dup = next(t for t in tokens if t in seen or seen.add(t))
        raise RedwhaleError(f"the token {dup!r} appears twice in the vocabulary; llama.cpp would refuse the file")
    return tokens, types


def _adds_special(tokenizer) -> tuple[bool, bool]:
    """Whether the HF tokenizer puts BOS in front / EOS at the end of a plain encode, so llama.cpp does the same."""
    plain = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    add_bos = bos is not None and len(full) > len(plain) and full[0] == bos
    add_eos = eos is not None and len(full) > len(plain) and full[-1] == eos
    return add_bos, add_eos


def _add_tokenizer(writer: gguf.GGUFWriter, folder: Path, tokenizer, tokens: list[str], types: list[int], pre: str):
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=len(tokens))
    if not special.merges:
        raise RedwhaleError(f"{folder}/tokenizer.json has no merges; llama.cpp cannot load a BPE vocabulary without")
    # Written explicitly from what the HF tokenizer does: when the key is missing Ollama adds a BOS (its default is
    # true) and the SmolLM special case of llama.cpp's converter keys on a vocabulary of exactly 49152.
    add_bos, add_eos = _adds_special(tokenizer)
    special.add_special_token.update(bos=add_bos, eos=add_eos)
    if special.chat_template is None and getattr(tokenizer, "chat_template", None):
        special.chat_template = tokenizer.chat_template  # older gguf-py does not read chat_template.jinja
    config = (
        json.loads((folder / "tokenizer_config.json").read_text())
        if (folder / "tokenizer_config.json").is_file()
        else {}
    )
    if isinstance(config.get("add_prefix_space"), bool):
        writer.add_add_space_prefix(config["add_prefix_space"])
    special.add_to_gguf(writer, quiet=True)


def chkhsh(tokenizer) -> str:
    """llama.cpp's pre-tokenizer fingerprint: SHA-256 of the ids of CHKTXT (``encode`` with its default specials)."""
    return sha256(str(tokenizer.encode(CHKTXT)).encode()).hexdigest()


def _backend_json(tokenizer) -> dict[str, Any]:
    return json.loads(tokenizer.backend_tokenizer.to_str())


def pre_tokenizer_type(folder: Path, tokenizer, base_spec: str | None, load: LoadOptions) -> tuple[str, str]:
    """(tokenizer.ggml.pre, how it was found) for the model in ``folder``, taken from the base (see module doc)."""
    _tokenizer_json(folder)  # refuse other kinds of tokenizer before anything is hashed
    base = tokenizer if base_spec is None else load_tokenizer(base_spec, **load.tokenizer_kwargs())
    mine, theirs = _backend_json(tokenizer), _backend_json(base)
    for part in ("pre_tokenizer", "normalizer"):
        if mine.get(part) != theirs.get(part):
            raise RedwhaleError(
                f"the model's tokenizer {part} differs from the base's ({base_spec}): its pre-tokenizer type cannot "
                "be taken from the base"
            )
    digest = chkhsh(base)
    if digest in KNOWN_PRE:
        return KNOWN_PRE[digest], f"chkhsh of the base tokenizer ({digest[:12]})"
    from_file = _pre_from_gguf_source(base_spec or str(folder))
    if from_file:
        return from_file, "tokenizer.ggml.pre of the base's GGUF file"
    plain = {k: v for k, v in (theirs.get("pre_tokenizer") or {}).items() if k != "trim_offsets"}
    if plain == GPT2_BYTELEVEL and theirs.get("normalizer") is None:
        log.warning("unknown BPE pre-tokenizer (chkhsh %s); it is plain GPT-2 byte-level, so writing 'gpt-2'", digest)
        return "gpt-2", "plain GPT-2 byte-level pre-tokenizer (chkhsh unknown to llama.cpp)"
    raise RedwhaleError(
        f"the base tokenizer's pre-tokenizer is unknown to llama.cpp (chkhsh {digest}); add it to KNOWN_PRE in "
        "redwhale/export/gguf.py with the name llama.cpp's convert_hf_to_gguf_update.py gives it"
    )


def _pre_from_gguf_source(spec: str) -> str | None:
    """``tokenizer.ggml.pre`` of the GGUF file a spec is (alias, .gguf) or was converted from (redwhale_source.json)."""
    try:
        source = resolve(spec)
    except ModelSourceError:
        return None
    path = source.path if source.kind in ("alias", "gguf") else None
    record = source.path / "redwhale_source.json" if source.kind == "local" and source.path else None
    if record is not None and record.is_file():
        path = Path(json.loads(record.read_text()).get("gguf_file", ""))
    if path is None or not path.is_file():
        return None
    field = gguf.GGUFReader(path).fields.get("tokenizer.ggml.pre")
    return str(field.contents()) if field is not None else None


# --- llama.cpp ------------------------------------------------------------------------------------------------------


def open_llama(path: Path, **kwargs):
    """A ``llama_cpp.Llama`` on ``path`` (quiet); llama-cpp-python is the optional extra ``llama``."""
    try:
        from llama_cpp import Llama
    except ImportError:
        raise missing_extra("llama-cpp-python", "llama") from None
    return Llama(model_path=str(path), verbose=False, **kwargs)


def llama_tokenize(llm, text: str) -> list[int]:
    """Raw-text ids (no BOS, specials not parsed), as ``tokenizer(text, add_special_tokens=False)``."""
    return llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)


def llama_greedy(llm, prompt: list[int], max_new: int) -> list[int]:
    """Greedy continuation by argmax over llama.cpp's logits (needs ``logits_all=True``); no stop token, so the ids
    compare one for one with :func:`hf_greedy`."""
    llm.reset()
    llm.eval(prompt)
    out: list[int] = []
    while len(out) < max_new:
        out.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        if len(out) < max_new:
            llm.eval([out[-1]])
    return out


def hf_greedy(model, prompt: list[int], max_new: int) -> list[int]:
    """Greedy continuation by argmax over transformers' logits with its KV cache: no logits processors (generate()
    would mask EOS under min_new_tokens), so the ids compare one for one with :func:`llama_greedy`."""
    out: list[int] = []
    past, step = None, torch.tensor([prompt])
    with torch.no_grad():
        while len(out) < max_new:
            result = model(step, past_key_values=past, use_cache=True)
            past = result.past_key_values
            out.append(int(result.logits[0, -1].argmax()))
            step = torch.tensor([[out[-1]]])
    return out


def llama_cpp_check(path: Path, tokenizer, texts: dict[str, str] | None = None) -> str | None:
    """Load ``path`` with llama.cpp (vocabulary only) and compare its token ids with the HF tokenizer's; None when
    llama-cpp-python is not installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return None
    try:
        llm = open_llama(path, vocab_only=True)
    except Exception as exc:  # llama_cpp raises ValueError("Failed to load model ...") and friends
        return f"llama.cpp could not load the file: {exc}"
    texts = texts or CHECK_TEXTS
    for label, text in texts.items():
        ours, hf = llama_tokenize(llm, text), tokenizer(text, add_special_tokens=False).input_ids
        if ours != hf:
            at = next((i for i, (a, b) in enumerate(zip(ours, hf, strict=False)) if a != b), min(len(ours), len(hf)))
            return f"tokenizer ids differ on the {label} text at token {at} ({len(ours)} vs {len(hf)} ids)"
    return f"tokenizer ids equal on {len(texts)} texts"
