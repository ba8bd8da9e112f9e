"""redwhale against plain continual pretraining at equal wall clock, on CPU with SmolLM2-135M.

Three arms per budget, in one run, on the same documents (the training split of ``../shared/data/ko_corpus``,
cleaned once by the prepare phase, not counted), the same seed, and the same held-out Korean (the prepare phase's
held-out split, 15,000 characters) and English (CPython's reference, 20,000 characters, never trained on):

(a) redwhale with its defaults: the tokenizer phase (sweep, ``tokenizer.size: auto`` for the planned budget, merge),
    the extend phase (``extend`` defaults: calibrated init, ``compare: auto``) and the default stages and shares
    (``train.schedule: auto`` resolved as the train phase resolves it on this machine, :func:`default_schedule`:
    every layer, every norm and the new input rows in one stage with a tenth of the blocks English replay where that
    fits, as it does here, (e)'s schedule; the paper's four stages where it does not. Bench r9 and r10 ran the paper's
    four stages; r11 to r30 stage 1, then every layer, now (d));
(b) plain continual pretraining: full fine-tuning of every parameter with the base tokenizer, at its best learning
    rate in our experiments (3e-4, bench/cpt_explore.py: better than 1e-4 and 1e-3 at these budgets), not merged back
    (``merge_with_base: 0``; (a) and (c) keep the recipe's default, ``auto``, its English measurements in their time);
(c) redwhale at the paper's fixed 20,000-token Korean tokenizer, everything else as (a);
(d) (asked for with ``--arms``) redwhale as (a) with ``train.schedule: every_layer`` as it was from r11 to r30: after
    stage 1 every layer and norm in one stage with a tenth of its blocks English replay (``english_share: 0.1``) from
    CPython's reference outside the English scored here and the text ``merge_with_base: auto`` chooses on: the
    schedule that learned the most Korean at equal English in ``bench/cpt_explore.py`` (r26). Bench r10 ran it beside
    the paper's split; from r11 to r30 it was (a)'s wherever its plan fits.
(e) (asked for with ``--arms``) redwhale as (d) without stage 1: every layer, every norm and the new input rows (at
    stage 1's rate, ``new_rows_lr``) in one stage with the same replay, for all the tokens: the variant that led (d)'s
    schedule at equal tokens and at equal seconds in ``bench/cpt_explore.py`` (r28, r29) and at equal wall clock
    here (r29, r30); ``train.schedule: every_layer`` since r30, so (e) equals (a) on this machine.
(f) (asked for with ``--arms``) train, then extend: (b)'s full fine-tuning with (d)'s tenth of English replay for
    half the budget, then (a)'s tokenizer and extend phases on that model (its new rows initialised from the trained
    embeddings, calibrated on the trained model) and (e)'s one stage for the rest; the answer to "the base tokenizer
    learns fastest at first, so extend later?" (r30). The row keeps the first stage's scores (``first``) and the
    extended model's before its training (``extended_untrained``).

Wall clock counts everything an arm does to produce its model: the tokenizer and extend phases, tokenising the
training text and training. Each arm trains until what is left of its budget is spent (``train.seconds``, since r39):
a short probe on its own model (6 steps per stage, not counted) measures the seconds a run spends outside its steps
(loading, saving, ``merge_with_base: auto``'s reference and its search as the probe made it, one to three
measurements, where every (a) and (c) since r11 stopped at one), which the cap leaves them, and its tokens/s, from
which the stages' tokens are planned (twice the plan is the cap's headroom; a stage's part of the seconds is its
tokens' share). Until r38 the probe's tokens were the plan itself and its reserve auto's longest search: the machine's
speed drift put arms from 18% short to 11% over their budgets, and the reserve left redwhale's arms ~10% short where
full fine-tuning had none. The table prints the wall clock each arm actually used and names any arm more than 5% off
its budget, which ``--arms`` reruns.
(a) plans its vocabulary for the training tokens (c) trained (run first, the same schedule after the same phases), as
a user's ``train.tokens`` would; a larger vocabulary then trains fewer tokens in the same seconds (slower steps).
Scores are bits per byte (comparable across tokenizers) and each model's tokens per 1,000 Korean characters of the
held-out text (the inference cost paid after training).
Batch geometry (sequence 512, micro-batch 2) is the bench's, the same for every arm: the schema default (1,024 x 8)
makes a step of over two minutes on 2 CPU cores. Every arm trains at ``train.precision: auto`` (bf16 products on a CPU
with AMX), and the bench re-runs itself under tcmalloc or jemalloc when the machine has one: on glibc's malloc each
arm would train slower than the one before it (``bench/bench_process_age.py``). The JSON records both.

    python bench/bench_cpt.py [--budgets 480 960] [--out DIR]      # JSON to bench/measured/cpt.json
    python bench/bench_cpt.py --budgets 480 --arms b [--out DIR]   # rerun one arm, the other rows kept
    python bench/bench_cpt.py --resume [--out DIR]                 # only the arms a stopped run has no row for

Each arm's row is saved as the arm ends (an arm that fails later loses none).

At equal training tokens instead (the issue's GPU arm: 10^7 tokens each on SmolLM2 in bf16, a regime 100x beyond
this CPU): ``--tokens N`` trains every arm N tokens, no probe and no wall-clock plan ((a) plans its vocabulary for N);
the table still prints each arm's seconds. ``bench/device_cpt.sh`` packs what a GPU machine without a network needs
(the base model as a ``.gguf``, wheels, the prepared corpus) and runs it there:

    python bench/bench_cpt.py --tokens 10000000 --sequence-length 1024 --micro-batch 16 --record R.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import statistics
import time
from pathlib import Path

import torch

from redwhale.config.schema import (
    EVERY_LAYER_ENGLISH_SHARE,
    CorpusInput,
    CorpusSection,
    EnglishSection,
    EvalSection,
    ExtendSection,
    ModelSection,
    PrepareSection,
    StageSection,
    TokenizerSection,
    Trainable,
    TrainSection,
    default_stages,
    every_layer_stages,
)
from redwhale.core.environment import cpu_native_bf16, rerun_with_fast_malloc
from redwhale.core.io import atomic_write_json
from redwhale.core.logs import setup_logging
from redwhale.core.source import materialize, resolve
from redwhale.recipe.artifacts import PreparedCorpus
from redwhale.recipe.phases import (
    PhaseContext,
    english_heldout,
    extend_phase,
    korean_heldout,
    prepare_phase,
    read_texts,
    tokenizer_phase,
)

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
BASE = "smollm2-135m"
SEQ, MICRO = 512, 2
FULL_LR = 3e-4
WALL_TOLERANCE = 0.05  # an arm whose wall clock is further than this from the budget is flagged
SEED = 0  # the seed of every phase (tokenizer sampling, extend, data order, LoRA init); --seed sets it
FIRST_SHARE = 0.5  # (f): the budget's share its first stage (full fine-tuning on the base tokenizer) gets
PROBE_STEPS = 6  # the median of the 5 after the first: 3 (a median of 2) planned one arm 21% short of its budget
TOKEN_HEADROOM = 2  # an arm's tokens cap at this times its probe's plan; train.seconds ends it (r39)
ARMS = {
    "a": "(a) redwhale defaults",
    "b": "(b) full fine-tuning, base tokenizer",
    "c": "(c) redwhale, 20,000-token tokenizer",
    "d": "(d) redwhale, every layer + English replay",
    "e": "(e) redwhale, (d) in one stage with the new input rows",
    "f": "(f) full fine-tuning first, then extend and (e)",
}
DEFAULT_ARMS = ("a", "b", "c")  # (d), (e) and (f) run when asked for (--arms)
LICENSES = Path("/usr/share/common-licenses")


def replay_stages() -> list[StageSection]:
    """(d)'s schedule, ``train.schedule: every_layer`` until r30: the paper's stage 1 on the new input rows (a quarter
    of the tokens), then every layer and norm with a tenth of the blocks English replay."""
    paper = default_stages()
    layers = StageSection(
        name="all_layers", trainable=Trainable(layers="all", norms=True), share=1 - paper[0].share,
        lr=paper[1].lr, english_share=EVERY_LAYER_ENGLISH_SHARE,
    )  # fmt: skip
    return [paper[0], layers]


def one_stage_stages() -> list[StageSection]:
    """(e)'s schedule: (d)'s second stage training the new input rows too, at (d)'s stage 1 rate, for all the tokens
    (``bench/cpt_explore.py replay --schedules one_stage``); ``train.schedule: every_layer`` since r30, so (a) runs it
    where its plan fits."""
    return every_layer_stages()


FORCED_SCHEDULES = {"d": replay_stages, "e": one_stage_stages}  # the arms run as (a) with their own stages


def default_schedule(model: Path, english: list[str]) -> tuple[list[StageSection], list[str] | None, dict]:
    """The stages the recipe's defaults run for the extended ``model`` on this machine, ``train.schedule: auto``
    resolved by the train phase's own choice (every layer at once with English replay when its plan fits this device
    in the bench's batch geometry, else the paper's split); the English it replays (:func:`replay_for`, as the recipe
    replays the reference without English inputs); and the choice with its reason."""
    import torch
    from transformers import AutoConfig

    from redwhale.train.loop import device_memory_gib
    from redwhale.train.plan import choose_schedule
    from redwhale.train.precision import resolve_precision

    config = AutoConfig.from_pretrained(str(model))
    new_tokens = config.vocab_size - json.loads((Path(model) / "init_report.json").read_text())["base_vocab"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    unresolved = TrainSection(tokens=1, sequence_length=SEQ, micro_batch_size=MICRO)
    precision = resolve_precision("auto", unresolved, device)
    resolved, _, choice = choose_schedule(config, unresolved, device_memory_gib(device), new_tokens, precision)
    replay = replay_for(english) if any(s.english_share > 0 for s in resolved.stages) else None
    return resolved.stages, replay, choice


def replay_english(scored_chars: int, check_chars: int) -> list[str]:
    """(d)'s English replay: CPython's reference documents outside the ``scored_chars`` the bench scores and the
    ``check_chars`` after them that ``merge_with_base: auto`` chooses on (both come from the same shuffled sample), as
    the recipe replays it without English inputs."""
    from redwhale.recipe.phases import english_replay

    return list(english_replay(EnglishSection(), 0, scored_chars + check_chars))


def licence_english(max_chars: int = 20_000) -> list[str]:
    """English of another domain than CPython's reference: the licence texts Debian ships (paragraphs of 20 words or
    more), to tell replay that holds English in general from replay that holds only the reference's own (none where
    the folder is missing)."""
    from redwhale.core.text import heldout_sample

    if not LICENSES.is_dir():
        return []
    paragraphs = []
    for path in sorted(p for p in LICENSES.iterdir() if p.is_file()):
        text = path.read_text(encoding="utf-8", errors="replace")
        paragraphs += [" ".join(block.split()) for block in text.split("\n\n") if len(block.split()) >= 20]
    return heldout_sample(paragraphs, max_chars, 0, heldout_only=False)


def full_stage(tokens: int) -> StageSection:
    trainable = {"embeddings": "all", "lm_head": "all", "layers": "all", "norms": True}
    return StageSection(name="full", trainable=trainable, lr=FULL_LR, tokens=tokens)


def section(
    stages: list[StageSection],
    total: int | None = None,
    merge_with_base: float | str = "auto",
    seconds: float | None = None,
) -> TrainSection:
    """The bench's batch geometry around ``stages`` (their own tokens, or shares of ``total``); ``merge_with_base``:
    the recipe's default for (a) and (c), 0 for plain continual pretraining (b); ``seconds``: ``train.seconds``."""
    return TrainSection(
        tokens=total, stages=stages, sequence_length=SEQ, micro_batch_size=MICRO, checkpoint_every=10_000,
        log_every=1, tensorboard=False, merge_with_base=merge_with_base, seconds=seconds,
    )  # fmt: skip


def timed(stages: list[StageSection], seconds: float, merge_with_base: float | str = "auto") -> TrainSection:
    """``stages`` (tokens planned from the probe to fill ``seconds``) trained until ``seconds`` of stepping are
    spent (``train.seconds``, since r39), their tokens raised to ``TOKEN_HEADROOM`` times the plan so that the clock,
    not the probe's forecast, ends them: the probe once planned arms from 18% short to 11% over their budgets."""
    raised = [s.model_copy(update={"tokens": TOKEN_HEADROOM * s.tokens}) for s in stages]
    return section(raised, None, merge_with_base, max(seconds, 1.0))


def prepared_corpus(out: Path) -> PreparedCorpus:
    """The training corpus, cleaned once by the prepare phase with its defaults (shared by every arm)."""
    done = out / "prepared.json"
    if done.is_file():
        return PreparedCorpus(out / "prepare", json.loads(done.read_text())["documents_kept"])
    corpus = CorpusSection(inputs=[CorpusInput(path=str(CORPUS))])
    prepared = prepare_phase(PhaseContext(out / "prepare", "bench", None), corpus, PrepareSection(), 0)
    atomic_write_json(done, {"documents_kept": prepared.documents_kept})
    return prepared


def step_rates(
    model: Path,
    stages: list[StageSection],
    prepared: PreparedCorpus,
    work: Path,
    merge_with_base: float | str = "auto",
    english: list[str] | None = None,
) -> tuple[list[float], float]:
    """Tokens/s of each stage on ``model`` (the median step after the first of a short run) and the seconds a run
    spends outside its steps (tokenising, loading and saving each stage, merging LoRA, ``merge_with_base: auto``'s
    English measurements): the probe's wall clock less its steps' (cached in ``work``). The probe's auto search is
    its own, at the default tolerance: the reference and one measurement or a few more (six steps can lift English
    past the tolerance: in r39 (a)'s probe measured weights 0 to 0.2), where the runs' searches stopped at one (every
    (a) and (c) of bench r11 to r38, English replayed). Until r38 the probe held English to a 0% tolerance to pay
    for auto's longest search (every weight merged and measured), planned after r7's (a), which needed a longer search
    than its probe's and ran 40 s over before English replay; that reserve left every redwhale arm under its budget
    (~45 s of 480 on r38's EPYC) and full fine-tuning, never merged, with none. A run whose search goes further now
    ends over its budget, and the table flags it."""
    from redwhale.train.run import train_schedule

    cached = work / f"probe-{PROBE_STEPS}.json"
    if cached.is_file() and "expected_search" in (probed := json.loads(cached.read_text())):  # else: before r39
        return probed["tokens_per_s"], probed["fixed_seconds"]
    probe = [s.model_copy(update={"tokens": PROBE_STEPS * SEQ * MICRO, "share": None}) for s in stages]
    probe_dir = work / f"probe-{PROBE_STEPS}"
    train_section = section(probe, None, merge_with_base)
    started = time.perf_counter()
    summary = train_schedule(model, read_texts(prepared.split("train")), english, train_section, probe_dir, SEED)
    elapsed = time.perf_counter() - started
    searched = summary.get("merge_search", {}).get("searched", [])
    rows = [json.loads(line) for line in (probe_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    rates = []
    for stage in probe:
        steps = [r for r in rows if r["stage"] == stage.name][1:]  # the first step pays for allocations
        rates.append(statistics.median(SEQ * MICRO / r["seconds"] for r in steps))
    fixed = max(elapsed - sum(r["seconds"] for r in rows), 0.0)
    atomic_write_json(cached, {"tokens_per_s": rates, "fixed_seconds": fixed, "expected_search": searched})
    shutil.rmtree(probe_dir)  # its model and checkpoints (~1.4 GB an arm): only the rates are kept
    return rates, fixed


def planned_stages(seconds: float, stages: list[StageSection], rates: list[float]) -> list[StageSection]:
    """``stages`` with whole steps that fill ``seconds`` at ``rates``: each stage's share of the total rounded down to
    whole steps (the trainer rounds a stage's tokens *up* to whole steps: a plan in shares overshot by up to a step
    per stage), then one more step for each stage in turn while the plan still fits."""
    step = SEQ * MICRO
    seconds_per_step = [step / r for r in rates]
    total = seconds / sum((s.share or 0) / r for s, r in zip(stages, rates, strict=True))
    steps = [max(1, math.floor((s.share or 0) * total / step)) for s in stages]
    used = sum(n * t for n, t in zip(steps, seconds_per_step, strict=True))
    for i, t in enumerate(seconds_per_step):
        if used + t <= seconds:
            steps[i] += 1
            used += t
    return [s.model_copy(update={"tokens": n * step, "share": None}) for s, n in zip(stages, steps, strict=True)]


def adapt(
    arm: str, tokenizer: TokenizerSection, planned: int, prepared: PreparedCorpus, work: Path, base: str | None = None
):
    """The tokenizer and extend phases of a redwhale arm (on ``base``, else the bench's base model); returns the
    extended model and the seconds they took."""
    started = time.perf_counter()
    model = ModelSection(base=base or BASE)
    corpus = CorpusSection(inputs=[CorpusInput(path=str(CORPUS))])
    adapted = tokenizer_phase(PhaseContext(work / "tokenizer", arm, None), model, corpus, tokenizer, SEED, planned,
                              prepared)  # fmt: skip
    extend = ExtendSection()
    methods, why = extend.compared_methods(planned)
    extended = extend_phase(PhaseContext(work / "extend", arm, None), model, extend, EnglishSection(), SEED,
                            {"methods": methods, "why": why}, prepared, adapted)  # fmt: skip
    return extended.model, adapted, time.perf_counter() - started


def train(
    model: Path, train_section: TrainSection, prepared: PreparedCorpus, work: Path, english: list[str] | None = None
) -> tuple[dict, float]:
    from redwhale.train.run import train_schedule

    started = time.perf_counter()
    summary = train_schedule(model, read_texts(prepared.split("train")), english, train_section, work / "train", SEED)
    return summary, time.perf_counter() - started


def score(model: Path, korean: list[str], english: list[str], out: Path) -> dict:
    from transformers import AutoTokenizer

    from redwhale.evaluate.run import evaluate

    eval_section = EvalSection(benchmarks="off", korean_prompts=[], english_prompts=[])
    result = evaluate(str(model), out, korean, english, eval_section)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokens = sum(len(ids) for ids in tokenizer(korean, add_special_tokens=False)["input_ids"])
    chars = sum(len(t) for t in korean)
    row = {"korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
           "tokens_per_1000_korean_chars": 1000 * tokens / chars}  # fmt: skip
    if licences := licence_english():  # since (d): English of another domain than the reference (d) replays
        licence = evaluate(str(model), out.with_name(f"{out.stem}-licences.json"), [], licences, eval_section)
        row["licence_english_bpb"] = licence["english_bpb"]
    return row


def seed_folder(out: Path) -> Path:
    """Where a run's arms work: ``out`` for seed 0, ``out/seed-<N>`` for another."""
    return out if SEED == 0 else out / f"seed-{SEED}"


def run_budget(
    budget: float,
    prepared: PreparedCorpus,
    heldout,
    base_dir: Path,
    out: Path,
    arms: set[str] | None = None,
    earlier: dict[str, dict] | None = None,
    on_row=None,
) -> dict[str, dict]:
    """The three arms at ``budget`` seconds each: (c) first (its training tokens plan (a)'s vocabulary). With
    ``arms``, only those, from scratch (their work folders are removed first); (a) without (c) plans its vocabulary
    for the training tokens of (c) in ``earlier`` (the rows of the earlier run). ``on_row(arm, row)`` is called as
    each arm ends (the caller saves it: a crash in a later arm loses no finished one)."""
    on_row = on_row or (lambda arm, row: None)
    korean, english = heldout
    work = seed_folder(out) / f"budget-{budget:.0f}"
    arms = set(DEFAULT_ARMS) if arms is None else arms
    for arm in arms:
        shutil.rmtree(work / arm, ignore_errors=True)
    rows: dict[str, dict] = {}
    if "c" in arms:  # the paper's 20k: its rates measured on its own extended model
        model_c, tok_c, adapt_c = adapt("c", TokenizerSection(size=20_000), 10**6, prepared, work / "c")
        stages_c, replay_c, choice_c = default_schedule(model_c, english)
        rates_c, fixed_c = step_rates(model_c, stages_c, prepared, work / "c", english=replay_c)
        left_c = budget - adapt_c - fixed_c
        plan_c = timed(planned_stages(left_c, stages_c, rates_c), left_c)
        rows["c"] = _arm(model_c, plan_c, prepared, work / "c", adapt_c, tok_c, korean, english, replay_c)
        rows["c"]["probe_tokens_per_s"] = [round(r, 1) for r in rates_c]
        rows["c"]["schedule"] = choice_c
        on_row("c", rows["c"])
        tokens_c = rows["c"]["training_tokens"]
    elif planned := sorted(arms & {"a", "f", *FORCED_SCHEDULES}):
        if not earlier or "c" not in earlier:
            raise SystemExit(
                f"--arms {' / '.join(planned)}: they plan their vocabulary for (c)'s training tokens; no earlier (c) row"
            )
        tokens_c = earlier["c"]["training_tokens"]
    if "a" in arms:  # defaults: the budget it plans its vocabulary for is what (c) trained
        model_a, tok_a, adapt_a = adapt("a", TokenizerSection(), tokens_c, prepared, work / "a")
        stages_a, replay_a, choice_a = default_schedule(model_a, english)
        rates_a, fixed_a = step_rates(model_a, stages_a, prepared, work / "a", english=replay_a)
        left_a = budget - adapt_a - fixed_a
        plan_a = timed(planned_stages(left_a, stages_a, rates_a), left_a)
        rows["a"] = _arm(model_a, plan_a, prepared, work / "a", adapt_a, tok_a, korean, english, replay_a)
        rows["a"]["planned_tokens"] = tokens_c
        rows["a"]["probe_tokens_per_s"] = [round(r, 1) for r in rates_a]
        rows["a"]["schedule"] = choice_a
        on_row("a", rows["a"])
    for arm in sorted(arms & set(FORCED_SCHEDULES)):  # as (a), with its own schedule and English replay
        rows[arm], _ = _forced_arm(arm, FORCED_SCHEDULES[arm](), budget, tokens_c, prepared, work / arm, korean,
                                   english)  # fmt: skip
        on_row(arm, rows[arm])
    if "f" in arms:
        rows["f"] = _arm_f(budget, prepared, base_dir, work / "f", korean, english, tokens_c)
        on_row("f", rows["f"])
    if "b" in arms:
        rows["b"] = _arm_b(budget, prepared, base_dir, work, korean, english)
        on_row("b", rows["b"])
    return rows


def _arm_b(budget: float, prepared: PreparedCorpus, base_dir: Path, work: Path, korean, english) -> dict:
    """(b) full fine-tuning of the base, for the seconds its own probe leaves it."""
    full = [full_stage(SEQ * MICRO)]
    rates_b, fixed_b = step_rates(base_dir, full, prepared, work / "b", 0.0)
    plan_b = timed([full_stage(whole_steps(budget - fixed_b, rates_b[0]))], budget - fixed_b, 0.0)
    row = _arm(base_dir, plan_b, prepared, work / "b", 0.0, None, korean, english)
    row["probe_tokens_per_s"] = [round(r, 1) for r in rates_b]
    return row


def whole_steps(seconds: float, rate: float) -> int:
    """The tokens of the whole steps one stage at ``rate`` tokens/s trains in ``seconds`` (at least one step)."""
    step = SEQ * MICRO
    return max(int(seconds * rate) // step * step, step)


def _forced_arm(
    arm: str, stages, seconds: float, planned: int, prepared, work: Path, korean, english, base: str | None = None
) -> tuple[dict, Path]:
    """A redwhale arm with its own ``stages`` and English replay: the tokenizer and extend phases (on ``base``), then
    the stages planned by their probe to fill what is left of ``seconds``; its row and the extended model."""
    replay = replay_for(english)
    model, adapted, adapt_s = adapt(arm, TokenizerSection(), planned, prepared, work, base=base)
    rates, fixed = step_rates(model, stages, prepared, work, english=replay)
    left = seconds - adapt_s - fixed
    row = _arm(model, timed(planned_stages(left, stages, rates), left), prepared, work, adapt_s, adapted, korean,
               english, replay)  # fmt: skip
    row["planned_tokens"] = planned
    row["probe_tokens_per_s"] = [round(r, 1) for r in rates]
    return row, model


def _arm_f(budget: float, prepared: PreparedCorpus, base_dir: Path, work: Path, korean, english, planned: int) -> dict:
    """(f) train-then-extend: every parameter of the base on its own tokenizer (as (b), with (d)'s tenth of English
    replay) for ``FIRST_SHARE`` of the budget, then the tokenizer and extend phases on that model (new rows from its
    trained embeddings) and (e)'s one stage for the rest; the first stage's wall clock counts (its probe does not,
    as no arm's does)."""
    replay = replay_for(english)
    first = full_stage(SEQ * MICRO).model_copy(update={"english_share": EVERY_LAYER_ENGLISH_SHARE})
    rates_1, fixed_1 = step_rates(base_dir, [first], prepared, work / "first", 0.0, english=replay)
    left_1 = FIRST_SHARE * budget - fixed_1
    first = first.model_copy(update={"tokens": whole_steps(left_1, rates_1[0])})
    summary_1, train_1 = train(base_dir, timed([first], left_1, 0.0), prepared, work / "first", replay)
    trained = work / "first" / "train" / "model"
    before = score(trained, korean, english, work / "first" / "eval.json")
    shutil.rmtree(work / "first" / "train" / "checkpoints", ignore_errors=True)
    row, extended = _forced_arm("f", one_stage_stages(), budget - train_1, planned, prepared, work, korean, english,
                                base=str(trained))  # fmt: skip
    row["first"] = {"tokens": summary_1["tokens"], "seconds": round(train_1, 1), "share": FIRST_SHARE, **before}
    row["extended_untrained"] = score(extended, korean, english, work / "eval-extended.json")
    row["wall_seconds"] = round(row["wall_seconds"] + train_1, 1)
    row["training_tokens"] += summary_1["tokens"]
    row["probe_tokens_per_s"] = [round(r, 1) for r in rates_1] + row["probe_tokens_per_s"]
    return row


def run_tokens(
    tokens: int, prepared: PreparedCorpus, heldout, base_dir: Path, out: Path, arms: set[str] | None = None, on_row=None
) -> dict[str, dict]:
    """The three arms at ``tokens`` training tokens each (the GPU arm: equal tokens, no probe, no wall-clock plan):
    (a) and (c) with the default stages' shares of ``tokens`` ((a) plans its vocabulary for them), (b) one full
    stage of ``tokens``; (a) and (b) first (a run cut short keeps the comparison). ``arms`` and ``on_row`` as in
    :func:`run_budget`."""
    on_row = on_row or (lambda arm, row: None)
    korean, english = heldout
    work = seed_folder(out) / f"tokens-{tokens}"
    todo = [arm for arm in ARMS if (arm in arms if arms else arm in DEFAULT_ARMS)]  # (a) and (b) first
    if "f" in todo:  # its split is a share of wall clock
        raise SystemExit("--arms f runs at --budgets only (its first stage is a share of the budget's seconds)")
    rows: dict[str, dict] = {}
    for arm in todo:
        shutil.rmtree(work / arm, ignore_errors=True)
        if arm == "b":
            train_section = section([full_stage(tokens)], None, 0.0)
            rows[arm] = _arm(base_dir, train_section, prepared, work / arm, 0.0, None, korean, english)
        else:
            size = TokenizerSection(size=20_000) if arm == "c" else TokenizerSection()
            model, adapted, adapt_s = adapt(arm, size, tokens, prepared, work / arm)
            if arm in FORCED_SCHEDULES:
                stages, replay, choice = FORCED_SCHEDULES[arm](), replay_for(english), None
            else:
                stages, replay, choice = default_schedule(model, english)
            rows[arm] = _arm(model, section(stages, tokens), prepared, work / arm, adapt_s, adapted, korean, english,
                             replay)  # fmt: skip
            if choice:
                rows[arm]["schedule"] = choice
        on_row(arm, rows[arm])
    return rows


def replay_for(english: list[str]) -> list[str]:
    """(d)'s replay beside the bench's scored ``english``: outside it and outside auto's check text, which comes after
    the evaluation default's 50,000 characters whatever ``--english-chars`` says (:func:`replay_english`). Bench r10
    excluded only the 20,172 characters scored and the 10,000 after them, so auto's check text for (d) was among the
    replayed documents; the English figures the bench reports never were."""
    scored = max(sum(len(t) for t in english), EvalSection().english_chars)
    return replay_english(scored, TrainSection().english_check_chars)


def _arm(model, train_section, prepared, work, adapt_s, adapted, korean, english, replay=None) -> dict:
    summary, train_s = train(model, train_section, prepared, work, replay)
    result = score(work / "train" / "model", korean, english, work / "eval.json")
    shutil.rmtree(work / "train" / "checkpoints", ignore_errors=True)  # the arm is done: ~0.7 GB it no longer needs
    row = {"adapt_seconds": round(adapt_s, 1), "train_seconds": round(train_s, 1),
           "wall_seconds": round(adapt_s + train_s, 1), "training_tokens": summary["tokens"],
           "stages": [{k: s[k] for k in ("stage", "tokens", "seconds", "final_loss", "seconds_cap", "stopped_by")
                       if k in s} for s in summary["stages"]],
           **result}  # fmt: skip
    if "merge_search" in summary:  # merge_with_base auto: the weight kept and the English it measured
        row["merge_search"] = {k: v for k, v in summary["merge_search"].items() if k != "merged"}
    if adapted is not None:
        row.update(size=adapted.chosen_size, added_tokens=adapted.added_tokens)
        row["choice"] = json.loads(adapted.choice.read_text()) if adapted.choice.is_file() else None
    return row


def budget_label(key: str) -> str:
    """A row's budget: ``480`` (seconds) or ``tokens-10000000`` (:func:`run_tokens`)."""
    return f"{int(key.split('-')[1]):,} tokens" if key.startswith("tokens-") else f"{key} s"


def print_table(base: dict, results: dict[str, dict[str, dict]]) -> None:
    print("\n| budget | arm | vocabulary added | adapt s | train s | wall s | training tokens | Korean bits/byte "
          "| English bits/byte | English vs base | tokens / 1000 Korean chars |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| - | base SmolLM2-135M | 0 | - | - | - | 0 | {base['korean_bpb']:.4f} | {base['english_bpb']:.4f} "
          f"| +0.00% | {base['tokens_per_1000_korean_chars']:.0f} |")  # fmt: skip
    for budget, rows in results.items():
        for arm in (arm for arm in ARMS if arm in rows):
            r = rows[arm]
            english = (r["english_bpb"] / base["english_bpb"] - 1) * 100
            print(f"| {budget_label(budget)} | {ARMS[arm]} | {r.get('added_tokens', 0):,} | {r['adapt_seconds']:.0f} "
                  f"| {r['train_seconds']:.0f} | {r['wall_seconds']:.0f} | {r['training_tokens']:,} "
                  f"| {r['korean_bpb']:.4f} | {r['english_bpb']:.4f} | {english:+.2f}% "
                  f"| {r['tokens_per_1000_korean_chars']:.0f} |")  # fmt: skip
    for budget, rows in results.items():
        for arm in (arm for arm in ARMS if arm in rows and not budget.startswith("tokens-")):
            off = rows[arm]["wall_seconds"] / float(budget) - 1
            if abs(off) > WALL_TOLERANCE:
                print(f"{budget} s: {ARMS[arm]} used {rows[arm]['wall_seconds']:.0f} s ({off:+.0%}): not at equal "
                      f"compute; rerun it with --budgets {budget} --arms {arm}")  # fmt: skip
        if "licence_english_bpb" in base:
            for arm in (arm for arm in ARMS if "licence_english_bpb" in rows.get(arm, {})):
                licence = rows[arm]["licence_english_bpb"]
                print(f"{budget_label(budget)}: {ARMS[arm]}: licence English {licence:.4f} "
                      f"({(licence / base['licence_english_bpb'] - 1) * 100:+.2f}% against the base's)")  # fmt: skip
        for arm in (arm for arm in (*FORCED_SCHEDULES, "f") if arm in rows and "b" in rows):
            d, b = rows[arm], rows["b"]
            print(f"{budget_label(budget)}: ({arm}) Korean {d['korean_bpb']:.4f} vs (b) {b['korean_bpb']:.4f} "
                  f"({(d['korean_bpb'] / b['korean_bpb'] - 1) * 100:+.1f}%)")  # fmt: skip
        if "a" not in rows or "b" not in rows:
            continue
        a, b = rows["a"], rows["b"]
        print(
            f"{budget_label(budget)}: (a) Korean {a['korean_bpb']:.4f} vs (b) {b['korean_bpb']:.4f} "
            f"({'<=' if a['korean_bpb'] <= b['korean_bpb'] else '>'}, target <=); (a) English "
            f"{(a['english_bpb'] / base['english_bpb'] - 1) * 100:+.2f}% (target <= +3%); tokens per Korean char "
            f"{a['tokens_per_1000_korean_chars'] / b['tokens_per_1000_korean_chars']:.2f}x (b)'s (target <= 0.5x)"
        )
        # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--budgets", type=float, nargs="+", default=[480.0, 960.0], help="wall-clock seconds per arm")
    mode.add_argument("--tokens", type=int, help="instead of --budgets: every arm trains this many tokens (GPU arm)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/redwhale-bench-cpt"))
    parser.add_argument("--korean-chars", type=int, default=15_000, help="held-out Korean scored (characters)")
    parser.add_argument("--english-chars", type=int, default=20_000, help="held-out English scored (characters)")
    parser.add_argument("--smoke", action="store_true", help="results to --out only (a check of the script)")
    parser.add_argument(
        "--arms", nargs="+", choices=sorted(ARMS), help="rerun only these arms, from scratch; the others' rows are kept "
        "from the JSON (an arm whose probe planned it well off its budget)",
    )  # fmt: skip
    parser.add_argument(
        "--resume", action="store_true", help="run only the arms missing from the JSON (a run that stopped part way)"
    )
    parser.add_argument("--seed", type=int, default=0, help="another seed (its JSON is cpt-seed<N>.json): the noise")
    parser.add_argument("--base", default=BASE, help="the base model: an alias, a .gguf file, a folder or a Hub id")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="raw Korean JSONL (read once, into --out/prepare)")
    parser.add_argument("--sequence-length", type=int, default=SEQ, help="tokens per block, every arm")
    parser.add_argument("--micro-batch", type=int, default=MICRO, help="blocks per step, every arm")
    parser.add_argument(
        "--record", type=Path, help="the JSON's path (default: bench/measured/cpt[-tokens][-seed<N>].json)"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    malloc = rerun_with_fast_malloc()  # glibc's malloc slows each arm after the first (README, known limits)
    global SEED, BASE, CORPUS, SEQ, MICRO
    SEED, BASE, CORPUS, SEQ, MICRO = args.seed, args.base, args.corpus, args.sequence_length, args.micro_batch
    if not CORPUS.is_file() and not (args.out / "prepared.json").is_file():
        raise SystemExit(f"needs {CORPUS} (see ../shared/data/PROVENANCE.md), or a prepared corpus in {args.out}")
    setup_logging()
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    prepared = prepared_corpus(args.out)
    korean = korean_heldout(prepared, args.korean_chars, 0)
    heldout = (korean, english_heldout(EnglishSection(), args.english_chars, 0))
    base_dir = materialize(resolve(BASE), None)
    base = score(base_dir, *heldout, args.out / "eval-base.json")
    suffix = "" if SEED == 0 else f"-seed{SEED}"
    name = f"cpt-tokens{suffix}.json" if args.tokens is not None else f"cpt{suffix}.json"  # the two modes kept apart
    target = args.record or (args.out / name if args.smoke else HERE / "measured" / name)
    arms = set(args.arms) if args.arms else None
    if (arms or args.resume) and not target.is_file():
        raise SystemExit(f"--arms and --resume continue an earlier run: no {target}")
    earlier = json.loads(target.read_text()) if arms or args.resume else {}
    for field, value in (("sequence_length", SEQ), ("micro_batch", MICRO)):  # absent from records before r9
        if earlier.get(field, value) != value:
            raise SystemExit(f"{target} was measured with {field} {earlier[field]}, not {value}: rows would mix")
    results = earlier.get("budgets", {})
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"

    def save(budget_key: str, arm: str, row: dict) -> None:
        if arms:
            row["rerun"] = True
        results.setdefault(budget_key, {})[arm] = row
        # "python": the English held out is that version's pydoc topics
        record = {"base": base, "budgets": results, "cpu_threads": torch.get_num_threads(), "seed": SEED,
                  "malloc": malloc, "cpu_bf16_products": cpu_native_bf16(), "device": device,
                  "sequence_length": SEQ, "micro_batch": MICRO,
                  "python": platform.python_version()}  # fmt: skip
        atomic_write_json(target, record)

    if args.tokens is not None:
        keys = [(f"tokens-{args.tokens}", None)]
    else:
        keys = [(f"{budget:.0f}", budget) for budget in args.budgets]
    for key, budget in keys:
        todo = arms if arms else set(DEFAULT_ARMS) - set(results.get(key, {})) if args.resume else None
        if todo == set():
            continue
        on_row = lambda arm, row, key=key: save(key, arm, row)  # noqa: E731
        if budget is None:
            run_tokens(args.tokens, prepared, heldout, base_dir, args.out, todo, on_row)
        else:
            run_budget(budget, prepared, heldout, base_dir, args.out, todo, results.get(key), on_row)
    print_table(base, results)


if __name__ == "__main__":
    main()
