"""Models whose logits are not their LM head's output (Cohere's logit_scale, Granite's logits_scaling, remote code
that scales them its own way): bits per byte and the training loss follow the model's own logits."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    CohereConfig,
    CohereForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from helpers import ENGLISH_LINES, KOREAN_LINES
from redwhale.config.schema import StageSection, Trainable, TrainSection
from redwhale.core.bpb import bits_per_byte, document_windows, head_matches_model, logit_scale
from redwhale.models.init import calibrate
from redwhale.train.loss import CausalLMLoss, ChunkedLinearCrossEntropy, fused_loss_supported
from redwhale.train.precision import resolve_precision
from redwhale.train.run import train_schedule

SHAPE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


class ScalesItsLogits(LlamaForCausalLM):
    """Remote code that multiplies its logits by 3 after the head, under no name its config gives."""

    def forward(self, input_ids=None, labels=None, **kwargs):
        out = super().forward(input_ids=input_ids, **kwargs)
        out.logits = out.logits * 3.0
        if labels is not None:
            out.loss = self.loss_function(out.logits, labels, vocab_size=self.config.vocab_size)
        return out


def scaled_model(kind: str, vocab: int, tied: bool = True) -> torch.nn.Module:
    """A tiny random model of ``kind``: Granite dividing its logits by 4, Cohere multiplying them by 0.25, or
    :class:`ScalesItsLogits`."""
    torch.manual_seed(0)
    shape = {**SHAPE, "vocab_size": vocab, "tie_word_embeddings": tied}
    if kind == "cohere":
        return CohereForCausalLM(CohereConfig(logit_scale=0.25, **shape))
    if kind == "granite":
        return GraniteForCausalLM(GraniteConfig(logits_scaling=4.0, **shape))
    return ScalesItsLogits(LlamaConfig(**shape))


def own_nll_bits(model, ids: list[int]) -> float:
    """The model's own negative log-likelihood of ``ids[1:]`` in bits, in one forward pass."""
    batch = torch.tensor([ids])
    with torch.no_grad():
        logits = model(input_ids=batch).logits[0, :-1].float()
    return torch.nn.functional.cross_entropy(logits, batch[0, 1:], reduction="sum").item() / math.log(2)


@pytest.mark.parametrize("kind", ["granite", "cohere", "remote"])
def test_bits_per_byte_is_the_models_own_when_it_scales_its_logits(kind, bpe_tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    model = scaled_model(kind, len(tokenizer)).eval()
    texts = [*ENGLISH_LINES[:3], *KOREAN_LINES[:3]]  # each one window, several windows to a batch
    ids = [[tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False).input_ids] for t in texts]
    assert not head_matches_model(model, ids[0][:8])
    got = bits_per_byte(model, tokenizer, texts, window=1024, stride=512).bits_per_byte
    expected = sum(own_nll_bits(model, i) for i in ids) / sum(len(t.encode()) for t in texts)
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", ["granite", "cohere"])
def test_calibration_fits_the_models_own_logits(kind, bpe_tokenizer_dir):
    """The calibrated init on a model that scales its head's output: the likelihood it fits is the model's own,
    before the offsets are written and after (untied, so that the offsets change the logits only)."""
    tokenizer = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    model = scaled_model(kind, len(tokenizer), tied=False).eval()
    new = 40  # the last rows play the new tokens
    counts = torch.arange(new, dtype=torch.float32) * 3
    pieces = [[5] * (1 + i % 3) for i in range(new)]
    windows, _, _ = document_windows(tokenizer, KOREAN_LINES[:6], window=1024, stride=1024)
    assert logit_scale(model, windows[0].ids[:8]) == pytest.approx(0.25, rel=1e-3)
    before = own_mean_nll(model, windows)
    result = calibrate(model, tokenizer, KOREAN_LINES[:6], counts, pieces, len(tokenizer) - new)
    assert result.nll_before == pytest.approx(before, rel=1e-4)
    assert result.nll_after == pytest.approx(own_mean_nll(model, windows), rel=1e-3)
    assert result.nll_after < result.nll_before


def own_mean_nll(model, windows) -> float:
    """The model's own mean NLL (nats) of the scored targets of ``windows``."""
    total, count = 0.0, 0
    for window in windows:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([window.ids])).logits[0].float()
        positions = list(range(max(window.score_from, 1), len(window.ids)))
        targets = torch.tensor([window.ids[p] for p in positions])
        total += torch.nn.functional.cross_entropy(logits[[p - 1 for p in positions]], targets, reduction="sum").item()
        count += len(positions)
    return total / count


def test_a_plain_head_is_recognised(tied_llama_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(str(tied_llama_dir))
    assert head_matches_model(model, list(range(1, 9)))
    assert fused_loss_supported(model)
    checks = []  # once per model: a perplexity filter scores document after document
    monkeypatch.setattr("redwhale.core.bpb.head_matches_model", lambda *a: checks.append(1) or True)
    tokenizer = AutoTokenizer.from_pretrained(str(tied_llama_dir))
    for text in ENGLISH_LINES[:3]:
        bits_per_byte(model, tokenizer, [text], window=16, stride=8)
    assert len(checks) == 1


@pytest.mark.parametrize("kind", ["granite", "cohere", "remote"])
def test_the_training_loss_is_the_models_own_when_it_scales_its_logits(kind):
    model = scaled_model(kind, 300)
    ids = torch.randint(0, 300, (2, 24), generator=torch.Generator().manual_seed(1))
    plain = head_matches_model(model, list(range(1, 9)))
    assert not plain
    assert fused_loss_supported(model) == (kind == "remote")  # what the config names; the check catches the rest
    loss = CausalLMLoss(model, plain_head=plain)(ids)
    assert loss.item() == pytest.approx(model(input_ids=ids, labels=ids).loss.item(), rel=1e-5)


def test_training_a_model_that_scales_its_logits(tmp_path, bpe_tokenizer_dir, monkeypatch):
    """End to end: a Granite folder trains (with its own loss: the fused one would train logits 4x too large) and
    ``merge_with_base: auto`` measures its English as the model itself scores it."""
    tokenizer = AutoTokenizer.from_pretrained(str(bpe_tokenizer_dir))
    model = scaled_model("granite", len(tokenizer)).eval()
    model.save_pretrained(tmp_path / "granite")
    tokenizer.save_pretrained(tmp_path / "granite")
    ids = {t: [tokenizer.bos_token_id, *tokenizer(t, add_special_tokens=False).input_ids] for t in ENGLISH_LINES}
    english = [t for t in ENGLISH_LINES if len(ids[t]) <= 32][:4]  # one window each at sequence_length 32
    assert english
    everything = StageSection(
        name="all", tokens=128, lr=1e-2, trainable=Trainable(embeddings="all", lm_head="all", layers="all", norms=True)
    )
    cfg = TrainSection(stages=[everything], sequence_length=32, micro_batch_size=2, grad_accum=2, tensorboard=False)
    corpus = [f"{line} {i}" for i in range(20) for line in KOREAN_LINES]
    fused = []
    monkeypatch.setattr(ChunkedLinearCrossEntropy, "apply", lambda *a: fused.append(1))
    summary = train_schedule(tmp_path / "granite", corpus, None, cfg, tmp_path / "w", english_check=english)
    assert not fused  # the model's own loss, every step
    precision = resolve_precision("auto", cfg, torch.device("cpu"))  # auto measures in the precision it trains in
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.autocast is not None):
        start = sum(own_nll_bits(model, ids[t]) for t in english) / sum(len(t.encode()) for t in english)
    assert summary["merge_search"]["start_english_bpb"] == pytest.approx(start, rel=1e-3)
    assert all(math.isfinite(s["final_loss"]) for s in summary["stages"])
