"""The one model loader: Hub ids, local folders, GGUF files and aliases; conversion and its cache."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from redwhale.core import source
from redwhale.core.errors import ModelSourceError
from redwhale.core.source import convert, load_model, load_tokenizer, materialize, resolve


def test_resolve_kinds(tmp_path, tied_llama_dir, tiny_gguf):
    assert resolve(str(tied_llama_dir)).kind == "local"
    assert resolve(str(tiny_gguf)).kind == "gguf"
    hub = resolve("HuggingFaceTB/SmolLM2-135M", revision="main")
    assert (hub.kind, hub.revision) == ("hub", "main")
    assert resolve("gpt2").kind == "hub"


@pytest.mark.parametrize("spec", ["./missing-model", "/no/such/folder", "a/b/c", "missing.gguf"])
def test_missing_paths_are_clear_errors(spec):
    with pytest.raises(ModelSourceError, match="not found"):
        resolve(spec)


def test_a_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve(str(tmp_path))


def test_alias_resolves_inside_its_package(tmp_path, monkeypatch, tiny_gguf):
    package = tmp_path / "fake_embedded"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('must not be imported')\n")
    shutil.copy(tiny_gguf, package / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(source.ALIASES, "tiny-alias", ("fake_embedded", "tiny.gguf"))
    monkeypatch.setitem(source.ALIASES, "absent-alias", ("no_such_package_xyz", "x.gguf"))
    monkeypatch.setitem(source.ALIAS_INSTALL, "absent-alias", "pip install no-such-package")
    resolved = resolve("tiny-alias")
    assert resolved.kind == "alias" and resolved.path == package / "tiny.gguf"
    with pytest.raises(ModelSourceError, match="pip install no-such-package"):
        resolve("absent-alias")


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(ModelSourceError, match="not a GGUF file"):
        materialize(resolve(str(bad)), tmp_path / "cache")


def test_truncated_gguf(tmp_path, tiny_gguf):
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelSourceError, match="corrupt or truncated"):
        materialize(resolve(str(cut)), tmp_path / "cache")


def test_hub_id_while_offline_is_one_clear_error(tmp_path):
    with pytest.raises(ModelSourceError, match="Hugging Face Hub: offline"):
        load_model("redwhale-test/no-such-model", cache_dir=tmp_path)


def test_gguf_conversion_is_cached_by_file_hash(tmp_path, tiny_gguf, monkeypatch):
    cache = tmp_path / "cache"
    first = materialize(resolve(str(tiny_gguf)), cache)

    def refuse(*args, **kwargs):
        raise AssertionError("dequantised again although the conversion is cached")

    monkeypatch.setattr(source, "_convert_gguf", refuse)
    assert materialize(resolve(str(tiny_gguf)), cache) == first
    copy = tmp_path / "renamed.gguf"
    shutil.copy(tiny_gguf, copy)
    assert materialize(resolve(str(copy)), cache) == first  # same bytes, same entry


def _greedy(model, tokenizer, prompt="The capital of France is", n=8):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=tokenizer.pad_token_id)[0].tolist()


def test_converted_gguf_loads_without_redwhale_and_generates_the_same(tmp_path, tiny_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    out = convert(str(tiny_gguf), tmp_path / "hf", cache_dir=tmp_path / "cache")
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json"} <= {
        p.name for p in out.iterdir()
    }
    direct = AutoModelForCausalLM.from_pretrained(
        str(tiny_gguf.parent), gguf_file=tiny_gguf.name, quantization_config=GgufConfig(dequantize=True)
    )
    direct_tok = AutoTokenizer.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    expected = _greedy(direct, direct_tok)
    script = textwrap.dedent(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        model = AutoModelForCausalLM.from_pretrained({str(out)!r})
        tok = AutoTokenizer.from_pretrained({str(out)!r})
        ids = tok("The capital of France is", return_tensors="pt").input_ids
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        print(json.dumps(out[0].tolist()))
        """
    )
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert fresh.stdout.strip().splitlines()[-1] == str(expected).replace(" ", "").replace(",", ", ")


def test_local_folder_loads_and_converts(tmp_path, untied_llama_dir):
    model = load_model(str(untied_llama_dir))
    tokenizer = load_tokenizer(str(untied_llama_dir))
    out = convert(str(untied_llama_dir), tmp_path / "copy")
    again = load_model(str(out))
    assert _greedy(model, tokenizer) == _greedy(again, load_tokenizer(str(out)))
    assert not again.config.tie_word_embeddings
    assert (Path(out) / "model.safetensors").is_file()


def test_auto_dtype_is_float32_on_cpu(tied_llama_dir):
    assert load_model(str(tied_llama_dir), device="cpu").dtype == torch.float32
