"""After the adaptation: GGUF export (round trip through transformers, metadata llama.cpp reads, pre-tokenizer type
from the base, atomic writes), the chat vector (which rows move and by exactly how much) and the vLLM check.

The llama.cpp test needs llama-cpp-python (optional extra ``llama``, compiled from source) and is skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import ENGLISH_LINES, KOREAN_LINES, extend_model, make_tiny_llama, perturb_model
from redwhale.cli import main
from redwhale.core.errors import ModelSourceError, RedwhaleError
from redwhale.export import gguf as gguf_module
from redwhale.export import gguf_vocab as export_gguf_module
from redwhale.export.chat_vector import apply_chat_vector
from redwhale.export.gguf import export_gguf, permute_rows
from redwhale.export.gguf_vocab import chkhsh
from redwhale.export.llama_cpp import hf_greedy, llama_greedy, open_llama
from redwhale.export.vllm import check_vllm

TEXTS = [KOREAN_LINES[1] + " " + KOREAN_LINES[4], ENGLISH_LINES[3] + " " + ENGLISH_LINES[2]]
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _load_gguf(path: Path):
    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def _fields(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {name: field.contents() for name, field in reader.fields.items()}, {t.name: t for t in reader.tensors}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, extended_tied_dir, extended_untied_dir, tied_llama_dir):
    """The tiny extended models as GGUF files: tied f32, untied f16 and q8_0."""
    out = tmp_path_factory.mktemp("gguf")
    files = {}
    for key, model, kind in [("tied-f32", extended_tied_dir, "f32"), ("untied-f16", extended_untied_dir, "f16")]:
        files[key] = export_gguf(model, out / f"{key}.gguf", kind, str(tied_llama_dir), check=False)
    files["untied-q8_0"] = export_gguf(extended_untied_dir, out / "untied-q8_0.gguf", "q8_0", str(tied_llama_dir))
    return files


@pytest.mark.parametrize(
    ("key", "source", "atol"),
    [("tied-f32", "extended_tied_dir", 1e-5), ("untied-f16", "extended_untied_dir", 3e-3)],
)
def test_gguf_round_trip_through_transformers(exported, key, source, atol, request):
    """Names, Q/K permutation and tokenizer are right: transformers reads the file back to the same logits and ids."""
    folder = request.getfixturevalue(source)
    reference = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    model, back = _load_gguf(Path(exported[key]["path"]))
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert back(text, add_special_tokens=False).input_ids == ids
        assert max(ids) >= 567 or text.isascii()  # the Korean text uses the new vocabulary rows
        torch.testing.assert_close(_logits(model, ids), _logits(reference, ids), atol=atol, rtol=0)


def test_gguf_q8_0_round_trip_is_close(exported, extended_untied_dir):
    reference = AutoModelForCausalLM.from_pretrained(str(extended_untied_dir), dtype=torch.float32)
    model, _ = _load_gguf(Path(exported["untied-q8_0"]["path"]))
    ids = AutoTokenizer.from_pretrained(str(extended_untied_dir))(TEXTS[0]).input_ids
    a, b = _logits(model, ids), _logits(reference, ids)
    assert (a - b).abs().max() < 0.05 * b.abs().max()
    assert exported["untied-q8_0"]["bytes"] < 0.6 * exported["untied-f16"]["bytes"]


def test_gguf_metadata_is_what_llama_cpp_reads(exported, extended_tied_dir):
    config = json.loads((extended_tied_dir / "config.json").read_text())
    tok = json.loads((extended_tied_dir / "tokenizer.json").read_text())
    rows = config["vocab_size"]
    fields, tensors = _fields(Path(exported["tied-f32"]["path"]))
    assert fields["general.architecture"] == "llama" and fields["general.file_type"] == 0
    assert fields["llama.block_count"] == 2 and fields["llama.embedding_length"] == 64
    assert fields["llama.attention.head_count"] == 4 and fields["llama.attention.head_count_kv"] == 2
    assert fields["llama.rope.freq_base"] == pytest.approx(10000.0)
    assert fields["llama.vocab_size"] == rows == exported["tied-f32"]["vocab"]
    assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert len(fields["tokenizer.ggml.tokens"]) == rows
    assert len(fields["tokenizer.ggml.merges"]) == len(tok["model"]["merges"])
    assert fields["tokenizer.ggml.add_bos_token"] is False and fields["tokenizer.ggml.add_eos_token"] is False
    assert fields["tokenizer.ggml.eos_token_id"] == config["eos_token_id"]
    assert "im_start" in fields["tokenizer.chat_template"]
    types = fields["tokenizer.ggml.token_type"]
    reserved = [t["id"] for t in tok["added_tokens"] if t["content"].startswith("<|redwhale_reserved")]
    assert reserved and all(types[i] == gguf.TokenType.CONTROL for i in reserved)
    added = {t["id"] for t in tok["added_tokens"]}
    assert all(types[i] == gguf.TokenType.NORMAL for i in tok["model"]["vocab"].values() if i not in added)
    assert "output.weight" not in tensors  # tied: llama.cpp reuses token_embd
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    weights = load_file(str(extended_tied_dir / "model.safetensors"))
    q = weights["model.layers.0.self_attn.q_proj.weight"].numpy()
    np.testing.assert_array_equal(tensors["blk.0.attn_q.weight"].data, permute_rows(q, 4))
    _, untied = _fields(Path(exported["untied-q8_0"]["path"]))
    assert untied["output.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert untied["blk.1.ffn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32


def test_qwen2_round_trip_keeps_biases_and_rows(tmp_path, monkeypatch, bpe_tokenizer_dir):
    """A Qwen2 (q/k/v biases, no Q/K permutation in llama.cpp) reads back to the same logits."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    config.update({"num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256})
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.5)  # zero biases would hide a wrong mapping
    model.save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    qwen_tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "qwen"))  # transformers gives it Qwen's regex
    monkeypatch.setitem(export_gguf_module.KNOWN_PRE, chkhsh(qwen_tokenizer), "qwen2")
    result = export_gguf(tmp_path / "qwen", tmp_path / "qwen.gguf", "f32", None, check=False)
    assert result["pre_tokenizer"] == "qwen2"
    fields, tensors = _fields(tmp_path / "qwen.gguf")
    assert fields["general.architecture"] == "qwen2" and "blk.0.attn_q.bias" in tensors
    back, _ = _load_gguf(tmp_path / "qwen.gguf")
    ids = qwen_tokenizer(TEXTS[1]).input_ids
    torch.testing.assert_close(_logits(back, ids), _logits(model, ids), atol=1e-5, rtol=0)


def test_pre_tokenizer_type_comes_from_the_base(tmp_path, monkeypatch, extended_tied_dir, tied_llama_dir):
    """The base's chkhsh names the type (llama.cpp's table, here patched to know the tiny base)."""
    base = AutoTokenizer.from_pretrained(str(tied_llama_dir))
    monkeypatch.setitem(export_gguf_module.KNOWN_PRE, chkhsh(base), "smollm")
    result = export_gguf(extended_tied_dir, tmp_path / "m.gguf", "f16", str(tied_llama_dir), check=False)
    assert result["pre_tokenizer"] == "smollm" and "chkhsh" in result["pre_tokenizer_from"]
    assert _fields(tmp_path / "m.gguf")[0]["tokenizer.ggml.pre"] == "smollm"


def test_pre_tokenizer_type_from_the_base_gguf_file(tmp_path, tiny_gguf, tied_llama_dir):
    """A base given as a .gguf file: its own tokenizer.ggml.pre is used when the chkhsh is unknown."""
    result = export_gguf(tied_llama_dir, tmp_path / "m.gguf", "f16", str(tiny_gguf), check=False)
    expected = _fields(tiny_gguf)[0]["tokenizer.ggml.pre"]
    assert result["pre_tokenizer"] == expected and "GGUF" in result["pre_tokenizer_from"]


def test_a_different_pre_tokenizer_is_refused(tmp_path, extended_tied_dir, bpe_tokenizer_dir):
    other = tmp_path / "other-base"
    shutil.copytree(bpe_tokenizer_dir, other)
    data = json.loads((other / "tokenizer.json").read_text())
    data["pre_tokenizer"]["add_prefix_space"] = True
    (other / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(RedwhaleError, match="pre_tokenizer differs"):
        export_gguf(extended_tied_dir, tmp_path / "m.gguf", "f16", str(other), check=False)
    assert not (tmp_path / "m.gguf").exists()


def test_export_is_atomic(tmp_path, monkeypatch, extended_tied_dir, tied_llama_dir):
    out = tmp_path / "m.gguf"
    out.write_bytes(b"previous")
    with pytest.raises(RedwhaleError, match="not supported"):
        export_gguf(extended_tied_dir, out, "q4_k", str(tied_llama_dir))

    def fail(writer, plan, config):
        writer.write_tensor_data(np.zeros(plan[0].shape, np.float16))
        raise RuntimeError("disk full")

    monkeypatch.setattr(gguf_module, "_write_tensors", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        export_gguf(extended_tied_dir, out, "f16", str(tied_llama_dir), check=False)
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.gguf"]


def test_cli_export_and_chat_vector(tmp_path, capsys, extended_tied_dir, tied_llama_dir):
    out = tmp_path / "m.gguf"
    args = ["model", "export", str(extended_tied_dir), "--out", str(out), "--quant", "q8_0"]
    assert main([*args, "--base", str(tied_llama_dir), "--no-check"]) == 0
    assert "wrote" in capsys.readouterr().out and out.stat().st_size > 0
    code = main(
        ["model", "chat-vector", "--base", str(tied_llama_dir), "--instruct", str(tied_llama_dir)]
        + ["--adapted", str(extended_tied_dir), "--out", str(tmp_path / "cv")]
    )
    assert code == 0 and "tensors moved" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed (optional extra 'llama')")
def test_llama_cpp_matches_transformers(exported, extended_tied_dir):
    """A real llama.cpp: same tokenizer ids, and the same greedy continuation as transformers (f32 file)."""
    path = Path(exported["tied-f32"]["path"])
    assert exported["untied-q8_0"]["llama_cpp_check"] == "tokenizer ids equal on 2 texts"
    model = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(extended_tied_dir))
    llm = open_llama(path, n_ctx=256, logits_all=True, n_threads=1, seed=0)
    for text in TEXTS:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == ids
        assert llama_greedy(llm, ids[:8], 12) == hf_greedy(model, ids[:8], 12)
    llm.close()


# --- chat vector --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instruct_dirs(tmp_path_factory, tied_llama_dir, untied_llama_dir):
    out = tmp_path_factory.mktemp("instruct")
    return {
        "tied": perturb_model(tied_llama_dir, out / "tied", seed=3),
        "untied": perturb_model(untied_llama_dir, out / "untied", seed=4),
    }


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("tied", [True, False])
def test_chat_vector_moves_base_rows_by_exactly_the_difference(tmp_path, request, instruct_dirs, tied):
    base_dir = request.getfixturevalue("tied_llama_dir" if tied else "untied_llama_dir")
    adapted_dir = request.getfixturevalue("extended_tied_dir" if tied else "extended_untied_dir")
    instruct_dir = instruct_dirs["tied" if tied else "untied"]
    base_vocab = json.loads((adapted_dir / "init_report.json").read_text())["base_vocab"]
    result = apply_chat_vector(str(base_dir), str(instruct_dir), adapted_dir, tmp_path / "cv", scale=0.5)
    base, instruct, adapted = _weights(base_dir), _weights(instruct_dir), _weights(adapted_dir)
    out = _weights(tmp_path / "cv")
    assert set(out) == set(adapted) and ("lm_head.weight" in out) is not tied
    for name, value in out.items():
        expected = adapted[name].clone()
        expected[: base[name].shape[0]] += 0.5 * (instruct[name] - base[name])
        torch.testing.assert_close(value, expected, atol=1e-7, rtol=0)
        if value.shape != base[name].shape:  # a grown embedding / head: the new rows did not move at all
            assert value.shape[0] > base_vocab == base[name].shape[0]
            assert torch.equal(value[base_vocab:], adapted[name][base_vocab:])
            assert (value[:base_vocab] != adapted[name][:base_vocab]).any(dim=1).all()
    rows = out["model.embed_tokens.weight"].shape[0]
    assert result["new_rows"] == rows - base_vocab and result["tensors"] == len(out) and result["scale"] == 0.5
    assert result["note"] and result["out"] == str(tmp_path / "cv")
    record = json.loads((tmp_path / "cv" / "chat_vector.json").read_text())
    assert record["base_vocab"] == base_vocab and record["tied"] is tied
    assert (tmp_path / "cv" / "tokenizer.json").read_bytes() == (adapted_dir / "tokenizer.json").read_bytes()
    assert check_vllm(tmp_path / "cv") == []


def test_chat_vector_tied_model_moves_its_head_once(tmp_path, instruct_dirs, tied_llama_dir, extended_tied_dir):
    apply_chat_vector(str(tied_llama_dir), str(instruct_dirs["tied"]), extended_tied_dir, tmp_path / "cv", 1.0)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "cv"), dtype=torch.float32)
    base, instruct = _weights(tied_llama_dir), _weights(instruct_dirs["tied"])
    adapted = _weights(extended_tied_dir)["model.embed_tokens.weight"]
    head = model.get_output_embeddings().weight
    assert head.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    diff = instruct["model.embed_tokens.weight"] - base["model.embed_tokens.weight"]
    torch.testing.assert_close(head[: diff.shape[0]] - adapted[: diff.shape[0]], diff, atol=1e-6, rtol=0)


def test_chat_vector_on_a_tied_base_and_an_adaptation_untied_by_input_norm(
    tmp_path, instruct_dirs, tied_llama_dir, merged_tokenizer_dir
):
    """``extend.input_norm: base`` (the default) unties a tied base: the head's base rows get the difference of the
    tied matrices, as the embedding's do, and the new rows of both stay as adapted."""
    adapted_dir = extend_model(tied_llama_dir, merged_tokenizer_dir, tmp_path / "ext", input_norm="base")
    apply_chat_vector(str(tied_llama_dir), str(instruct_dirs["tied"]), adapted_dir, tmp_path / "cv", 0.5)
    base, instruct = _weights(tied_llama_dir), _weights(instruct_dirs["tied"])
    adapted, out = _weights(adapted_dir), _weights(tmp_path / "cv")
    diff = instruct["model.embed_tokens.weight"] - base["model.embed_tokens.weight"]
    n = diff.shape[0]
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        torch.testing.assert_close(out[name][:n], adapted[name][:n] + 0.5 * diff, atol=1e-6, rtol=0)
        assert torch.equal(out[name][n:], adapted[name][n:])
    assert not torch.equal(out["model.embed_tokens.weight"][n:], out["lm_head.weight"][n:])
    assert check_vllm(tmp_path / "cv") == []


def test_chat_vector_refuses_mismatched_models(tmp_path, tied_llama_dir, extended_tied_dir, bpe_tokenizer_dir):
    deeper = make_tiny_llama(tmp_path / "deeper", bpe_tokenizer_dir, tied=True, layers=3)
    with pytest.raises(ModelSourceError, match="num_hidden_layers differs"):
        apply_chat_vector(str(tied_llama_dir), str(deeper), extended_tied_dir, tmp_path / "cv")
    assert not (tmp_path / "cv").exists()


# --- vLLM ---------------------------------------------------------------------------------------------------------


def _broken_copy(src: Path, dst: Path, config: dict | None = None, weights=None) -> Path:
    shutil.copytree(src, dst)
    if config:
        data = json.loads((dst / "config.json").read_text())
        (dst / "config.json").write_text(json.dumps({**data, **config}))
    if weights:
        tensors = weights(load_file(str(dst / "model.safetensors")))
        save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_check_vllm_accepts_saved_models(extended_tied_dir, extended_untied_dir):
    assert check_vllm(extended_tied_dir) == [] and check_vllm(extended_untied_dir) == []


def test_check_vllm_names_each_problem(tmp_path, extended_tied_dir, extended_untied_dir):
    def add_head(w):
        return {**w, "lm_head.weight": w["model.embed_tokens.weight"].clone()}

    def drop_head(w):
        return {k: v for k, v in w.items() if k != "lm_head.weight"}

    cases = {
        "auto_map": (extended_tied_dir, {"auto_map": {"AutoModelForCausalLM": "modeling.MyLlama"}}, None),
        "not a transformers class": (extended_tied_dir, {"architectures": ["MyLlamaForCausalLM"]}, None),
        "embedding has": (extended_tied_dir, {"vocab_size": 1024}, None),
        "separate lm_head": (extended_tied_dir, None, add_head),
        "no lm_head": (extended_untied_dir, None, drop_head),
    }
    for i, (needle, (src, config, weights)) in enumerate(cases.items()):
        problems = check_vllm(_broken_copy(src, tmp_path / str(i), config, weights))
        assert any(needle in p for p in problems), (needle, problems)
