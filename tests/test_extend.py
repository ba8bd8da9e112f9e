"""Growing a model to the merged vocabulary, initialising new rows, and bits per byte."""

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import ENGLISH_LINES, KOREAN_LINES, extend_model
from redwhale.config.schema import ExtendSection
from redwhale.core.bpb import _windows, bits_per_byte, bits_per_byte_each
from redwhale.core.errors import DataError, RedwhaleError, TokenizerError
from redwhale.models.adapt import extend_and_compare
from redwhale.models.extend import extend, is_tied, save_extended
from redwhale.models.init import METHODS, bias_direction, decompose, initial_rows


def load(folder):
    return AutoModelForCausalLM.from_pretrained(str(folder)), AutoTokenizer.from_pretrained(str(folder))


@pytest.mark.parametrize("fixture", ["tied_llama_dir", "untied_llama_dir"])
@pytest.mark.parametrize("method", ["random", "mean", "decomposition", "weighted"])
def test_base_rows_are_bit_identical(request, fixture, method, merged_tokenizer_dir):
    model, base_tok = load(request.getfixturevalue(fixture))
    merged = AutoTokenizer.from_pretrained(str(merged_tokenizer_dir))
    embed = model.get_input_embeddings().weight.detach().clone()
    head = model.get_output_embeddings().weight.detach().clone()
    tied = is_tied(model)
    extend(model, base_tok, merged, method, input_norm="init")
    assert model.get_input_embeddings().weight.shape[0] == len(merged)
    assert torch.equal(model.get_input_embeddings().weight[: len(base_tok)], embed)
    assert torch.equal(model.get_output_embeddings().weight[: len(base_tok)], head)
    assert is_tied(model) == tied
    new = model.get_input_embeddings().weight[len(base_tok) :]
    assert torch.isfinite(new).all() and new.abs().sum() > 0


def test_decomposition_formula_on_hand_computed_rows():
    embed = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0], [2.0, -2.0]])
    head = torch.tensor([[0.0, 1.0], [1.0, 1.0], [3.0, 0.0], [-1.0, 5.0]])
    pieces = [[0, 1], [2, 3, 1], []]
    gen = torch.Generator().manual_seed(0)
    e, w = initial_rows("decomposition", embed, head, pieces, 0.02, gen)
    assert torch.allclose(e[0], torch.tensor([0.5, 1.0]))
    assert torch.allclose(e[1], torch.tensor([2.0, 4.0 / 3.0]))
    assert torch.allclose(w[1], torch.tensor([1.0, 2.0]))
    assert torch.allclose(e[2], embed.mean(0))  # a reserved token (no pieces) gets the mean row
    e, w = initial_rows("weighted", embed, head, pieces, 0.02, gen)
    assert torch.allclose(e[1], (embed[2] + 0.5 * embed[3] + 0.25 * embed[1]) / 1.75)
    e, w = initial_rows("eeve", embed, head, pieces, 0.02, gen)
    assert torch.allclose(e[0], torch.tensor([0.5, 1.0])) and torch.allclose(w[1], head[2])
    e, w = initial_rows("mean", embed, head, pieces, 0.02, gen)
    assert torch.allclose(e, embed.mean(0).expand(3, -1)) and torch.allclose(w, head.mean(0).expand(3, -1))
    e, _ = initial_rows("random", embed, None, [[0]] * 2000, 0.02, gen)
    assert abs(e.std().item() - 0.02) < 0.002


def test_pieces_are_the_base_tokenizers_split(bpe_tokenizer_dir, merged_tokenizer_dir):
    base = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    merged = AutoTokenizer.from_pretrained(str(merged_tokenizer_dir))
    new_id = next(i for i in range(len(base), len(merged)) if len(merged.decode([i])) >= 2)
    token = merged.convert_ids_to_tokens(new_id)
    (pieces,) = decompose(base.backend_tokenizer, [token])
    assert len(pieces) >= 2
    assert "".join(base.convert_ids_to_tokens(pieces)) == token
    assert base.decode(pieces) == merged.decode([new_id])


def test_tied_model_keeps_its_tie_and_head_across_save_and_load(tmp_path, tied_llama_dir, merged_tokenizer_dir):
    model, base_tok = load(tied_llama_dir)
    merged = AutoTokenizer.from_pretrained(str(merged_tokenizer_dir))
    report = extend(model, base_tok, merged, "decomposition", input_norm="init")
    save_extended(model, merged, tmp_path / "ext", report)
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ext"))
    assert again.config.vocab_size == len(merged) and again.config.tie_word_embeddings
    assert is_tied(again)
    assert torch.equal(again.get_output_embeddings().weight, model.get_output_embeddings().weight)
    ids = merged(" ".join(KOREAN_LINES[:2]), return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, model(ids).logits, atol=1e-5)


@pytest.mark.parametrize("fixture", ["tied_llama_dir", "untied_llama_dir"])
def test_input_norm_base_scales_new_input_rows_and_keeps_every_output(request, tmp_path, fixture, merged_tokenizer_dir):
    folder = request.getfixturevalue(fixture)
    (model, base_tok), (kept, _) = load(folder), load(folder)
    merged = AutoTokenizer.from_pretrained(str(merged_tokenizer_dir))
    n = len(base_tok)
    extend(kept, base_tok, merged, "decomposition", input_norm="init")
    report = extend(model, base_tok, merged, "decomposition")  # input_norm="base", the default
    assert report["input_norm"]["untied"] == (fixture == "tied_llama_dir") and not is_tied(model)
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    target = embed[:n].norm(dim=1).mean()
    assert torch.allclose(embed[n : len(merged)].norm(dim=1), target.expand(len(merged) - n), rtol=1e-4)
    assert report["input_norm"]["new_mean_norm_before"] < float(target.detach())  # averaged pieces are shorter
    assert torch.equal(embed[:n], kept.get_input_embeddings().weight[:n])
    assert torch.equal(head, kept.get_output_embeddings().weight)  # the head keeps the init's rows, new ones too
    new_rows = embed[n : len(merged)] / embed[n : len(merged)].norm(dim=1, keepdim=True)
    init_rows = kept.get_input_embeddings().weight[n : len(merged)]
    assert torch.allclose(new_rows, init_rows / init_rows.norm(dim=1, keepdim=True), atol=1e-5)  # same directions
    base_ids = base_tok(" ".join(ENGLISH_LINES[:2]), return_tensors="pt").input_ids
    with torch.no_grad():  # on base tokens the model predicts exactly as before
        assert torch.allclose(model(base_ids).logits, kept(base_ids).logits, atol=1e-5)
    save_extended(model, merged, tmp_path / "ext", report)
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "ext"))
    assert not again.config.tie_word_embeddings and not is_tied(again)
    assert torch.equal(again.get_output_embeddings().weight, head) and torch.equal(
        again.get_input_embeddings().weight, embed
    )


def test_input_norm_leaves_random_rows_at_the_models_init_scale(tied_llama_dir, merged_tokenizer_dir):
    model, base_tok = load(tied_llama_dir)
    report = extend(model, base_tok, AutoTokenizer.from_pretrained(str(merged_tokenizer_dir)), "random")
    assert "input_norm" not in report and is_tied(model)
    with pytest.raises(RedwhaleError, match="input_norm must be"):
        extend(model, base_tok, AutoTokenizer.from_pretrained(str(merged_tokenizer_dir)), "mean", input_norm="Base")


def test_untied_head_gets_its_own_rows(tmp_path, untied_llama_dir, merged_tokenizer_dir):
    model, base_tok = load(untied_llama_dir)
    merged = AutoTokenizer.from_pretrained(str(merged_tokenizer_dir))
    extend(model, base_tok, merged, "eeve")
    e = model.get_input_embeddings().weight
    w = model.get_output_embeddings().weight
    assert not is_tied(model) and not torch.equal(e[len(base_tok) :], w[len(base_tok) :])


def test_tokenizer_that_does_not_extend_is_refused(tied_llama_dir, sp_tokenizer_dir):
    model, base_tok = load(tied_llama_dir)
    with pytest.raises(TokenizerError, match="does not extend"):
        extend(model, base_tok, base_tok, "mean")
    with pytest.raises(TokenizerError, match="not a superset"):
        extend(model, base_tok, AutoTokenizer.from_pretrained(str(sp_tokenizer_dir)), "mean")


def test_calibration_improves_the_fit_and_writes_offsets(tied_llama_dir, merged_tokenizer_dir):
    model, base_tok = load(tied_llama_dir)
    merged = AutoTokenizer.from_pretrained(str(merged_tokenizer_dir))
    embed = model.get_input_embeddings().weight.detach().clone()
    report = extend(model, base_tok, merged, "calibrated", calibration_texts=KOREAN_LINES * 2)
    calibration = report["calibration"]
    assert calibration["nll_after"] < calibration["nll_before"]
    assert calibration["positions"] > 50
    assert torch.equal(model.get_input_embeddings().weight[: len(base_tok)], embed[: len(base_tok)])


def test_bias_direction_gives_unit_dot_products():
    torch.manual_seed(0)
    hidden = torch.randn(500, 16) * 0.1 + torch.linspace(1, 3, 16)
    v = bias_direction(hidden, ridge=1e-6)
    dots = hidden @ v
    assert abs(dots.mean().item() - 1.0) < 1e-3 and dots.std().item() < 0.2


def test_windows_score_every_token_once():
    ids = list(range(100, 137))
    windows = _windows(ids, window=10, stride=4)
    scored = [w.ids[p] for w in windows for p in range(w.score_from, len(w.ids))]
    assert scored == ids[1:]
    assert all(len(w.ids) <= 10 for w in windows)
    assert all(w.score_from >= 6 for w in windows[1:])  # every later window keeps 10 - 4 tokens of context


def test_bits_per_byte_of_a_uniform_model_is_exact(tied_llama_dir):
    model, tok = load(tied_llama_dir)
    with torch.no_grad():
        model.get_output_embeddings().weight.zero_()
    texts = KOREAN_LINES[:5] + ENGLISH_LINES[:3]
    result = bits_per_byte(model, tok, texts, window=16, stride=8)
    tokens = sum(len(tok(t, add_special_tokens=False).input_ids) for t in texts)
    expected = tokens * math.log2(model.config.vocab_size) / sum(len(t.encode()) for t in texts)
    assert result.tokens == tokens
    assert result.bits_per_byte == pytest.approx(expected, rel=1e-5)


def test_windowed_scoring_matches_one_pass_when_the_window_is_large(tied_llama_dir):
    model, tok = load(tied_llama_dir)
    texts = [" ".join(ENGLISH_LINES)]
    full = bits_per_byte(model, tok, texts, window=256, stride=128)
    ids = torch.tensor([[tok.bos_token_id] + tok(texts[0], add_special_tokens=False).input_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
    assert full.bits_per_byte == pytest.approx(nll / math.log(2) / len(texts[0].encode()), rel=1e-4)


@pytest.mark.parametrize("init", ["decomposition", "calibrated"])
def test_scoring_the_base_rows_of_an_extended_model_is_the_base_model(
    tmp_path, tied_llama_dir, merged_tokenizer_dir, init
):
    """``bits_per_byte(vocab=base size)`` on an extended model gives the base model's own figure on text the merged
    tokenizer splits into base tokens (English; what ``merge_with_base: auto`` holds English to), and the full softmax
    a different one (the new rows take some probability); text with new tokens in it is an error, not a silent
    wrong figure."""
    base, base_tok = load(tied_llama_dir)
    extended, merged = load(extend_model(tied_llama_dir, merged_tokenizer_dir, tmp_path / "x", init, KOREAN_LINES * 3))
    english = ENGLISH_LINES[:4]
    assert [merged(t).input_ids for t in english] == [base_tok(t).input_ids for t in english]
    want = bits_per_byte(base, base_tok, english, window=16, stride=8).bits_per_byte
    got = bits_per_byte(extended, merged, english, window=16, stride=8, vocab=len(base_tok)).bits_per_byte
    assert got == pytest.approx(want, rel=1e-5)
    whole = bits_per_byte(extended, merged, english, window=16, stride=8).bits_per_byte
    assert whole > want * (1 + 1e-4)
    # both from one forward pass (merge_with_base: auto's reference): the same two figures
    both = bits_per_byte_each(extended, merged, english, window=16, stride=8, vocabs=(None, len(base_tok)))
    assert [b.bits_per_byte for b in both] == pytest.approx([whole, want], rel=1e-5)
    for vocabs in ((len(base_tok),), (None, len(base_tok))):
        with pytest.raises(DataError, match="beyond the first"):
            bits_per_byte_each(extended, merged, KOREAN_LINES[3:6], window=16, stride=8, vocabs=vocabs)


def test_extend_writes_a_folder_transformers_loads_alone(tmp_path, tied_llama_dir, merged_tokenizer_dir):
    section = ExtendSection(init="calibrated", compare=[], calibration_chars=2000)
    extend_and_compare(
        str(tied_llama_dir), merged_tokenizer_dir, section, iter(KOREAN_LINES * 3), [], [], tmp_path / "ext", None
    )
    report = json.loads((tmp_path / "ext" / "init_report.json").read_text())
    assert report["method"] == "calibrated" and report["calibration"]["positions"] > 0
    script = textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM, AutoTokenizer
        m = AutoModelForCausalLM.from_pretrained({str(tmp_path / "ext")!r})
        t = AutoTokenizer.from_pretrained({str(tmp_path / "ext")!r})
        assert m.config.vocab_size == len(t) == {report["merged_vocab"]}
        # input_norm: base (the default) unties the tied model: its head is saved as its own matrix
        assert not m.config.tie_word_embeddings and m.lm_head.weight is not m.model.embed_tokens.weight
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_compare_init_reports_every_method_and_keeps_the_configured_one(tmp_path, tied_llama_dir, merged_tokenizer_dir):
    section = ExtendSection(
        init="decomposition", compare=["random", "mean", "decomposition", "eeve", "calibrated"], calibration_chars=2000
    )
    extend_and_compare(
        str(tied_llama_dir),
        merged_tokenizer_dir,
        section,
        KOREAN_LINES[8:] * 2,
        KOREAN_LINES[:8],
        ENGLISH_LINES[:4],
        tmp_path / "model",
        tmp_path / "cmp",
    )
    result = json.loads((tmp_path / "cmp" / "compare_init.json").read_text())
    rows = result["rows"]
    assert set(rows) == {"base", "random", "mean", "decomposition", "eeve", "calibrated"}
    assert "skipped" in rows["eeve"]  # tied head
    assert rows["decomposition"]["korean_tokens"] < rows["base"]["korean_tokens"]
    assert (tmp_path / "cmp" / "compare_init.md").read_text().count("|") > 20
    saved = json.loads((tmp_path / "model" / "init_report.json").read_text())
    assert saved["method"] == "decomposition"  # the comparison's own model, not a second initialisation


def test_every_registered_method_has_rows_of_the_right_shape():
    embed, head = torch.randn(10, 4), torch.randn(10, 4)
    for name, method in METHODS.items():
        new_in, new_out = method.rows(embed, head, [[1, 2], [3]], 0.02, torch.Generator().manual_seed(0))
        assert new_in.shape == (2, 4) and new_out.shape == (2, 4), name


def test_offset_fit_reaches_the_maximum_likelihood():
    from redwhale.models.init import fit_offsets, offset_features

    generator = torch.Generator().manual_seed(0)
    base, new, dim, positions = 300, 700, 16, 400
    hidden = torch.randn(positions, dim, generator=generator) + 1.0
    head = torch.randn(base + new, dim, generator=generator) * 0.3
    head[base:] -= 2.0 * hidden.mean(0) / hidden.mean(0).norm() ** 2  # new tokens start far too unlikely
    counts = torch.randint(0, 500, (new,), generator=generator)
    pieces = [[0] * int(k) for k in torch.randint(1, 6, (new,), generator=generator)]
    features = offset_features(counts, pieces)
    targets = torch.randint(0, base + new, (positions,), generator=generator)
    theta, before, after = fit_offsets(hidden, targets, head, base, features)

    def nll(theta):  # the likelihood written plainly, for autograd
        logits = hidden @ head.T
        logits = torch.cat([logits[:, :base], logits[:, base:] + features @ theta], 1)
        return torch.nn.functional.cross_entropy(logits, targets)

    point = theta.clone().requires_grad_(True)
    loss = nll(point)
    loss.backward()
    assert after < before and abs(float(loss) - after) < 1e-4 and abs(before - float(nll(torch.zeros(3)))) < 1e-4
    assert point.grad.norm() < 1e-3  # a stationary point of a convex function: the maximum likelihood
