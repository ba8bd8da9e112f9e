"""The four-stage engine: selection, frozen parameters, LoRA merge, a full schedule, and bad stage configs."""

import contextlib
import json
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

import redwhale.train.loop
from helpers import KOREAN_LINES, make_tiny_llama
from redwhale.config.schema import LoraSection, StageSection, Trainable, TrainSection
from redwhale.config.validation import validate
from redwhale.core.errors import ConfigError
from redwhale.train.loop import Trainer, planned_steps, warmup_cosine
from redwhale.train.precision import resolve_precision
from redwhale.train.run import train_schedule
from redwhale.train.select import NewRowsStep, select, wrap_lora

CORPUS = [f"{line} {i}" for i in range(40) for line in KOREAN_LINES]


def tiny_train(stages, **overrides) -> TrainSection:
    base = dict(
        stages=stages,
        sequence_length=32,
        micro_batch_size=2,
        grad_accum=2,
        checkpoint_every=2,
        log_every=1,
        tensorboard=False,
    )
    base.update(overrides)
    return TrainSection(**base)


def products_as_trained(cfg: TrainSection):
    """The autocast a CPU run of ``cfg`` trains (and auto measures English) in: bf16 on a CPU with AMX, else none."""
    precision = resolve_precision("auto", cfg, torch.device("cpu"))
    return contextlib.nullcontext() if precision.autocast is None else torch.autocast("cpu", dtype=precision.autocast)


def stage(name, tokens=256, lr=1e-2, **trainable):
    return StageSection(name=name, trainable=Trainable(**trainable), tokens=tokens, lr=lr)


def paper_stages(tokens=256):
    return [
        stage("embeddings", tokens, embeddings="all", lm_head="all"),
        stage("odd", tokens, layers="odd"),
        stage("even", tokens, layers="even"),
        StageSection(name="lora", lora=LoraSection(rank=4, alpha=8), tokens=tokens, lr=1e-2),
    ]


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_odd_and_even_layers_on_a_four_layer_model(tmp_path, bpe_tokenizer_dir):
    model = AutoModelForCausalLM.from_pretrained(
        str(make_tiny_llama(tmp_path / "m4", bpe_tokenizer_dir, True, layers=4))
    )
    for spec, expected in (("odd", {1, 3}), ("even", {0, 2}), ("all", {0, 1, 2, 3}), ([2], {2})):
        selection = select(model, stage("s", layers=spec), base_rows=10)
        layers = {int(n.split(".")[2]) for n in selection.names if n.startswith("model.layers.")}
        assert layers == expected
        assert all(not p.requires_grad for n, p in model.named_parameters() if n not in selection.names)
        ids = [id(p) for g in selection.groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in model.parameters())


def test_tied_embedding_and_head_are_one_group(extended_tied_dir):
    model = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    selection = select(model, stage("s", embeddings="all", lm_head="all"), base_rows=10)
    assert selection.names == ["model.embed_tokens.weight"]
    assert selection.groups[0]["weight_decay"] == 0.0


def test_bad_selections_are_refused_before_training(extended_tied_dir):
    model = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    with pytest.raises(ConfigError, match="do not exist"):
        select(model, stage("s", layers=[0, 7]), base_rows=10)
    with pytest.raises(ConfigError, match="matches no parameter"):
        select(model, stage("s", patterns=["no_such_weight"]), base_rows=10)
    for bad, message in (
        ({"name": "x", "tokens": 10, "lr": 1e-3}, "trains no parameter"),
        ({"name": "x", "tokens": 0, "lr": 1e-3, "trainable": {"layers": "odd"}}, "greater than 0"),
        ({"name": "x", "tokens": 10, "lr": 1e-3, "trainable": {"layers": "middle"}}, "expected 'none'"),
        ({"name": "x", "tokens": 10, "lr": 1e-3, "trainable": {"layer": "odd"}}, "did you mean 'layers'"),
        ({"name": "x", "tokens": 10, "lr": 1e-3, "lora": {}, "trainable": {"layers": "odd"}}, "adapters only"),
    ):
        with pytest.raises(ConfigError, match=message):
            validate(StageSection, bad)


def test_warmup_then_cosine():
    factor = warmup_cosine(100, 0.1, 0.1)
    assert factor(0) == pytest.approx(0.1) and factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0) and factor(99) == pytest.approx(0.1, abs=1e-3)
    assert factor(55) == pytest.approx(0.55, abs=1e-3)


def test_a_time_cap_plans_the_schedule_over_the_steps_that_fit():
    assert planned_steps(100, 0, 0.0, 30.0) == 100  # before the first step: the tokens' plan
    assert planned_steps(100, 10, 5.0, None) == 100  # no cap
    assert planned_steps(100, 10, 5.0, 30.0) == 60  # 0.5 s a step: 60 steps in 30 s
    assert planned_steps(100, 10, 1.0, 30.0) == 100  # the tokens end first
    assert planned_steps(100, 10, 50.0, 30.0) == 11  # over the cap already: never fewer than the next step's


class FakeClock:
    """``time`` for the training loop: each optimizer step takes exactly ``step_s`` seconds, nothing else any."""

    def __init__(self, monkeypatch, step_s: float = 1.0):
        self.now = 1000.0
        monkeypatch.setattr(redwhale.train.loop, "time", self)
        step = Trainer._step

        def timed_step(trainer, run, stream):
            result = step(trainer, run, stream)
            self.now += step_s
            return result

        monkeypatch.setattr(Trainer, "_step", timed_step)

    def perf_counter(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


def test_train_seconds_stops_each_stage_at_its_share_and_ends_its_cosine_there(
    tmp_path, extended_tied_dir, monkeypatch
):
    """20 steps of tokens a stage, 1 s a step, 12 s for two stages of equal tokens: 6 s each, so 6 steps, the
    learning rate of their last step the cosine's last step over 6 steps, as a 6-step token budget would have it."""
    FakeClock(monkeypatch)
    stages = [stage("odd", 20 * 128, layers="odd"), stage("even", 20 * 128, layers="even")]
    cfg = tiny_train(stages, seconds=12.0, merge_with_base=0)
    summary = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "w")
    assert [(s["steps"], s["tokens"], s["stopped_by"], s["seconds_cap"]) for s in summary["stages"]] == [
        (6, 6 * 128, "seconds", 6.0),
        (6, 6 * 128, "seconds", 6.0),
    ]
    records = [json.loads(line) for line in (tmp_path / "w" / "logs" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records if r["stage"] == "odd"]
    assert len(lrs) == 6 and lrs == sorted(lrs, reverse=True)
    assert lrs[-1] == pytest.approx(1e-2 * warmup_cosine(6, 0.05, 0.1)(5))
    # the tokens still cap a stage that the seconds would not
    capped = train_schedule(extended_tied_dir, CORPUS, None, cfg.model_copy(update={"seconds": 1e6}), tmp_path / "t")
    assert [(s["steps"], s["stopped_by"]) for s in capped["stages"]] == [(20, "tokens"), (20, "tokens")]


def test_a_resumed_stage_goes_on_counting_the_seconds_it_had_trained(tmp_path, extended_tied_dir, monkeypatch):
    """Killed after its step-4 checkpoint, a stage capped at 7 s resumes at step 4 and stops at 7 steps, with the
    weights of the run that was never stopped (its learning rates are planned on the seconds the checkpoint kept)."""
    clock = FakeClock(monkeypatch)
    cfg = tiny_train([stage("odd", 20 * 128, layers="odd")], seconds=7.0, merge_with_base=0)
    whole = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "whole")
    assert whole["stages"][0]["steps"] == 7
    step = Trainer._step  # the timed one

    def dies_at_step_5(trainer, run, stream):
        if run.state.step == 4:
            raise KeyboardInterrupt
        return step(trainer, run, stream)

    monkeypatch.setattr(Trainer, "_step", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "cut")
    monkeypatch.setattr(Trainer, "_step", step)
    clock.now += 500.0  # the time between the kill and the resume is not training
    resumed = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "cut", resume=True)
    assert (resumed["stages"][0]["steps"], resumed["stages"][0]["resumed_at_step"]) == (7, 4)
    before, after = (AutoModelForCausalLM.from_pretrained(str(tmp_path / f / "model")) for f in ("whole", "cut"))
    assert all(torch.equal(a, b) for a, b in zip(before.parameters(), after.parameters(), strict=True))


def test_lora_merged_logits_equal_the_adapter_model(extended_tied_dir):
    model = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    peft_model = wrap_lora(
        model, StageSection(name="l", lora=LoraSection(rank=4, alpha=8, dropout=0.0), tokens=1, lr=1e-3)
    )
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05)  # a trained adapter, not the zero init
    peft_model.eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 24))
    with torch.no_grad():
        adapted = peft_model(ids).logits
        merged = peft_model.merge_and_unload()
        plain = merged(ids).logits
    assert torch.allclose(adapted, plain, atol=1e-5)
    assert type(merged).__name__ == "LlamaForCausalLM"


@pytest.mark.parametrize("spec", [{"layers": "odd"}, {"embeddings": "new", "lm_head": "new"}])
def test_parameters_outside_the_stage_are_bit_identical(tmp_path, extended_tied_dir, spec):
    before = snapshot(AutoModelForCausalLM.from_pretrained(str(extended_tied_dir)))
    base_rows = json.loads((extended_tied_dir / "init_report.json").read_text())["base_vocab"]
    cfg = tiny_train([stage("s", **spec)])
    train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "w")
    after = snapshot(AutoModelForCausalLM.from_pretrained(str(tmp_path / "w" / "model")))
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    if "layers" in spec:
        assert changed and all(n.startswith(("model.layers.1.",)) for n in changed)
    else:
        assert changed == {"model.embed_tokens.weight"}
        embed = "model.embed_tokens.weight"
        assert torch.equal(before[embed][:base_rows], after[embed][:base_rows])
        assert not torch.equal(before[embed][base_rows:], after[embed][base_rows:])


def test_full_schedule_keeps_the_tie_and_what_stage_one_learned(tmp_path, extended_tied_dir):
    start = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    summary = train_schedule(extended_tied_dir, CORPUS, None, tiny_train(paper_stages()), tmp_path / "w")
    assert [s["stage"] for s in summary["stages"]] == ["embeddings", "odd", "even", "lora"]
    final = AutoModelForCausalLM.from_pretrained(str(tmp_path / "w" / "model"))
    assert final.lm_head.weight is final.model.embed_tokens.weight
    assert not torch.equal(final.model.embed_tokens.weight, start.model.embed_tokens.weight)
    assert not any("lora" in n for n, _ in final.named_parameters())
    stage_one = summary["stages"][0]
    assert stage_one["trainable_parameters"] == start.model.embed_tokens.weight.numel()
    records = [json.loads(line) for line in (tmp_path / "w" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in records} == {"embeddings", "odd", "even", "lora"}
    assert all(r["tokens_per_s"] > 0 and r["memory_mb"] > 0 for r in records)
    first = [r["loss"] for r in records if r["stage"] == "embeddings"]
    assert first[-1] < first[0]


def test_new_rows_learning_rate_scales_their_update(tmp_path, extended_untied_dir):
    base_rows = json.loads((extended_untied_dir / "init_report.json").read_text())["base_vocab"]
    start = AutoModelForCausalLM.from_pretrained(str(extended_untied_dir)).model.embed_tokens.weight.detach()
    moved = {}
    for ratio in (1, 10):
        s = StageSection(
            name="e",
            trainable=Trainable(embeddings="all"),
            tokens=128,
            lr=1e-4,
            new_rows_lr=1e-4 * ratio,
            warmup_fraction=0.0,
        )
        train_schedule(extended_untied_dir, CORPUS, None, tiny_train([s], checkpoint_every=100), tmp_path / f"w{ratio}")
        end = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"w{ratio}" / "model")).model.embed_tokens.weight
        moved[ratio] = ((end - start)[base_rows:].abs().sum() / (end - start)[:base_rows].abs().sum()).item()
    assert moved[10] == pytest.approx(10 * moved[1], rel=0.25)


def test_new_input_rows_alone_train_at_their_rate_in_a_group_of_their_own(tmp_path, extended_untied_dir):
    """With the base rows frozen (``embeddings: new``), ``new_rows_lr`` is the learning rate of the embedding's own
    optimizer group, with no copy of the rows around the step: the new rows move ~10x as far at 10x the rate, the base
    rows not at all."""
    base_rows = json.loads((extended_untied_dir / "init_report.json").read_text())["base_vocab"]
    model = AutoModelForCausalLM.from_pretrained(str(extended_untied_dir))
    start = model.model.embed_tokens.weight.detach().clone()
    s = StageSection(name="e", trainable=Trainable(embeddings="new"), tokens=128, lr=1e-4, new_rows_lr=1e-3)
    selection = select(model, s, base_rows)
    (group,) = [g for g in selection.groups if any(p is model.model.embed_tokens.weight for p in g["params"])]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.0 and not NewRowsStep(selection).rules
    moved = {}
    for ratio in (1, 10):
        s = s.model_copy(update={"new_rows_lr": 1e-4 * ratio, "warmup_fraction": 0.0})
        train_schedule(extended_untied_dir, CORPUS, None, tiny_train([s], checkpoint_every=100), tmp_path / f"w{ratio}")
        end = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"w{ratio}" / "model")).model.embed_tokens.weight
        assert torch.equal(end[:base_rows], start[:base_rows])
        moved[ratio] = (end - start)[base_rows:].abs().sum().item()
    assert moved[10] == pytest.approx(10 * moved[1], rel=0.25)


def test_the_head_rows_learning_rate_scales_the_head_rows_alone(tmp_path, extended_untied_dir):
    """``head_rows_lr`` sets the rate of an untied head's new rows; the new input rows keep ``new_rows_lr``."""
    base_rows = json.loads((extended_untied_dir / "init_report.json").read_text())["base_vocab"]
    start = AutoModelForCausalLM.from_pretrained(str(extended_untied_dir))
    moved = {}
    for head_lr in (1e-3, 1e-4):
        s = StageSection(
            name="rows",
            trainable=Trainable(embeddings="new", lm_head="new"),
            tokens=128,
            lr=1e-3,
            new_rows_lr=1e-3,
            head_rows_lr=head_lr,
            lazy_head_rows=False,
            warmup_fraction=0.0,
        )
        cfg = tiny_train([s], checkpoint_every=100, merge_with_base=0.0)
        train_schedule(extended_untied_dir, CORPUS, None, cfg, tmp_path / f"w{head_lr}")
        end = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"w{head_lr}" / "model"))
        moved[head_lr] = [
            (after.weight.detach() - before.weight.detach())[base_rows:].abs().sum().item()
            for before, after in (
                (start.get_input_embeddings(), end.get_input_embeddings()),
                (start.get_output_embeddings(), end.get_output_embeddings()),
            )
        ]
    (inputs_fast, head_fast), (inputs_slow, head_slow) = moved[1e-3], moved[1e-4]
    assert head_fast == pytest.approx(10 * head_slow, rel=0.25)
    assert inputs_fast == pytest.approx(inputs_slow, rel=0.25)


@pytest.mark.parametrize("lazy", [True, False])
def test_lazy_head_rows_move_only_where_their_token_was_trained(tmp_path, extended_untied_dir, lazy):
    """The head's new rows trained lazily (the default) stay exactly as they were for tokens absent from the training
    text, and train where present; stepped at every step (``lazy_head_rows: false``) AdamW moves the absent ones too."""
    from transformers import AutoTokenizer

    base_rows = json.loads((extended_untied_dir / "init_report.json").read_text())["base_vocab"]
    texts = [f"{KOREAN_LINES[4]} {i}" for i in range(40)]  # one sentence: most new tokens never occur
    seen = {t for text in texts for t in AutoTokenizer.from_pretrained(str(extended_untied_dir))(text)["input_ids"]}
    s = StageSection(
        name="head",
        trainable=Trainable(embeddings="new", lm_head="new", layers="all"),
        tokens=128,
        lr=1e-3,
        new_rows_lr=1e-2,
        lazy_head_rows=lazy,
    )
    cfg = tiny_train([s], checkpoint_every=100, merge_with_base=0.0)
    train_schedule(extended_untied_dir, texts, None, cfg, tmp_path / "w")
    start = AutoModelForCausalLM.from_pretrained(str(extended_untied_dir)).lm_head.weight.detach()
    end = AutoModelForCausalLM.from_pretrained(str(tmp_path / "w" / "model")).lm_head.weight.detach()
    new_rows = range(base_rows, start.shape[0])
    absent = [r for r in new_rows if r not in seen]
    present = [r for r in new_rows if r in seen]
    assert len(absent) > 10 and present
    assert torch.equal(start[:base_rows], end[:base_rows])
    assert not torch.equal(start[present], end[present])
    assert torch.equal(start[absent], end[absent]) == lazy


def test_bf16_frozen_weights_and_fp32_trainable_ones_on_cpu(tmp_path, extended_tied_dir):
    """model.dtype bfloat16: frozen weights are held in bf16 during a stage, the trained ones in fp32, and the saved
    model is bf16; the loss stays close to an all-fp32 run's."""
    seen = {}

    def spy(self, run, stream):
        seen.setdefault(run.index, {n: p.dtype for n, p in run.model.named_parameters()})
        return original(self, run, stream)

    from redwhale.train.loop import Trainer

    original = Trainer._step
    cfg = tiny_train([stage("odd", tokens=512, lr=1e-3, layers="odd")])
    Trainer._step = spy
    try:
        mixed = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "bf16", dtype="bfloat16")
    finally:
        Trainer._step = original
    dtypes = seen[0]
    assert dtypes["model.layers.1.self_attn.q_proj.weight"] == torch.float32  # trained
    assert dtypes["model.layers.0.self_attn.q_proj.weight"] == torch.bfloat16  # frozen
    assert dtypes["model.embed_tokens.weight"] == torch.bfloat16
    saved = AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16" / "model"))
    assert saved.dtype == torch.bfloat16 and mixed["saved_dtype"] == "bfloat16"
    full = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "fp32", dtype="float32")
    assert mixed["stages"][0]["final_loss"] == pytest.approx(full["stages"][0]["final_loss"], rel=0.05)
    assert mixed["stages"][0]["memory_measure"].startswith(("malloc", "process RSS"))
    assert mixed["stages"][0]["plan_gib"] > 0 and mixed["stages"][0]["plan_full_gib"] > mixed["stages"][0]["plan_gib"]


def test_bf16_trainable_weights_with_kahan_adamw_learn(tmp_path, extended_tied_dir):
    cfg = tiny_train([stage("odd", tokens=512, lr=1e-3, layers="odd")], trainable_dtype="bfloat16")
    summary = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "w", dtype="bfloat16")
    records = [json.loads(line) for line in (tmp_path / "w" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["loss"] < records[0]["loss"]
    assert "trainable bfloat16" in summary["precision"]


def test_auto_micro_batch_keeps_the_global_batch(tmp_path, extended_tied_dir):
    cfg = tiny_train(
        [stage("odd", tokens=512, layers="odd")], micro_batch_size="auto", global_batch_size=4, grad_accum=1
    )
    summary = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "w")
    s = summary["stages"][0]
    assert s["micro_batch_size"] * s["grad_accum"] == 4 and s["micro_batch_size"] == 4  # the tiny model fits 4


def test_a_stage_that_cannot_fit_stops_before_the_model_loads(tmp_path, extended_tied_dir, monkeypatch):
    monkeypatch.setattr("redwhale.train.loop.device_memory_gib", lambda device: 1e-6)
    loaded = []
    monkeypatch.setattr("redwhale.train.loop.load_model", lambda *a, **k: loaded.append(a) or None)
    with pytest.raises(ConfigError, match=r"stage 'odd' does not fit: .* GiB planned at micro-batch 1"):
        train_schedule(extended_tied_dir, CORPUS, None, tiny_train([stage("odd", layers="odd")]), tmp_path / "w")
    assert not loaded


def test_offload_and_8bit_optimizers_say_what_they_need_on_cpu():
    from redwhale.train.optim import make_optimizer

    param = torch.nn.Parameter(torch.zeros(4))
    groups = [{"params": [param], "lr": 1e-3, "weight_decay": 0.0}]
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        make_optimizer(groups, tiny_train([stage("s", layers="odd")], offload_optimizer=True), torch.device("cpu"))
    with pytest.raises(ConfigError, match="adamw8bit needs CUDA"):
        make_optimizer(groups, tiny_train([stage("s", layers="odd")], optimizer="adamw8bit"), torch.device("cpu"))


def test_adamw_on_cpu_is_torchs_fused_kernel_and_steps_as_the_reference_adamw():
    """CPU training uses the fused AdamW (one kernel over all tensors: 11-14% more tokens/s on SmolLM2 than foreach,
    r31); its updates are AdamW's, the same as torch's for-loop implementation to rounding."""
    from redwhale.train.optim import make_optimizer

    torch.manual_seed(0)
    start = [torch.randn(64, 8), torch.randn(8)]
    grads = [[torch.randn_like(t) for t in start] for _ in range(3)]
    params = {}
    for name in ("redwhale", "reference"):
        ps = [torch.nn.Parameter(t.clone()) for t in start]
        groups = [{"params": ps, "lr": 1e-2, "weight_decay": 0.1}]
        if name == "redwhale":
            optimizer = make_optimizer(groups, tiny_train([stage("s", layers="odd")]), torch.device("cpu"))
            assert optimizer.defaults["fused"]
        else:
            optimizer = torch.optim.AdamW(groups, betas=tuple(TrainSection().betas), foreach=False)
        for step in grads:
            for p, g in zip(ps, step, strict=True):
                p.grad = g.clone()
            optimizer.step()
        params[name] = ps
    for ours, theirs, first in zip(params["redwhale"], params["reference"], start, strict=True):
        assert not torch.equal(ours, first)
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fixture", ["extended_tied_dir", "extended_untied_dir"])
def test_merge_with_base_moves_trained_weights_back_and_keeps_the_new_rows(tmp_path, fixture, request):
    """merge_with_base w: every weight ends at trained + w * (start - trained), except the new vocabulary rows,
    which keep their trained values; the same run without the merge gives the trained weights."""
    model_dir = request.getfixturevalue(fixture)
    base_rows = json.loads((model_dir / "init_report.json").read_text())["base_vocab"]
    spec = dict(embeddings="all", lm_head="all", layers="all", norms=True)
    runs = {}
    for weight in (0.0, 0.25):
        cfg = tiny_train([stage("all", **spec)], checkpoint_every=100, merge_with_base=weight)
        summary = train_schedule(model_dir, CORPUS, None, cfg, tmp_path / f"w{weight}")
        runs[weight] = snapshot(AutoModelForCausalLM.from_pretrained(str(tmp_path / f"w{weight}" / "model")))
    assert summary["merged"]["kept_new_rows"] > 0
    start = snapshot(AutoModelForCausalLM.from_pretrained(str(model_dir)))
    trained, merged = runs[0.0], runs[0.25]
    assert trained.keys() == merged.keys() == start.keys()
    for name, value in trained.items():
        assert not torch.equal(value, start[name]), name  # the stage trained everything
        expected = value + 0.25 * (start[name] - value)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            assert torch.equal(merged[name][base_rows:], value[base_rows:]), name
            expected, got = expected[:base_rows], merged[name][:base_rows]
        else:
            got = merged[name]
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-6), name
    if fixture == "extended_tied_dir":
        final = AutoModelForCausalLM.from_pretrained(str(tmp_path / "w0.25" / "model"))
        assert final.lm_head.weight is final.model.embed_tokens.weight


def test_auto_merge_takes_the_smallest_weight_that_brings_english_within_tolerance(tmp_path, extended_untied_dir):
    """merge_with_base auto: the search stops at the first weight within tolerance, none when training already is,
    the largest when none is; the model it leaves equals one merged directly at that weight (the successive merges
    compose), and the new rows stay as trained."""
    from redwhale.train.merge import merge_with_start, merge_within_tolerance

    base_rows = json.loads((extended_untied_dir / "init_report.json").read_text())["base_vocab"]
    spec = dict(embeddings="all", lm_head="all", layers="all", norms=True)
    train_schedule(extended_untied_dir, CORPUS, None, tiny_train([stage("all", **spec)], merge_with_base=0), tmp_path)
    start = snapshot(AutoModelForCausalLM.from_pretrained(str(extended_untied_dir)))
    name = "model.layers.0.self_attn.q_proj.weight"

    def searched(tolerance):
        model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
        trained = dict(model.named_parameters())[name].detach().clone()
        gap = (trained - start[name]).norm()
        # an "English bits per byte" 1.0 at the start, 1.2 trained, falling with the distance back to the start
        measure = lambda: 1.0 + 0.2 * float((dict(model.named_parameters())[name].detach() - start[name]).norm() / gap)  # noqa: E731
        return model, merge_within_tolerance(model, extended_untied_dir, base_rows, measure, 1.0, tolerance)

    model, result = searched(0.13)  # needs (1 - w) <= 0.65: 0.4 is the first weight of 0.1 ... 0.9
    assert result["weight"] == 0.4 and result["within"]
    assert [s["weight"] for s in result["searched"]] == [0.0, 0.1, 0.2, 0.3, 0.4]
    direct = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    merge_with_start(direct, extended_untied_dir, 0.4, base_rows)
    for (key, got), want in zip(model.named_parameters(), direct.parameters(), strict=True):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), key
    trained = snapshot(AutoModelForCausalLM.from_pretrained(str(tmp_path / "model")))
    assert torch.equal(model.model.embed_tokens.weight[base_rows:], trained["model.embed_tokens.weight"][base_rows:])
    model, result = searched(0.25)
    assert result["weight"] == 0.0 and result["merged"] is None and result["within"]
    assert all(torch.equal(p, trained[k]) for k, p in model.named_parameters())
    _, result = searched(0.05)  # needs (1 - w) <= 0.25: beyond half way back, 0.8
    assert result["weight"] == 0.8 and result["within"]
    _, result = searched(0.01)  # needs (1 - w) <= 0.05: none of them; the last is kept
    assert result["weight"] == 0.9 and not result["within"] and len(result["searched"]) == 10


def test_auto_merge_measures_english_before_and_after_training(
    tmp_path, tied_llama_dir, extended_tied_dir, caplog, monkeypatch
):
    """The default (auto) measures English on the text given before training: the start's, and the *base model's*
    (before its vocabulary was extended), which the tolerance is held to; it reports the search, and the weight it
    keeps is the first searched within tolerance, or the last searched. Check text with new tokens in it cannot score
    the base, so the start is the reference then, with a warning; so is a start trained since its extension."""
    from redwhale.core.bpb import bits_per_byte
    from redwhale.core.source import load_tokenizer

    english = ["The quick brown fox jumps over the lazy dog. " * 8, "Python is a programming language. " * 10]
    cfg = tiny_train([stage("all", embeddings="all", lm_head="all", layers="all", norms=True)])
    assert cfg.merge_with_base == "auto"
    autocast, vocabs = [], []  # each measurement's products: those training runs in (bf16 autocast with AMX)
    measure = redwhale.train.loop.bits_per_byte_each
    monkeypatch.setattr(
        "redwhale.train.loop.bits_per_byte_each",
        lambda *a, **k: (
            autocast.append(torch.is_autocast_enabled("cpu")) or vocabs.append(k["vocabs"]) or measure(*a, **k)
        ),
    )
    summary = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "w", english_check=english)
    trains_in_bf16 = resolve_precision("auto", cfg, torch.device("cpu")).autocast is not None
    assert len(autocast) >= 2 and set(autocast) == {trains_in_bf16}
    base_rows = json.loads((extended_tied_dir / "init_report.json").read_text())["base_vocab"]
    assert vocabs[0] == (None, base_rows) and all(v == (None,) for v in vocabs[1:])  # the start and the base: one pass
    search = summary["merge_search"]
    start = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    base = AutoModelForCausalLM.from_pretrained(str(tied_llama_dir))
    with products_as_trained(cfg):  # auto measures in the precision it trains in
        expected = bits_per_byte(start, load_tokenizer(str(extended_tied_dir)), english, 32, 16).bits_per_byte
        base_bpb = bits_per_byte(base, load_tokenizer(str(tied_llama_dir)), english, 32, 16).bits_per_byte
    assert search["start_english_bpb"] == pytest.approx(expected, rel=1e-4)
    assert search["reference"] == "the base model"
    assert search["reference_english_bpb"] == pytest.approx(base_bpb, rel=1e-4)
    assert base_bpb < expected  # the new rows take some probability from English at init: that counts too
    limit = base_bpb * (1 + cfg.english_tolerance)
    within = [s["weight"] for s in search["searched"] if s["english_bpb"] <= limit]
    assert search["weight"] == (within[0] if within else search["searched"][-1]["weight"])
    assert summary.get("merge_with_base", 0.0) == search["weight"]
    # what auto cost is recorded (the measurements before training, each weight tried, the search), so that a
    # budgeted run can plan for it
    assert search["reference_seconds"] > 0 and all(s["seconds"] > 0 for s in search["searched"])
    assert search["seconds"] >= sum(s["seconds"] for s in search["searched"])
    saved = json.loads((tmp_path / "w" / "model" / "training_summary.json").read_text())
    assert saved["merge_search"]["weight"] == search["weight"]

    mixed = [*english, " ".join(KOREAN_LINES[3:8])]
    with caplog.at_level(logging.WARNING, logger="redwhale.train.loop"):
        summary = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "w2", english_check=mixed)
    search = summary["merge_search"]
    assert search["reference"] == "the start"
    assert search["reference_english_bpb"] == search["start_english_bpb"]
    assert "holding English to the start's" in caplog.text

    again = train_schedule(tmp_path / "w" / "model", CORPUS, None, cfg, tmp_path / "w3", english_check=english)
    assert again["merge_search"]["reference"] == "the start"  # trained since its extension: its base rows moved
    each = cfg.model_copy(update={"save_each_stage": True})
    train_schedule(extended_tied_dir, CORPUS, None, each, tmp_path / "w4", english_check=english)
    saved_stage = json.loads((tmp_path / "w4" / "stages" / "all" / "training_summary.json").read_text())
    assert saved_stage["after"] == "all"  # a stage's model says it was trained, as the final one does


def test_merge_with_base_needs_safetensors_and_a_share_below_one(tmp_path, extended_tied_dir):
    with pytest.raises(ValueError, match="merge_with_base"):
        tiny_train(paper_stages(), merge_with_base=1.0)
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in extended_tied_dir.iterdir():
        if path.suffix != ".safetensors":
            (bare / path.name).write_bytes(path.read_bytes())
    model = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    torch.save(model.state_dict(), bare / "pytorch_model.bin")  # weights, but not as safetensors
    cfg = tiny_train([stage("odd", layers="odd")], merge_with_base=0.5)
    with pytest.raises(ConfigError, match="no safetensors"):
        train_schedule(bare, CORPUS, None, cfg, tmp_path / "w")
    assert not (tmp_path / "w" / "model").exists()


def test_the_english_auto_merge_checks_is_never_the_english_evaluation_scores(tmp_path, caplog):
    """english_check: held-out documents after those evaluation scores (none of them, nor a word-for-word copy of
    one); English inputs with too little held-out text fall back to the Python reference, with a warning."""
    from redwhale.config.schema import CorpusInput, EnglishSection
    from redwhale.recipe.phases import english_check, english_heldout

    bundled = EnglishSection()
    scored = english_heldout(bundled, 20_000, 0)
    check = english_check(bundled, 20_000, 5_000, 0)
    # (the scored part may overshoot its 20,000 by one document, of at most 2,000 characters)
    assert sum(map(len, check)) >= 3_000 and not set(check) & set(scored)
    assert english_heldout(bundled, 20_000 + 7_000, 0)[: len(scored)] == scored  # the same shuffle, further on
    small = tmp_path / "en.txt"
    small.write_text("\n".join(f"Line {i} of a small English file." for i in range(200)), encoding="utf-8")
    mine = EnglishSection(inputs=[CorpusInput(path=str(small), format="text")], text_unit="line")
    assert sum(map(len, english_heldout(mine, 50_000, 0))) < 50_000  # all of its held-out text is scored
    with caplog.at_level("WARNING"):
        fallback = english_check(mine, 50_000, 5_000, 0)
    assert fallback == english_check(bundled, 50_000, 5_000, 0) and "Python reference" in caplog.text


def test_replay_without_english_inputs_is_the_python_reference_outside_what_measures_forgetting(caplog):
    """A stage's english_share with no english.inputs replays the Python reference, none of the documents evaluation
    scores or merge_with_base: auto checks on; without english_share nothing is replayed."""
    from redwhale.config.schema import EnglishSection
    from redwhale.recipe.phases import english_check, english_heldout, english_replay

    bundled = EnglishSection()
    assert english_replay(bundled, 0) is None
    with caplog.at_level("WARNING"):
        replay = list(english_replay(bundled, 0, held_chars=20_000 + 5_000))
    scored, check = english_heldout(bundled, 20_000, 0), english_check(bundled, 20_000, 5_000, 0)
    assert scored and check and not (set(scored) | set(check)) & set(replay)
    assert sum(map(len, replay)) > 100_000 and "Python reference" in caplog.text


def test_english_check_inputs_measure_forgetting_and_are_never_replayed(tmp_path):
    """english.check_inputs: evaluation scores them and merge_with_base: auto checks the documents after those, and no
    replay holds one of them, even where the same file is also an English input."""
    from redwhale.config.schema import CorpusInput, EnglishSection
    from redwhale.recipe.phases import english_check, english_heldout, english_replay

    other = tmp_path / "licences.txt"
    other.write_text("\n".join(f"Licence paragraph {i}: permission is granted to copy it." for i in range(400)))
    replayed = tmp_path / "mine.txt"
    replayed.write_text("\n".join(f"Replayed line {i} of my English." for i in range(400)))
    check_input = CorpusInput(path=str(other), format="text")
    english = EnglishSection(check_inputs=[check_input], text_unit="line")
    scored, check = english_heldout(english, 4_000, 0), english_check(english, 4_000, 2_000, 0)
    assert scored and check and all(t.startswith("Licence") for t in scored + check)
    assert not set(scored) & set(check) and sum(map(len, check)) >= 1_500
    assert english_heldout(EnglishSection(), 4_000, 0) != scored  # not the Python reference
    both = EnglishSection(
        inputs=[CorpusInput(path=str(replayed), format="text"), check_input],
        check_inputs=[check_input],
        text_unit="line",
    )
    replay = list(english_replay(both, 0))
    assert any(t.startswith("Replayed") for t in replay) and not any(t.startswith("Licence") for t in replay)
    assert not set(english_replay(english, 0, held_chars=6_000)) & set(scored + check)  # the reference, replayed


def test_the_default_schedule_trains_every_layer_with_replay_where_it_fits_and_keeps_its_choice(
    tmp_path, extended_tied_dir
):
    """``train.schedule: auto`` (stages not given) runs every layer and the new input rows at once with English replay
    when the plan fits and English is given (the base's rows untouched); without English it runs the paper's four
    stages and says why; a run that began with one schedule continues with it (``schedule.json``), whatever this
    machine's plan would choose now."""
    english = [f"The quick brown fox number {i} jumps over the lazy dog near the river bank." for i in range(300)]
    cfg = TrainSection(
        tokens=512, sequence_length=32, micro_batch_size=2, checkpoint_every=2, tensorboard=False, merge_with_base=0
    )
    work = tmp_path / "every"
    summary = train_schedule(extended_tied_dir, CORPUS, english, cfg, work)
    assert [s["stage"] for s in summary["stages"]] == ["all_layers"]
    assert summary["schedule"]["schedule"] == "every_layer" and "fits" in summary["schedule"]["why"]
    stage = summary["config"]["stages"][0]
    assert stage["english_share"] == 0.1 and stage["trainable"]["embeddings"] == "new"
    assert stage["new_rows_lr"] > stage["lr"]
    before = AutoModelForCausalLM.from_pretrained(str(extended_tied_dir))
    after = AutoModelForCausalLM.from_pretrained(str(work / "model"))
    base_rows = json.loads((extended_tied_dir / "init_report.json").read_text())["base_vocab"]
    rows = before.model.embed_tokens.weight, after.model.embed_tokens.weight
    assert torch.equal(rows[0][:base_rows], rows[1][:base_rows])  # the base's rows as they were
    assert not torch.equal(rows[0][base_rows:], rows[1][base_rows:])  # the new input rows trained
    assert not torch.equal(before.model.layers[0].mlp.up_proj.weight, after.model.layers[0].mlp.up_proj.weight)
    assert json.loads((work / "schedule.json").read_text()) == summary["schedule"]

    alone = train_schedule(extended_tied_dir, CORPUS, None, cfg, tmp_path / "alone")
    assert [s["stage"] for s in alone["stages"]] == ["embeddings", "odd_layers", "even_layers", "lora"]
    assert alone["schedule"]["schedule"] == "paper" and "no English" in alone["schedule"]["why"]

    began = tmp_path / "began"
    began.mkdir()
    recorded = {"schedule": "paper", "requested": "auto", "why": "as recorded"}
    (began / "schedule.json").write_text(json.dumps(recorded))
    kept = train_schedule(extended_tied_dir, CORPUS, english, cfg, began)
    assert [s["stage"] for s in kept["stages"]] == ["embeddings", "odd_layers", "even_layers", "lora"]
    assert kept["schedule"] == recorded
