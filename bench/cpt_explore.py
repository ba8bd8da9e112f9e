"""Exploration for issue 13: which vocabulary size and stage schedule learn the most Korean per unit of compute.

Runs at *fixed token budgets* (so results do not depend on what else the machine is doing) on SmolLM2-135M with the
training split of ``../shared/data/ko_corpus``, and scores every model on the same held-out Korean and English text
in bits per byte (the held-out text of bench_cpt.py). Rates (tokens/s per stage kind) are probed separately, alone on
the machine, to turn token budgets into wall clock. Each experiment appends one JSON line to ``--out/results.jsonl``;
an experiment already there is skipped, so the grid can be interrupted and continued.

    python bench/cpt_explore.py prepare --out DIR            # tokenizer (one training at 40k), merges, extensions
    python bench/cpt_explore.py probe --out DIR              # tokens/s of each stage kind (run alone)
    python bench/cpt_explore.py run --out DIR --grid NAME    # a grid of experiments (see GRIDS)
    python bench/cpt_explore.py table --out DIR              # print every result
    python bench/cpt_explore.py merge --out DIR --model M --start S --weights 0.3 0.5   # train.merge_with_base
    python bench/cpt_explore.py pipeline --out DIR --size 8000 --bench-out B   # the pipeline's model at a size
    python bench/cpt_explore.py score --out DIR --model M [M ...] --bench-out B     # models as they are (untrained)
    python bench/cpt_explore.py extend --out DIR --model M --tokenizer T --bench-out B   # extend a trained model
    python bench/cpt_explore.py head-init --out DIR --tokenizer T --bench-out B   # output-row inits, untrained
    python bench/cpt_explore.py dead-mass --out DIR --model M --bench-out B       # probability on replaced pieces
    python bench/cpt_explore.py english-noise --out DIR --model M --start S       # two English samples' forgetting
    python bench/cpt_explore.py distill --out DIR --model M --bench-out B --steps 52 --lr 3e-3 --tokens 40960
    python bench/cpt_explore.py unmerge --out DIR --model <bench out>/budget-480/a ... --bench-out B   # auto undone
    python bench/cpt_explore.py buckets --out DIR --model <(a)'s arm> <(b)'s train/model> --bench-out B   # the gap
    python bench/cpt_explore.py repeated --out DIR --model M --bench-out B --tokens 40960   # learning to copy
    python bench/cpt_explore.py rows --out DIR --model M --bench-out B                      # new-row variants, untrained
    python bench/cpt_explore.py replay --out DIR --model M --bench-out B --tokens 163840 --share 0.25   # English replay
    python bench/cpt_explore.py speed --out DIR --model <(e)'s extend/model> --bench-out B --steps 12   # AdamW kernels
    python bench/cpt_explore.py head-only --out DIR --model <(a)'s arm> --bench-out B --tokens 40960   # head rows alone
    python bench/cpt_explore.py copying --out DIR --model <bench out>/budget-480/a <bench out>/budget-480/b --bench-out B
    python bench/cpt_explore.py spread --out DIR --model <bench out>/budget-480/a ... --bench-out B   # sharpness

r15 (sizes on the pipeline's own models) and its merges are kept in ``bench/measured/cpt_explore_r15.jsonl``.
r16 (80,000 new tokens, and 40,000 at 81,920 tokens beside it) in ``bench/measured/cpt_explore_r16.jsonl``.
r17 (the new input and head rows trained in the layer stages, and r16's 80,000 run again beside it on the same
machine) in ``bench/measured/cpt_explore_r17.jsonl``. r18 (every layer / every parameter of the 80k model at bench_cpt's
480 s token counts) in ``cpt_explore_r18.jsonl``. r19 (a 2,000-size vocabulary trained in full; every rate at 1e-3;
the new rows at 3e-3; the models untrained; bench (b) extended after its training; merges of (a) and (b) at 0.3 and
0.5) in ``cpt_explore_r19.jsonl``. r20 (output-row inits of the 2,000 model untrained: ``head-init``; the probability
it leaves on replaced base pieces: ``dead-mass``; two English samples' forgetting of bench r7's 960 s (a):
``english-noise``) in ``cpt_explore_r20.jsonl``. r21 (``auto-further``) in ``cpt_explore_r21.jsonl``. r22 (the new
input rows distilled toward the base's hidden states in stage 1's place, ``distill``) in ``cpt_explore_r22.jsonl``.
r23 (bench r9's arms with ``merge_with_base: auto`` undone, ``unmerge``; one sequence a step instead of two, grid
``r23a``; where (a) loses to (b), byte by byte, ``buckets``; stage 1 on documents written twice, ``repeated``; r18b
rerun with ``--keep-model`` and its model scored by repeat, ``score``; r18 likewise, and grid ``r23c``) in
``cpt_explore_r23.jsonl``. r24 (the attention of every layer after stage 1, grid ``r24a``), r25 (new rows weighted by
their pieces' rarity, output rows calibrated after the input rows are scaled: ``rows``) and r26 (English replay after
stage 1, ``replay``) in ``cpt_explore_r24.jsonl``. r31 (new rows made as unlike as the base's, untrained: ``rows``
``center-in`` / ``rand-in`` / ``rand-both``; AdamW's fused kernel against foreach on CPU: ``speed``) in
``cpt_explore_r31.jsonl``. r32 (where the one-stage default loses to full fine-tuning, ``buckets`` on bench r31's 480 s
arms; output rows at the base's norm, ``rows`` ``head:base`` / ``head:1.3``; new rows tagged with base words, ``rows``
``tag-in`` / ``tag-both``; the one stage with a quarter of the documents twice, with the new head rows trained, and on
``rand-in:1``'s rows: ``replay --schedules one_stage one_stage_twice one_stage_head``) in ``cpt_explore_r32.jsonl``. r33 (the new head rows
lazily at a rate of their own, ``head_rows_lr`` 3e-4 and 6e-4: ``replay --schedules one_stage_lazy_head_3e-4
one_stage_lazy_head_6e-4``, and ``configs/demo.yaml``'s train phase redone with each rate) in ``cpt_explore_r33.jsonl``.
r34 (``buckets`` on bench r33's 480 s arms, with the tokens that cost (a) the most; the new head rows of r33's (a)
trained alone, ``head-only``; the one stage with its layers at 6e-4, with its new input rows at 3e-3 and 1e-2, and
with a twentieth of its blocks English: ``replay --schedules one_stage_6e-4 one_stage_new_0.003 one_stage_new_0.01``,
``replay --share 0.05 --schedules one_stage``) in ``cpt_explore_r34.jsonl``. r35 (what copying from the document is
worth to bench r33's and r34's arms, and whether the base's circuits copy a new token: ``copying``; the new input rows
composed from their pieces as well, a tenth of the tokens spent on sequences written twice, and the loss toward the
document-cache mixture: ``replay --schedules one_stage_composer_0.0001 one_stage_composer_0.0003 one_stage_copy
one_stage_cache_targets``; ``rows`` ``tag-both:0.5`` again, for ``copying``) in ``cpt_explore_r35.jsonl``. r36 (how
sharp bench r33's arms predict, and their new output rows spread post hoc: ``spread``; the output rows 1.3x,
``rows --variants head:1.3``, then trained by ``replay --schedules one_stage`` with ``--model`` that row variant: the
replay line whose ``model`` is ``rows/head-1.3``) in ``cpt_explore_r36.jsonl``. Each round's findings:
``bench/EXPERIMENTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import random
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
if not CORPUS.is_file():
    CORPUS = Path("/work/shared/data/ko_corpus/ko_train.jsonl")
BASE = "smollm2-135m"
SIZES = (500, 1000, 2000, 4000, 8000, 20000)
SEQ, MICRO = 512, 2


def recorded_names(path: Path) -> set[str]:
    """The names of the experiments already in the ``.jsonl`` at ``path`` (none if it is absent): those to skip."""
    return {json.loads(line)["name"] for line in path.read_text().splitlines()} if path.is_file() else set()


def base_vocab(model_dir: Path, required: bool = True) -> int | None:
    """The base model's vocabulary size an extended model's ``init_report.json`` records (where its new rows start);
    a model without the report (the base tokenizer's) is an error, or None where not ``required``."""
    report = model_dir / "init_report.json"
    if not required and not report.is_file():
        return None
    return json.loads(report.read_text())["base_vocab"]


def arm_model(arm: Path) -> Path:
    """The trained model of a finished bench_cpt arm's folder (``budget-480/a``), or ``arm`` itself if it is a model
    folder (an extension untrained, a ``replay`` run's model)."""
    return arm / "train" / "model" if (arm / "train" / "model").is_dir() else arm


def write_record(path: Path, record: dict, show: bool = True) -> None:
    """One experiment's line appended to its ``.jsonl`` (and printed, unless ``show`` is false)."""
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    if show:
        print(json.dumps(record), flush=True)


def licence_bpb(model: Path, result: Path, licences: list[str]) -> float:
    """``model``'s English bits per byte on bench_cpt's licence English (``licences``: ``licence_english()``), another
    domain than the replayed reference; the evaluation's JSON at ``result``."""
    from redwhale.config.schema import EvalSection
    from redwhale.evaluate.run import evaluate

    section = EvalSection(benchmarks="off", korean_prompts=[], english_prompts=[])
    return evaluate(str(model), result, [], licences, section, False)["english_bpb"]


def bench_heldout(prepared) -> tuple[list[str], list[str]]:
    """The held-out Korean and English bench_cpt.py scores with its defaults (``--korean-chars``, ``--english-chars``),
    from its prepared corpus."""
    from redwhale.config.schema import EnglishSection
    from redwhale.recipe.phases import english_heldout, korean_heldout

    return korean_heldout(prepared, 15_000, 0), english_heldout(EnglishSection(), 20_000, 0)


def texts(bench_out: Path | None = None):
    """Training text, held-out Korean and English. With ``bench_out`` (bench_cpt.py's ``--out``, its prepared corpus
    there): the prepared corpus's training split, and held-out Korean *disjoint* from what bench_cpt.py scores (the
    documents after its 15,000 characters in the same shuffled held-out split), so that choosing defaults here does
    not tune them to the benchmark's held-out text."""
    from redwhale.config.schema import CorpusInput
    from redwhale.core.text import heldout_sample, training_texts
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.readers import iter_texts

    english = heldout_sample(python_docs_english(unit="paragraph"), 20_000, heldout_only=False)
    if bench_out is None:
        all_texts = list(iter_texts([CorpusInput(path=str(CORPUS))]))
        return list(training_texts(all_texts)), heldout_sample(all_texts, 30_000), english
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import prepared_corpus
    from redwhale.recipe.phases import read_texts

    prepared = prepared_corpus(bench_out)
    scored, _ = bench_heldout(prepared)
    pool = heldout_sample(read_texts(prepared.split("heldout")), 10**12, 0, heldout_only=False)
    assert pool[: len(scored)] == scored
    korean, chars = [], 0
    for text in pool[len(scored) :]:
        if chars >= 30_000:
            break
        korean.append(text)
        chars += len(text)
    return list(read_texts(prepared.split("train"))), korean, english


def prepare(out: Path) -> None:
    from redwhale.config.schema import CorpusInput, TokenizerSection
    from redwhale.models.extend import extend_command
    from redwhale.tokenizer.commands import train_command as train_tokenizer
    from redwhale.tokenizer.merge import merge_tokenizers

    train, _, _ = texts()
    train_file = out / "train.txt"
    if not train_file.is_file():
        train_file.write_text("\n\n".join(t.replace("\n\n", "\n") for t in train), encoding="utf-8")
    if not (out / "ko-tokenizer").is_dir():
        started = time.perf_counter()
        train_tokenizer(
            BASE,
            [CorpusInput(path=str(train_file), format="text")],
            TokenizerSection(size=40_000),
            out / "ko-tokenizer",
        )
        print(f"tokenizer 40k: {time.perf_counter() - started:.0f} s", flush=True)
    for size in SIZES:
        merged = out / f"merged-{size}"
        if not merged.is_dir():
            merge_tokenizers(BASE, out / "ko-tokenizer", merged, pad_to_multiple_of=64, size=size)
        for init in ("calibrated",):
            ext = out / f"ext-{size}-{init}"
            if not ext.is_dir():
                started = time.perf_counter()
                extend_command(BASE, merged, init, ext, train, 30_000)
                print(f"extend {size} {init}: {time.perf_counter() - started:.0f} s", flush=True)


def full_stage(lr, new_rows_lr=None):
    return {
        "name": "full",
        "trainable": {"embeddings": "all", "lm_head": "all", "layers": "all", "norms": True},
        "lr": lr,
        **({"new_rows_lr": new_rows_lr} if new_rows_lr else {}),
    }


def schedule(kind: str, lr: float, emb_lr: float, new_lr: float | None, lora_lr: float):
    """Stage lists (without tokens) by name; shares are given with each experiment."""
    emb = {"name": "embeddings", "trainable": {"embeddings": "all", "lm_head": "all"}, "lr": emb_lr}
    # the grids before r32 stepped the head's new rows at every step (lazy_head_rows did not exist): kept so
    dense = {"lazy_head_rows": False}
    emb_new = {"name": "embeddings", "trainable": {"embeddings": "new", "lm_head": "new"}, "lr": emb_lr, **dense}
    new = {"embeddings": "new", "lm_head": "new"} if new_lr else {}
    nr = {"new_rows_lr": new_lr, **dense} if new_lr else {}
    odd = {"name": "odd_layers", "trainable": {"layers": "odd", **new}, "lr": lr, **nr}
    even = {"name": "even_layers", "trainable": {"layers": "even", **new}, "lr": lr, **nr}
    lora = {"name": "lora", "lora": {"rank": 64, "alpha": 128}, "lr": lora_lr}
    return {
        "paper": [emb, odd, even, lora],
        "paper_newemb": [emb_new, odd, even, lora],
        "no_lora": [emb, odd, even],
        "newemb_no_lora": [emb_new, odd, even],
        "layers_only": [odd, even],
        "layers_lora": [odd, even, lora],
        "full": [full_stage(lr, new_lr)],
        # every layer and norm in one stage, the base's embedding rows frozen: with the new rows, or with none
        "all_layers_new": [
            {
                "name": "all_layers",
                "trainable": {"layers": "all", "norms": True, "embeddings": "new", "lm_head": "new"},
                "lr": lr,
                **nr,
            }
        ],
        "all_layers": [{"name": "all_layers", "trainable": {"layers": "all", "norms": True}, "lr": lr}],
        # the default's stage 1, then every layer and norm in one stage (the default's odd, even and LoRA in one)
        "newin_all_layers": [
            {"name": "embeddings", "trainable": {"embeddings": "new"}, "lr": emb_lr},
            {"name": "all_layers", "trainable": {"layers": "all", "norms": True}, "lr": lr},
        ],
        # r24: the default's stage 1, then the attention of every layer (what copies from context) for the rest,
        # the MLPs (where the base keeps most of what it knows) frozen
        "newin_attn": [
            {"name": "embeddings", "trainable": {"embeddings": "new"}, "lr": emb_lr},
            {"name": "attention", "trainable": {"patterns": [r"\.self_attn\."]}, "lr": lr},
        ],
        "emb_only": [emb],
        # stage 1 on the new *input* rows only; kinds ending in _untied / _normed run it on those copies of the model
        "paper_newin": [
            {"name": "embeddings", "trainable": {"embeddings": "new"}, "lr": emb_lr},
            odd,
            even,
            lora,
        ],
    }[kind.removesuffix("_untied").removesuffix("_normed").removesuffix("_pipeline")]


def untied(model_dir: Path) -> Path:
    """A copy of an extended model whose LM head is its own matrix (``redwhale.models.extend.untie``): same outputs."""
    from redwhale.models.extend import untie

    return _transformed(model_dir, "untied", lambda model, base_vocab: untie(model))


def normed(model_dir: Path) -> Path:
    """A copy of an untied extended model whose new input rows are scaled to the base rows' mean norm
    (``redwhale.models.extend.match_input_norms``, what ``extend.input_norm: base`` does after the init)."""
    from redwhale.models.extend import match_input_norms

    def scale(model, base_vocab: int) -> None:
        match_input_norms(model, base_vocab, model.get_input_embeddings().weight.shape[0])

    return _transformed(model_dir, "normed", scale)


def _transformed(model_dir: Path, suffix: str, change) -> Path:
    """``model_dir`` loaded, changed in place by ``change(model, base_vocab)`` and saved beside it (once)."""
    target = model_dir.with_name(f"{model_dir.name}-{suffix}")
    if not target.is_dir():
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        change(model, base_vocab(model_dir))
        save_beside(model, target, model_dir)
    return target


def train_section(stages, tokens, micro: int = MICRO):
    from redwhale.config.schema import TrainSection

    return TrainSection(
        tokens=None,
        sequence_length=SEQ,
        micro_batch_size=micro,
        checkpoint_every=100_000,
        tensorboard=False,
        merge_with_base=0.0,  # the schedules as trained; merging back is measured apart (``merge``)
        stages=[dict(s, tokens=int(t)) for s, t in zip(stages, tokens, strict=True)],
    )


def split_tokens(total: int, shares: list[float], micro: int = MICRO) -> list[int]:
    step = SEQ * micro
    return [max(step, round(total * s / step) * step) for s in shares]


# name -> list of experiments: (size or 0 for the base tokenizer, schedule, shares, lr, emb_lr, new_rows_lr, lora_lr
# [, micro batch: sequences of SEQ tokens a step, MICRO unless given])
GRIDS = {
    # r23: twice the optimizer steps for the same tokens (one sequence a step, not two): does the 80k model, whose new
    # rows each occur ~2 times in the budget, gain more from more (smaller) steps than full fine-tuning does? The
    # default schedule at (a)'s 480 s tokens (163,840) and full fine-tuning at (b)'s (226,304), each at both batches.
    # r23a ran (one sequence a step: 1.9657 in 463 s; two: 1.9623 in 404 s); r23b was not run, the 80k model gaining
    # nothing from the smaller steps
    "r23a": [
        (80000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, None, 2e-4, 1),
        (80000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, None, 2e-4, 2),
    ],  # fmt: skip
    "r23b": [(0, "full", [1.0], 3e-4, None, None, None, 1), (0, "full", [1.0], 3e-4, None, None, None, 2)],
    # r23c: is it the split into odd, even and LoRA stages that keeps the default from learning to copy (r18, every
    # layer in one stage, does: repeats 1.67 against 1.88 first)? The default's stage 1, then every layer at once for
    # the other three quarters of (a)'s 480 s tokens (run with --keep-model, then ``score``). Ran: 1.9292 in 398 s,
    # repeats 1.72 against 1.89 first, English 1.2037; merged back 0.5 / 0.6: 1.968 / 1.986 at 1.0729 / 1.0587
    "r23c": [(80000, "newin_all_layers_pipeline", [0.25, 0.75], 3e-4, 1e-3, None, None)],
    # r24: does training only the attention of every layer (after the default's stage 1) teach the 80k model to copy
    # its new tokens from context (r23c: every layer does, at +16% English) while the MLPs hold English? At (a)'s
    # 480 s tokens (163,840), run with --keep-model and scored with ``score``; at 3e-4 and at 1e-3. r24a ran: 1.9708
    # in 350 s, repeats 1.79 against 1.91 first, English 1.1259 (+8.3%): worse than the default on both (1.962,
    # +5.4%); r24b was not run
    "r24a": [(80000, "newin_attn_pipeline", [0.25, 0.75], 3e-4, 1e-3, None, None)],
    "r24b": [(80000, "newin_attn_pipeline", [0.25, 0.75], 1e-3, 1e-3, None, None)],
    # the paper's schedule at higher rates, 40,960 tokens (r3's last rows, split in two to run side by side)
    "r4a": [(20000, "paper", [0.25] * 4, 3e-4, 1e-3, None, 6e-4)],
    "r4b": [(20000, "paper", [0.25] * 4, 6e-4, 1e-3, None, 1.2e-3)],
    # r4c and r4d (stage 1 at 3e-3; shares .1/.3/.3/.3) were not run
    "r4c": [(20000, "paper", [0.25] * 4, 3e-4, 3e-3, None, 6e-4)],
    "r4d": [(20000, "paper", [0.1, 0.3, 0.3, 0.3], 3e-4, 1e-3, None, 6e-4)],
    # which stage costs English at 6e-4: LoRA at a lower rate, or stage 1 training the base's rows of both matrices
    "r5a": [(20000, "paper", [0.25] * 4, 6e-4, 1e-3, None, 2e-4)],
    "r5b": [(20000, "paper_newemb", [0.25] * 4, 6e-4, 1e-3, None, 1.2e-3)],
    # stage 1 on the new rows only, layers at 3e-4, LoRA at 2e-4 (run at 40,960 tokens; 81,920 was stopped unfinished)
    "r6": [(20000, "paper_newemb", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    # stage 1 on the new rows, the layers at 6e-4 and 4.5e-4, LoRA at 2e-4
    "r7a": [(20000, "paper_newemb", [0.25] * 4, 6e-4, 1e-3, None, 2e-4)],
    "r7b": [(20000, "paper_newemb", [0.25] * 4, 4.5e-4, 1e-3, None, 2e-4)],
    # the default with stage 1 (new rows only, its loss flat at 1e-3 over 10 steps) at 1e-2 and 3e-3
    "r8a": [(20000, "paper_newemb", [0.25] * 4, 3e-4, 1e-2, None, 2e-4)],
    "r8b": [(20000, "paper_newemb", [0.25] * 4, 3e-4, 3e-3, None, 2e-4)],
    # stage 1 (tied rows: Adam moves every new head row each step, lowering all new logits at once) at 3e-4, or none
    "r9a": [(20000, "layers_lora", [1 / 3] * 3, 3e-4, None, None, 2e-4)],
    "r9b": [(20000, "paper_newemb", [0.25] * 4, 3e-4, 3e-4, None, 2e-4)],
    # everything at 3e-4 on the extended model (new rows at the same rate); no stage 1, new rows in the layer stages
    "r10a": [(20000, "full", [1.0], 3e-4, None, None, None)],
    "r10b": [(20000, "layers_lora", [1 / 3] * 3, 3e-4, None, 3e-4, 2e-4)],
    # r10a's English loss: the base's rows (frozen here), or the layers? All layers with the new rows, or with none
    "r11a": [(20000, "all_layers_new", [1.0], 3e-4, None, 3e-4, None)],
    "r11b": [(20000, "all_layers", [1.0], 3e-4, None, None, None)],
    # untied head: stage 1 trains the new input rows alone, at 1e-3 or 1e-2 (the default's schedule otherwise)
    "r12a": [(20000, "paper_newin_untied", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    "r12b": [(20000, "paper_newin_untied", [0.25] * 4, 3e-4, 1e-2, None, 2e-4)],
    # untied, the new input rows scaled to the base rows' mean norm: all layers (r11b), the default's schedule (r12a)
    "r13a": [(20000, "all_layers_normed", [1.0], 3e-4, None, None, None)],
    "r13b": [(20000, "paper_newin_normed", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    # r15: the default schedule on the model the pipeline builds (calibrated, input rows at the base's norm) at a
    # smaller size, 8,000 (RIC 0.247 against 0.218 at 20,000, with 40% of the new rows), at 40,960 tokens (a run at
    # 94,208 was stopped unfinished once 40,960 showed 8,000 far behind)
    "r15": [(8000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    # r15's control: the same on the pipeline's 20,000 model (bench_cpt's (a) extend/model, linked as ext-20000-pipeline)
    "r15c": [(20000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    # and above the knee: 40,000 (RIC 0.202)
    "r15d": [(40000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    # r16: past the default sweep's 40k, at the 960 s budget's tokens (81,920; run r15d with --tokens 81920 beside it)
    "r16": [(80000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, None, 2e-4)],
    # r17: the new rows keep learning: r16 with the new input *and* head rows trained in the layer stages at 3e-4 / 1e-3
    # (the head rows never train in the default), at the 960 s budget's tokens (81,920)
    "r17a": [(80000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, 3e-4, 2e-4)],
    "r17b": [(80000, "paper_newin_pipeline", [0.25] * 4, 3e-4, 1e-3, 1e-3, 2e-4)],
    # r18: at the token counts bf16 products and tcmalloc bring (bench_cpt's 480 s: ~200k tokens), every layer and
    # norm in one stage on the 80k pipeline model (its rows frozen) against the paper's schedule: is it the vocabulary
    # or the schedule that loses Korean to full fine-tuning? (b) itself is scored with ``merge --weights 0``
    "r18": [(80000, "all_layers_pipeline", [1.0], 3e-4, None, None, None)],
    # r18b: every parameter of the 80k model, the new rows included (full fine-tuning after the vocabulary), run at
    # 129,024 tokens: the seconds the default's training takes at 480 s
    "r18b": [(80000, "full_pipeline", [1.0], 3e-4, None, None, None)],
    # r19: a budget-sized vocabulary (size 2,000: 1,720 new tokens, 655 tokens per 1,000 Korean characters against the
    # base's 2,099) with every parameter trained in one stage, at the tokens the 480 s budget trains after adapting
    "r19a": [(2000, "full_pipeline", [1.0], 3e-4, None, None, None)],
    "r19b": [(2000, "full_pipeline", [1.0], 3e-4, None, 3e-3, None)],
    "r19c": [(4000, "full_pipeline", [1.0], 3e-4, None, None, None)],
    # r19d/e: r18b (every parameter of the 80k model, 129,024 tokens) with every rate at 1e-3, or the new rows at 3e-3
    # (10x the layers', NVIDIA's tokenizer-extension rule): is 3e-4 what holds the extended model back?
    "r19d": [(80000, "full_pipeline", [1.0], 1e-3, None, None, None)],
    "r19e": [(80000, "full_pipeline", [1.0], 3e-4, None, 3e-3, None)],
    # r14: r13a at 40,960 and 81,920 tokens with --keep-model, each then merged back with ``merge`` (merge_with_base)
    # learning rates of the paper's schedule at bench_cpt.py's 480 s budget (~41k tokens), run with --bench-out
    "r3": [
        (20000, "paper", [0.25] * 4, 1e-4, 1e-3, None, 2e-4),
        (20000, "full", [1.0], 3e-4, None, 3e-3, None),
        (0, "full", [1.0], 3e-4, None, None, None),
        (20000, "paper", [0.25] * 4, 3e-4, 1e-3, None, 6e-4),
        (20000, "paper", [0.25] * 4, 3e-4, 3e-3, None, 6e-4),
    ],
    "r2": [
        (0, "full", [1.0], 3e-4, None, None, None),
        (0, "full", [1.0], 1e-3, None, None, None),
        (20000, "paper", [0.25] * 4, 1e-4, 1e-3, None, 2e-4),
        (20000, "no_lora", [0.2, 0.4, 0.4], 3e-4, 1e-3, 3e-3, None),
        (20000, "layers_only", [0.5, 0.5], 3e-4, None, 3e-3, None),
        (20000, "full", [1.0], 3e-4, None, 3e-3, None),
        (2000, "no_lora", [0.2, 0.4, 0.4], 3e-4, 1e-3, 3e-3, None),
        (20000, "emb_only", [1.0], 3e-4, 1e-3, None, None),
    ],
    "r1": [
        (0, "full", [1.0], 1e-4, None, None, None),
        (0, "full", [1.0], 3e-4, None, None, None),
        (20000, "paper", [0.25] * 4, 1e-4, 1e-3, None, 2e-4),
        (2000, "paper", [0.25] * 4, 1e-4, 1e-3, None, 2e-4),
        (2000, "no_lora", [0.2, 0.4, 0.4], 2e-4, 1e-3, 2e-3, None),
        (2000, "layers_only", [0.5, 0.5], 2e-4, None, 2e-3, None),
        (2000, "full", [1.0], 1e-4, None, 1e-3, None),
        (500, "no_lora", [0.2, 0.4, 0.4], 2e-4, 1e-3, 2e-3, None),
        (8000, "no_lora", [0.2, 0.4, 0.4], 2e-4, 1e-3, 2e-3, None),
    ],
}


def key(exp, tokens) -> str:
    size, kind, shares, lr, emb_lr, new_lr, lora_lr, micro = (*exp, MICRO)[:8]
    batch = "" if micro == MICRO else f"|micro{micro}"  # the keys of runs at the usual batch stay as they were
    return f"{size}|{kind}|{','.join(f'{s:g}' for s in shares)}|{lr:g}|{emb_lr}|{new_lr}|{lora_lr}|{tokens}{batch}"


def run(
    out: Path, grid: str, tokens: int, bench_out: Path | None = None, threads: int = 2, keep_model: bool = False
) -> None:
    import torch

    from redwhale.core.source import materialize, resolve
    from redwhale.train.run import train_schedule as train_command

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    results = out / "results.jsonl"
    done = {json.loads(line)["key"] for line in results.read_text().splitlines()} if results.is_file() else set()
    base_dir = materialize(resolve(BASE), None)
    for exp in GRIDS[grid]:
        k = key(exp, tokens)
        if k in done:
            continue
        size, kind, shares, lr, emb_lr, new_lr, lora_lr, micro = (*exp, MICRO)[:8]
        model = base_dir if size == 0 else str(out / f"ext-{size}-calibrated")
        if kind.endswith("_untied"):
            model = str(untied(out / f"ext-{size}-calibrated"))
        if kind.endswith("_normed"):
            model = str(normed(untied(out / f"ext-{size}-calibrated")))
        if kind.endswith("_pipeline"):  # built by ``pipeline``: the recipe's tokenizer and extend phases at that size
            model = str(out / f"ext-{size}-pipeline")
        stages = schedule(kind, lr, emb_lr or 1e-3, new_lr, lora_lr or 2e-4)
        work = out / "runs" / k.replace("|", "_").replace(",", "-")
        if work.exists():
            import shutil

            shutil.rmtree(work)
        started = time.perf_counter()
        summary = train_command(
            Path(model), train, None, train_section(stages, split_tokens(tokens, shares, micro), micro), work
        )
        seconds = time.perf_counter() - started
        result = score(work / "model", work / "eval.json", korean, english, base_dir if size else None)
        record = {
            "key": k,
            "size": size,
            "schedule": kind,
            "shares": shares,
            "lr": lr,
            "emb_lr": emb_lr,
            "new_rows_lr": new_lr,
            "lora_lr": lora_lr,
            "tokens": tokens,
            "micro_batch": micro,
            "train_seconds": round(seconds, 1),
            "stages": [{k2: s[k2] for k2 in ("stage", "tokens", "seconds", "final_loss")} for s in summary["stages"]],
            "korean_bpb": result["korean_bpb"],
            "english_bpb": result["english_bpb"],
            "korean_tokens": result["data"]["korean_text"]["tokens"],
        }
        write_record(results, record)
        import shutil

        if not keep_model:
            shutil.rmtree(work / "model", ignore_errors=True)
        shutil.rmtree(work / "checkpoints", ignore_errors=True)


def probe(out: Path) -> None:
    """Tokens/s of each stage kind, 6 steps each (the first left out), alone on the machine."""
    import torch

    from redwhale.core.source import materialize, resolve
    from redwhale.train.run import train_schedule as train_command

    torch.set_num_threads(2)
    train, _, _ = texts()
    base_dir = materialize(resolve(BASE), None)
    rows = {}
    step = SEQ * MICRO
    for name, model, stages in (
        ("full_base", base_dir, [full_stage(1e-4)]),
        ("full_2000", out / "ext-2000-calibrated", [full_stage(1e-4, 1e-3)]),
        ("paper_2000", out / "ext-2000-calibrated", schedule("paper", 1e-4, 1e-3, None, 2e-4)),
        ("newrows_2000", out / "ext-2000-calibrated", schedule("no_lora", 2e-4, 1e-3, 2e-3, None)),
        ("paper_20000", out / "ext-20000-calibrated", schedule("paper", 1e-4, 1e-3, None, 2e-4)),
    ):
        work = out / "probe" / name
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        summary = train_command(Path(model), train[:3000], None, train_section(stages, [6 * step] * len(stages)), work)
        rows[name] = {}
        for s in summary["stages"]:
            lines = [json.loads(x) for x in (work / "logs" / "metrics.jsonl").read_text().splitlines()]
            secs = [x["seconds"] for x in lines if x["stage"] == s["stage"]][1:]
            rows[name][s["stage"]] = step * len(secs) / sum(secs)
        print(name, {k: round(v) for k, v in rows[name].items()}, flush=True)
    (out / "rates.json").write_text(json.dumps(rows, indent=2))


def score(model: Path, out: Path, korean, english, base_tokenizer: Path | None) -> dict:
    """Held-out Korean and English bits per byte of ``model`` (``base_tokenizer``: the base's, for an extended one)."""
    from redwhale.config.schema import EvalSection
    from redwhale.evaluate.run import evaluate

    section = EvalSection(benchmarks="off", korean_prompts=[], english_prompts=[])
    return evaluate(str(model), out, korean, english, section, False, base_tokenizer=base_tokenizer)


def save_beside(model, work: Path, like: Path) -> None:
    """``model`` saved afresh in ``work`` with the tokenizer and other files of the model folder ``like``."""
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    model.save_pretrained(work)
    for path in like.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json":
            shutil.copy2(path, work / path.name)


def merge(out: Path, model: Path, start: Path, weights: list[float], bench_out: Path | None, threads: int) -> None:
    """A trained model (a run's model kept with ``--keep-model``, or a bench_cpt arm's) merged back toward ``start``
    (the model its training began from) at each weight with ``train.merge_with_base``'s own code, scored on the held-out
    text of ``run`` and on bench_cpt's licence English (another domain than the replayed reference: r37 found (a)'s
    drifting past 3% at 1920 s); one line each in ``merge.jsonl``."""

    import torch
    from transformers import AutoModelForCausalLM

    from redwhale.core.source import materialize, resolve
    from redwhale.train.merge import merge_with_start

    torch.set_num_threads(threads)
    _, korean, english = texts(bench_out)
    from bench_cpt import licence_english  # texts() put bench/ on the path

    licences = licence_english()
    base_dir = materialize(resolve(BASE), None)
    base_rows = base_vocab(model, required=False)
    for weight in weights:
        merged = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        rows = base_rows or merged.get_input_embeddings().weight.shape[0]
        if weight > 0:
            merge_with_start(merged, start, weight, rows)
        work = out / "merges" / f"{model.parent.name}-{weight:g}"
        save_beside(merged, work, model)
        result = score(work, work / "eval.json", korean, english, base_dir if base_rows else None)
        record = {"model": str(model), "start": str(start), "merge_with_base": weight,
                  "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"]}  # fmt: skip
        if licences:
            record["licence_english_bpb"] = licence_bpb(work, work / "licences.json", licences)
        write_record(out / "merge.jsonl", record)
        for path in work.glob("*.safetensors"):
            path.unlink()


def score_models(out: Path, models: list[Path], bench_out: Path | None, threads: int) -> None:
    """Held-out Korean and English bits per byte of each model as it is (an extended model before any training, say),
    an extended one's Korean also by first occurrence and repeat (:func:`repeat_split`); one line each in
    ``scores.jsonl``."""
    import torch

    from redwhale.core.source import materialize, resolve

    torch.set_num_threads(threads)
    _, korean, english = texts(bench_out)
    base_dir = materialize(resolve(BASE), None)
    for model in models:
        base_rows = base_vocab(model, required=False)
        extended = base_rows is not None
        result = score(model, out / "scores" / f"{model.name}.json", korean, english, base_dir if extended else None)
        record = {"experiment": "score", "model": str(model), "korean_bpb": result["korean_bpb"],
                  "english_bpb": result["english_bpb"], "korean_tokens": result["data"]["korean_text"]["tokens"]}  # fmt: skip
        if extended:
            record["korean_by_occurrence"] = repeat_split(model, korean, base_rows, threads)
        write_record(out / "scores.jsonl", record)


def extend_trained(out: Path, model: Path, merged: Path, bench_out: Path, threads: int) -> None:
    """``model`` (a trained model with the base tokenizer: bench_cpt's arm (b)) extended with ``merged`` (a merged
    tokenizer, the pipeline's) by the recipe's own extend code and default init, then scored: does the vocabulary pay
    when it comes after the training instead of before?"""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import prepared_corpus
    from redwhale.config.schema import ExtendSection
    from redwhale.models.adapt import extend_and_compare
    from redwhale.recipe.phases import read_texts

    torch.set_num_threads(threads)
    target = out / f"extended-{model.parent.parent.name}-{merged.parent.parent.name}"
    if not target.is_dir():
        started = time.perf_counter()
        train = read_texts(prepared_corpus(bench_out).split("train"))
        section = ExtendSection().model_copy(update={"compare": []})
        extend_and_compare(str(model), merged, section, train, [], [], target, None, 0)
        print(f"extended in {time.perf_counter() - started:.0f} s -> {target}", flush=True)
    score_models(out, [target], bench_out, threads)


def head_init(out: Path, merged: Path, bench_out: Path, threads: int) -> None:
    """Why does a small vocabulary start worse than the base (r19: 2.785 against 2.536 untrained at 2,000)? Is it the
    new tokens' *output* rows? The base SmolLM2 extended with ``merged`` three ways, each scored untrained: the
    default (``calibrated``: mean of the pieces' head rows, three offsets fitted), the first piece's head row (EEVE's
    output init) with the same three offsets, and the first piece's row with a fourth offset feature, the log of the
    token's share of its first piece's count under the base tokenizer (so that P(t) ~ P(first piece) P(t | first
    piece)). One line each in ``scores.jsonl``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redwhale.core.bpb import document_windows
    from redwhale.core.source import materialize, resolve
    from redwhale.models.extend import calibration_data, extend, new_token_strings, save_extended, untie
    from redwhale.models.init import bias_direction, collect_hidden, decompose, fit_offsets

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    base_dir = materialize(resolve(BASE), None)
    base_tok, tokenizer = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(merged)
    sample, counts = calibration_data(tokenizer, train, 30_000, 0)  # the extend phase's defaults
    _, base_counts = calibration_data(base_tok, train, 30_000, 0)  # the same documents, counted by the base
    size, new = len(base_tok), slice(len(base_tok), len(tokenizer))
    for variant in ("calibrated", "first_piece", "first_piece_conditional"):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        if variant == "calibrated":
            report = extend(model, base_tok, tokenizer, "calibrated", calibration_texts=sample, counts=counts)
        else:
            untie(model)
            report = extend(model, base_tok, tokenizer, "eeve")
            pieces = decompose(base_tok.backend_tokenizer, new_token_strings(tokenizer, size))
            log_count = torch.log(counts[new].float() + 1)
            n_pieces = torch.tensor([max(len(p), 1) for p in pieces], dtype=torch.float32)
            columns = [torch.ones_like(log_count), log_count - log_count.mean(), n_pieces - n_pieces.mean()]
            if variant.endswith("conditional"):
                first = torch.tensor([p[0] if p else 0 for p in pieces])
                share = log_count - torch.log(base_counts[first].float() + 1)
                columns.append(share - share.mean())
            features = torch.stack(columns, 1)
            windows, _, _ = document_windows(tokenizer, sample, window=1024, stride=1024)
            hidden, targets = collect_hidden(model.eval(), windows, 2048)
            head = model.get_output_embeddings().weight
            theta, before, after = fit_offsets(hidden, targets, head.detach(), size, features)
            with torch.no_grad():
                head[new] += (features @ theta)[:, None] * bias_direction(hidden)[None, :]
            report["calibration"] = {"theta": theta.tolist(), "nll_before": before, "nll_after": after}
        folder = out / "head-init" / f"{merged.parent.parent.name}-{variant}"
        save_extended(model, tokenizer, folder, report)
        result = score(folder, folder / "eval.json", korean, english, base_dir)
        record = {"experiment": "head-init", "tokenizer": str(merged), "variant": variant,
                  "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
                  "calibration_nll": [report["calibration"]["nll_before"], report["calibration"]["nll_after"]]}  # fmt: skip
        write_record(out / "scores.jsonl", record)


def dead_mass(out: Path, model_dir: Path, bench_out: Path, threads: int) -> None:
    """Does an extended model waste probability on base tokens its tokenizer no longer emits in Korean (the pieces a
    new token replaced)? On the held-out Korean: the mean probability on base tokens absent from the merged
    tokenization of 3,000 training documents and of the English held-out text, and the bits per byte if that
    probability were given to the rest (an upper bound on what lowering those rows could gain). One line in
    ``scores.jsonl``."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redwhale.models.extend import count_tokens

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    size = base_vocab(model_dir)
    used = (count_tokens(tokenizer, train[:3000]) > 0) | (count_tokens(tokenizer, english) > 0)
    dead = ~used[:size]
    bits = bits_renormalised = 0.0
    n_bytes, masses = 0, []
    with torch.no_grad():
        for text in korean:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"][:1024]
            if len(ids) < 2:
                continue
            log_p = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1].float(), -1)
            nll = -log_p.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
            mass = log_p[:, :size][:, dead].exp().sum(1)
            masses.append(mass)
            bits += float(nll.sum()) / math.log(2)
            bits_renormalised += float((nll + torch.log1p(-mass.clamp(max=1 - 1e-6))).sum()) / math.log(2)
            n_bytes += len(tokenizer.decode(ids[1:]).encode())
    record = {"experiment": "dead-mass", "model": str(model_dir), "dead_base_tokens": int(dead.sum()),
              "mean_dead_mass": float(torch.cat(masses).mean()), "korean_bpb_first_1024": bits / n_bytes,
              "korean_bpb_renormalised": bits_renormalised / n_bytes}  # fmt: skip
    write_record(out / "scores.jsonl", record)


def english_noise(out: Path, model_dir: Path, start: Path, threads: int) -> None:
    """How far apart can two held-out English samples put the same model's forgetting? ``model_dir``'s English bits
    per byte over ``start``'s (both scored per document) on the text ``merge_with_base: auto`` checks (the Python
    reference's, after the 50,000 characters evaluation scores by default) and on bench_cpt.py's 20,000 evaluation
    characters, with a bootstrap over documents (2,000 resamples) for each ratio's standard deviation."""
    import random

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redwhale.config.schema import EvalSection
    from redwhale.core.bpb import bits_per_byte
    from redwhale.core.text import heldout_after, heldout_sample
    from redwhale.corpus.bundled import python_docs_english

    torch.set_num_threads(threads)
    english = lambda: python_docs_english(unit="paragraph")  # noqa: E731
    samples = {"check": heldout_after(english(), EvalSection().english_chars, 10_000, 0, heldout_only=False),
               "evaluation": heldout_sample(english(), 20_000, 0, heldout_only=False)}  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    per_doc = {}
    for name, folder in (("start", start), ("model", model_dir)):
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        for text_name, docs in samples.items():
            per_doc[name, text_name] = [bits_per_byte(model, tokenizer, [d], 1024, 512).nll_bits for d in docs]

    def ratio(before: list[float], after: list[float], idx) -> float:
        return sum(after[i] for i in idx) / sum(before[i] for i in idx)

    record = {"experiment": "english-noise", "model": str(model_dir), "start": str(start)}
    for text_name, docs in samples.items():
        pair = per_doc["start", text_name], per_doc["model", text_name]
        rng = random.Random(0)
        boots = [ratio(*pair, [rng.randrange(len(docs)) for _ in docs]) for _ in range(2000)]
        mean = sum(boots) / len(boots)
        sd = (sum((b - mean) ** 2 for b in boots) / len(boots)) ** 0.5
        record[text_name] = {"documents": len(docs), "ratio": ratio(*pair, range(len(docs))), "bootstrap_sd": sd}
    write_record(out / "scores.jsonl", record)


def auto_further(out: Path, arm: Path, weights: list[float], bench_out: Path, threads: int) -> None:
    """A bench_cpt.py arm (``--model <out>/budget-960/a``) whose ``merge_with_base: auto`` stopped at its largest
    weight still above the tolerance: the search continued from its model to ``weights`` (global, as auto's) with
    the trainer's own pieces (``merge_within_tolerance``, the default check text, its window, the bf16 autocast a
    run on this CPU measures in, the reference the run measured), and the model it keeps scored on bench_cpt.py's own
    held-out text; one line in ``auto_further.jsonl``. What the longer search gives *that* training run: a rerun's
    probe would reserve the longer search and train a few seconds less."""

    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import SEQ, prepared_corpus
    from bench_cpt import score as bench_score
    from redwhale.config.schema import EvalSection, TrainSection
    from redwhale.core.bpb import bits_per_byte
    from redwhale.core.environment import cpu_native_bf16
    from redwhale.core.source import load_tokenizer
    from redwhale.core.text import heldout_after
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.train.merge import merge_within_tolerance

    torch.set_num_threads(threads)
    trained, start = arm / "train" / "model", arm / "extend" / "model"
    search = json.loads((trained / "training_summary.json").read_text())["merge_search"]
    applied = search["weight"]
    base_rows = base_vocab(start)
    model = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32)
    tokenizer = load_tokenizer(str(trained))
    check = heldout_after(python_docs_english(unit="paragraph"), EvalSection().english_chars,
                          TrainSection().english_check_chars, 0, heldout_only=False)  # fmt: skip
    window = min(1024, SEQ)

    def english() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_native_bf16()):
            return bits_per_byte(model, tokenizer, check, window, window // 2).bits_per_byte

    further = [1 - (1 - w) / (1 - applied) for w in weights if w > applied]  # from the model merged at ``applied``
    result = merge_within_tolerance(model, start, base_rows, english, search["reference_english_bpb"],
                                    search["tolerance"], further, reference=search["reference"])  # fmt: skip
    kept = 1 - (1 - applied) * (1 - result["weight"])
    work = out / "auto-further" / f"{arm.parent.name}-{arm.name}"
    save_beside(model, work, trained)
    prepared = prepared_corpus(bench_out)
    scored = bench_score(work, *bench_heldout(prepared), work / "eval.json")
    record = {"arm": str(arm), "stopped_at": applied, "reference_english_bpb": search["reference_english_bpb"],
              "bench_last_searched": search["searched"][-1],
              "searched": [{**s, "weight": 1 - (1 - applied) * (1 - s["weight"])} for s in result["searched"]],
              "weight": kept, "within": result["within"], **scored}  # fmt: skip
    write_record(out / "auto_further.jsonl", record)
    for path in work.glob("*.safetensors"):
        path.unlink()


def unmerge(out: Path, arms: list[Path], bench_out: Path, threads: int) -> None:
    """How much Korean does ``merge_with_base: auto`` give back for English? A bench_cpt.py arm's kept model is
    ``(1 - w) * trained + w * start`` on every base weight (the new rows kept as trained, :func:`merge_with_start`),
    so the model training produced is recovered exactly (to float32 rounding) as ``(merged - w * start) / (1 - w)``
    on the same weights, and scored on bench_cpt.py's own held-out text beside the kept model's recorded figures;
    one line in ``unmerge.jsonl``. Analysis of a finished arm, not a choice of defaults."""

    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import prepared_corpus
    from bench_cpt import score as bench_score
    from redwhale.train.merge import safetensors_index

    torch.set_num_threads(threads)
    prepared = prepared_corpus(bench_out)
    korean, english = bench_heldout(prepared)
    for arm in arms:
        trained, start = arm / "train" / "model", arm / "extend" / "model"
        summary = json.loads((trained / "training_summary.json").read_text())
        weight = summary["merge_search"]["weight"]
        base_rows = base_vocab(start)
        model = AutoModelForCausalLM.from_pretrained(trained, dtype=torch.float32)
        index = safetensors_index(start)
        rows = (model.get_input_embeddings().weight, model.get_output_embeddings().weight)
        embedding_name = next(n for n, p in model.named_parameters() if p is rows[0])
        with torch.no_grad():
            for name, param in model.named_parameters():
                source = name if name in index else embedding_name  # a tied start: its head is its embeddings
                with safe_open(str(index[source]), framework="pt") as handle:
                    begin = handle.get_tensor(source).float()
                target = param.data[:base_rows] if any(param is r for r in rows) else param.data
                target.copy_((target - weight * begin[: target.shape[0]]) / (1 - weight))
        work = out / "unmerged" / f"{arm.parent.name}-{arm.name}"
        save_beside(model, work, trained)
        scored = bench_score(work, korean, english, work / "eval.json")
        kept = json.loads((arm / "eval.json").read_text()) if (arm / "eval.json").is_file() else {}
        record = {"experiment": "unmerge", "arm": str(arm), "merged_weight": weight, "unmerged": scored,
                  "kept": {k: kept.get(k) for k in ("korean_bpb", "english_bpb")}}  # fmt: skip
        write_record(out / "unmerge.jsonl", record)
        for path in work.glob("*.safetensors"):
            path.unlink()


def _token_bits(model_dir: Path, texts: list[str], threads: int) -> list[tuple[list[int], list[bytes], list[float]]]:
    """Each document's tokens under ``model_dir``'s own tokenizer: ids, their bytes (byte-level BPE), and the bits
    the model spends on each, scored exactly as :func:`redwhale.core.bpb.bits_per_byte` scores them (each document
    from its BOS, windows of 1,024 with 512 of context), so the bits summed over the bytes is the model's bpb."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    from redwhale.core.bpb import _windows, prefix_token_id
    from redwhale.core.source import load_tokenizer

    torch.set_num_threads(threads)
    to_byte = {c: b for b, c in bytes_to_unicode().items()}
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces = [bytes(to_byte[c] for c in t) for t in tokenizer.convert_ids_to_tokens(ids)]
        assert b"".join(pieces) == text.encode("utf-8"), "not a byte-level BPE tokenizer"
        bits: list[float] = []
        for w in _windows([prefix_token_id(tokenizer), *ids], 1024, 512):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([w.ids])).logits[0].float()
            nll = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(w.ids[1:]), reduction="none")
            bits.extend((nll[w.score_from - 1 :] / math.log(2)).tolist())
        out.append((ids, pieces, bits))
    return out


def _row_similarity(model_dir: Path, base_rows: int, sample: int = 2000) -> dict[str, float]:
    """Mean cosine similarity between rows of the input embeddings and of the LM head, among the new rows and among
    the base rows (``sample`` of each, the same seed): how alike the rows are that must tell tokens apart."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    out = {}
    for name, matrix in (
        ("input", model.get_input_embeddings().weight),
        ("head", model.get_output_embeddings().weight),
    ):
        for kind, rows in (("new", matrix[base_rows:].detach()), ("base", matrix[:base_rows].detach())):
            pick = torch.randint(0, rows.shape[0], (sample,), generator=torch.Generator().manual_seed(0))
            unit = torch.nn.functional.normalize(rows[pick].float(), dim=1)
            out[f"{name} rows, {kind}: mean cosine"] = (unit @ unit.T).mean().item()
    return out


def buckets(out: Path, arm: Path, full: Path, bench_out: Path, threads: int) -> None:
    """Where does the extended model lose Korean to full fine-tuning? Every byte of bench_cpt.py's held-out Korean
    is charged the bits each model spends on the token holding it (spread evenly over the token's bytes: exact in
    sum, the models' bpb). Bytes are grouped by the token of ``arm``'s model (bench_cpt.py's (a)) that holds them, and
    again by the token of (a) *before* it (the context (a) reads): a base token, or a new token by how many times it
    occurred in the tokens (a) trained (expected: its count in the training split x the share of the split trained);
    and a third time by whether (a)'s token occurred earlier in the same document (a repeat, which a model can copy
    from its context). Each group's bits per byte under (a), under ``full`` (the (b) model) and under the base, and
    its share of the gap between (a) and (b) in bits; with how alike (a)'s new rows are (:func:`_row_similarity`).
    r34: and the 25 tokens of (a) that cost it the most bits against (b), with the 10 that save it the most. One line
    in ``buckets.jsonl``. Analysis of finished arms, not a choice of defaults."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import prepared_corpus
    from redwhale.core.source import load_tokenizer, materialize, resolve
    from redwhale.models.extend import count_tokens
    from redwhale.recipe.phases import read_texts

    prepared = prepared_corpus(bench_out)
    korean, _ = bench_heldout(prepared)
    trained_model = arm / "train" / "model"
    base_rows = base_vocab(arm / "extend" / "model")
    summary = json.loads((trained_model / "training_summary.json").read_text())
    trained_tokens = sum(s["tokens"] for s in summary["stages"])
    tokenizer = load_tokenizer(str(trained_model))
    counts = count_tokens(tokenizer, list(read_texts(prepared.split("train")))).tolist()
    share = trained_tokens / sum(counts)
    scored = {name: _token_bits(path, korean, threads)
              for name, path in (("a", trained_model), ("b", full), ("base", materialize(resolve(BASE), None)))}  # fmt: skip
    edges = (0.5, 2, 8, 32, float("inf"))
    names = ["base token", "new, seen < 0.5", "new, seen 0.5-2", "new, seen 2-8", "new, seen 8-32", "new, seen >= 32"]

    def group(token: int | None) -> str:
        if token is None:
            return "document start"
        return (
            names[0]
            if token < base_rows
            else names[1 + next(i for i, e in enumerate(edges) if counts[token] * share < e)]
        )

    repeats = ["first in its document, base", "first in its document, new", "repeat, base", "repeat, new"]
    tables = {by: {} for by in ("token", "previous token", "occurrence in the document")}
    per_token: dict[int, dict] = {}  # r34: the same sums for each of (a)'s tokens
    for doc in range(len(korean)):
        per_byte = {}
        for name in ("b", "base"):
            _, pieces, bits = scored[name][doc]
            per_byte[name] = [x / len(p) for p, x in zip(pieces, bits, strict=True) for _ in p]
        at, previous, seen = 0, None, set()
        for token, piece, bits in zip(*scored["a"][doc], strict=True):
            charged = {"a": bits, **{n: sum(per_byte[n][at : at + len(piece)]) for n in ("b", "base")}}
            repeat = repeats[2 * (token in seen) + (token >= base_rows)]
            for table, key in ((tables["token"], group(token)), (tables["previous token"], group(previous)),
                               (tables["occurrence in the document"], repeat), (per_token, token)):  # fmt: skip
                g = table.setdefault(key, {"bytes": 0, "tokens": 0, "a": 0.0, "b": 0.0, "base": 0.0})
                g["bytes"], g["tokens"] = g["bytes"] + len(piece), g["tokens"] + 1
                for n, x in charged.items():
                    g[n] += x
            at, previous = at + len(piece), token
            seen.add(token)
    total = sum(g["bytes"] for g in tables["token"].values())
    gap = sum(g["a"] - g["b"] for g in tables["token"].values())
    rows = {by: [{"group": n, "share_of_bytes": g["bytes"] / total, "tokens": g["tokens"],
                  **{f"{m}_bpb": g[m] / g["bytes"] for m in ("a", "b", "base")}, "share_of_gap": (g["a"] - g["b"]) / gap}
                 for n in ["document start", *names, *repeats] if (g := table.get(n))]
            for by, table in tables.items()}  # fmt: skip
    overall = {f"{m}_bpb": sum(g[m] for g in tables["token"].values()) / total for m in ("a", "b", "base")}
    similarity = _row_similarity(trained_model, base_rows)
    ranked = sorted(per_token.items(), key=lambda kv: kv[1]["b"] - kv[1]["a"])  # (a)'s worst tokens first
    tokens = [{"token": tokenizer.decode([t]), "id": t, "new": t >= base_rows, "occurrences": g["tokens"],
               "bytes": g["bytes"], "trained_occurrences": counts[t] * share, "a_bpb": g["a"] / g["bytes"],
               "b_bpb": g["b"] / g["bytes"], "share_of_gap": (g["a"] - g["b"]) / gap}
              for t, g in ranked[:25] + ranked[-10:]]  # fmt: skip
    record = {"experiment": "buckets", "arm": str(arm), "full": str(full), "trained_tokens": trained_tokens,
              "share_of_split_trained": share, "overall": overall, "groups": rows, "row_similarity": similarity,
              "tokens": tokens}  # fmt: skip
    write_record(out / "buckets.jsonl", record, show=False)
    for by, table in rows.items():
        print(f"\n| bytes by (a)'s {by} | share of bytes | (a)'s tokens | (a) bpb | (b) bpb | (a) / (b) "
              "| share of the gap | base bpb |")  # fmt: skip
        every = {"group": "all", "share_of_bytes": 1.0, "tokens": sum(r["tokens"] for r in table), "share_of_gap": 1.0}
        for r in [*table, {**every, **overall}]:
            print(f"| {r['group']} | {r['share_of_bytes']:.1%} | {r['tokens']:,} | {r['a_bpb']:.4f} | {r['b_bpb']:.4f} "
                  f"| {r['a_bpb'] / r['b_bpb']:.3f} | {r['share_of_gap']:+.1%} | {r['base_bpb']:.4f} |")  # fmt: skip
    print("\n| (a)'s token | new | in the text | seen in training | (a) bpb | (b) bpb | share of the gap |")
    for r in tokens:
        print(f"| {r['token']!r} | {'new' if r['new'] else 'base'} | {r['occurrences']} | {r['trained_occurrences']:.0f} "
              f"| {r['a_bpb']:.2f} | {r['b_bpb']:.2f} | {r['share_of_gap']:+.1%} |")  # fmt: skip
    print("\n" + "; ".join(f"{k}: {v:.3f}" for k, v in similarity.items()))


CACHE_WEIGHTS = ((0.05, 0.0), (0.1, 0.0), (0.2, 0.0), (0.05, 0.1), (0.05, 0.2), (0.1, 0.2))
LENGTHS = ((0, 100), (100, 300), (300, 1000), (1000, None))  # characters: reviews are short, petitions long


def _with_cache(ids: list[int], bits: list[float], unigram: float, bigram: float) -> float:
    """Bits of a document's tokens under the model mixed with a cache of the document so far (written by hand: a
    measurement, no library scores a cache mixture from per-token bits): ``(1 - u - g) p + u c(t) / i + g c(prev, t)
    / c(prev)``, where the bigram term (what an induction head does: the token that followed the previous token the
    last times) is used only where the previous token occurred before (else its weight goes back to the model)."""
    total, tokens, pairs, before = 0.0, {}, {}, {}
    for i, (token, b) in enumerate(zip(ids, bits, strict=True)):
        p = 2.0**-b
        if i:
            previous = ids[i - 1]
            copied = unigram * tokens.get(token, 0) / i
            if before.get(previous):
                p = (1 - unigram - bigram) * p + copied + bigram * pairs.get((previous, token), 0) / before[previous]
            else:
                p = (1 - unigram) * p + copied
            pairs[(previous, token)] = pairs.get((previous, token), 0) + 1
            before[previous] = before.get(previous, 0) + 1
        total -= math.log2(p)
        tokens[token] = tokens.get(token, 0) + 1
    return total


def hangul_words(texts: list[str]) -> list[str]:
    """The whitespace-separated words of ``texts`` that hold a Hangul syllable (r35's sequences written twice are drawn
    from them; ``redwhale.core.scripts``' Hangul also counts bare jamo such as ``ㅋㅋ``, which these leave out)."""
    return [w for text in texts for w in text.split() if re.search("[\uac00-\ud7a3]", w)]


def copying(out: Path, arms: list[Path], bench_out: Path, threads: int) -> None:
    """r35: how much of (a)'s gap to full fine-tuning is copying from the document? For each finished bench_cpt arm
    (``--model`` its folders: ``budget-480/a``, ``budget-480/b``, ...), on bench_cpt's held-out Korean: its bits per
    byte by document length (the corpus's movie reviews are short, its petitions long, with a topic's words
    repeated); by where each token stands in its document: first occurrence, a token seen before in another context,
    or a *bigram* seen before (the token after the same previous token: what the base's induction heads copy, as
    full fine-tuning does inside a word split into byte pieces); and mixed with a cache of the document so far
    (:func:`_with_cache`, at the weights in ``CACHE_WEIGHTS``): the bits a copying mechanism the model lacks would
    save; and on 16 sequences of 32 held-out words each written twice, the bits per byte of the first and of the
    second time (a model that copies pays little the second time). ``--model`` may also name model folders (an
    extension untrained, a ``replay`` run's model). One line per arm in ``copying.jsonl``. Analysis of finished arms,
    not a choice of defaults."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import prepared_corpus

    korean, _ = bench_heldout(prepared_corpus(bench_out))
    sizes = [len(text.encode("utf-8")) for text in korean]
    rng, words = random.Random(1), hangul_words(korean)
    # 32 words: written twice, under 1,024 tokens even with the base tokenizer's ~2 a character, so that every token of
    # the second time is scored with the whole first time in its window
    sequences = [" ".join(rng.choice(words) for _ in range(32)) for _ in range(16)]
    probes, halves = [f"{q}\n{q}" for q in sequences], [len(f"{q}\n".encode()) for q in sequences]
    for arm in arms:
        model = arm_model(arm)
        base_rows = base_vocab(model, required=False)  # none for the base tokenizer's arm
        scored = _token_bits(model, korean, threads)
        by_length = []
        for low, high in LENGTHS:
            docs = [i for i, text in enumerate(korean) if len(text) >= low and (high is None or len(text) < high)]
            size = sum(sizes[i] for i in docs)
            by_length.append({"chars": f"{low}-{high or ''}", "documents": len(docs), "share_of_bytes": size / sum(sizes),
                              "bpb": sum(sum(scored[i][2]) for i in docs) / size})  # fmt: skip
        by_occurrence: dict[str, list[float]] = {}
        for ids, pieces, bits in scored:
            pairs, seen = set(), set()
            for i, (token, piece, b) in enumerate(zip(ids, pieces, bits, strict=True)):
                pair = (ids[i - 1] if i else None, token)
                kind = "bigram seen" if pair in pairs else "token seen, new context" if token in seen else "first"
                kind += "" if base_rows is None else (", new" if token >= base_rows else ", base")
                g = by_occurrence.setdefault(kind, [0.0, 0])
                g[0], g[1] = g[0] + b, g[1] + len(piece)
                pairs.add(pair)
                seen.add(token)
        cache = {f"unigram {u:g}, bigram {g:g}": sum(_with_cache(ids, bits, u, g) for ids, _, bits in scored) / sum(sizes)
                 for u, g in CACHE_WEIGHTS}  # fmt: skip
        # a sequence of 32 held-out words written twice: how much cheaper is the second time (the base's tokens, copied
        # by the base's induction heads, cost almost nothing the second time)
        first_half = second_half = 0.0
        for (_, pieces, bits), half in zip(_token_bits(model, probes, threads), halves, strict=True):
            at = next(i for i, end in enumerate(itertools.accumulate(map(len, pieces))) if end > half)  # past the line
            first_half, second_half = first_half + sum(bits[:at]), second_half + sum(bits[at:])
        probe_bytes = sum(halves)
        record = {"experiment": "copying", "arm": str(arm), "korean_bpb": sum(sum(d[2]) for d in scored) / sum(sizes),
                  "by_length": by_length,
                  "by_occurrence": {k: {"bpb": v[0] / v[1], "share_of_bytes": v[1] / sum(sizes)}
                                    for k, v in sorted(by_occurrence.items())},
                  "with_cache": cache, "repeated_sequence": {"first_bpb": first_half / probe_bytes,
                                                             "second_bpb": second_half / probe_bytes}}  # fmt: skip
        write_record(out / "copying.jsonl", record)


def spread(out: Path, models: list[Path], bench_out: Path, alphas: list[float], threads: int) -> None:
    """r36: how sharp are a model's predictions on Korean, and do the new output rows' likeness limit them? For each
    model (a bench arm's folder or a model folder), on the held-out Korean disjoint from the bench's, windowed as
    :func:`redwhale.core.bpb.bits_per_byte` windows it: bits per byte; bits per token and the entropy of the predicted
    distribution (bits per token); the mean probability of the top token; the probability on new tokens; and the
    standard deviation of the logits across the new rows and across the base rows at each position (averaged). An
    extended model's new output rows start alike (mean cosine 0.81, the base's 0.45), so their logits differ little
    wherever the hidden state points; for such a model also its bits per byte with each new output row ``w`` replaced
    by ``c + alpha (w - c)``, ``c`` the new rows' mean (``--alphas``; 1 is the model as it is): would a sharper
    spread of the rows it has read better, post hoc? One line per model in ``spread.jsonl``."""
    import torch
    from transformers import AutoModelForCausalLM

    from redwhale.core.bpb import backbone, document_windows
    from redwhale.core.source import load_tokenizer

    torch.set_num_threads(threads)
    _, korean, _ = texts(bench_out)
    for arm in models:
        model_dir = arm_model(arm)
        base_rows = base_vocab(model_dir, required=False)
        tokenizer = load_tokenizer(str(model_dir))
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        head = model.get_output_embeddings()
        assert head.bias is None and not getattr(model.config, "logit_scale", None), "a plain linear head only"
        weight = head.weight.detach()
        windows, size, tokens = document_windows(tokenizer, korean, 1024, 512)  # as bits_per_byte windows them
        hidden, targets = [], []
        with torch.no_grad():  # the final hidden states of every scored position, once
            for w in windows:
                states = backbone(model)(input_ids=torch.tensor([w.ids])).last_hidden_state[0]
                hidden.append(states[w.score_from - 1 : -1])
                targets.append(torch.tensor(w.ids[w.score_from :]))
        stats = dict.fromkeys(("bits", "entropy", "top1", "new_mass", "std_new", "std_base"), 0.0)
        ln2 = math.log(2)
        with torch.no_grad():
            for h, y in zip(hidden, targets, strict=True):
                logits = h @ weight.T
                logp = torch.log_softmax(logits, -1)
                p = logp.exp()
                stats["bits"] += -logp.gather(1, y[:, None]).sum().item() / ln2
                stats["entropy"] += -(p * logp).sum().item() / ln2
                stats["top1"] += p.max(-1).values.sum().item()
                stats["std_base"] += logits[:, : base_rows or weight.shape[0]].std(-1).sum().item()
                if base_rows:
                    stats["new_mass"] += p[:, base_rows:].sum().item()
                    stats["std_new"] += logits[:, base_rows:].std(-1).sum().item()
        record = {"experiment": "spread", "model": str(model_dir), "korean_bpb": stats["bits"] / size,
                  "tokens": tokens, "bits_per_token": stats["bits"] / tokens, "entropy_bits": stats["entropy"] / tokens,
                  "top1_probability": stats["top1"] / tokens, "logit_std_base_rows": stats["std_base"] / tokens}  # fmt: skip
        if base_rows:
            rows_new = weight[base_rows:]
            centre = rows_new.mean(0)
            by_alpha = {}
            with torch.no_grad():
                for alpha in alphas:
                    scaled = weight.clone()
                    scaled[base_rows:] = centre + alpha * (rows_new - centre)
                    bits = sum(torch.nn.functional.cross_entropy(h @ scaled.T, y, reduction="sum").item()
                               for h, y in zip(hidden, targets, strict=True))  # fmt: skip
                    by_alpha[f"{alpha:g}"] = bits / ln2 / size
            record.update(new_probability=stats["new_mass"] / tokens, logit_std_new_rows=stats["std_new"] / tokens,
                          bpb_by_alpha=by_alpha, **_row_similarity(model_dir, base_rows))  # fmt: skip
        write_record(out / "spread.jsonl", record)


def repeat_split(model_dir: Path, texts: list[str], base_rows: int, threads: int) -> dict[str, float]:
    """Bits per byte of ``model_dir`` on ``texts`` by whether each token occurred earlier in its document (a repeat,
    which a model can copy from context) and whether it is new (id >= ``base_rows``); "all" is the model's bpb."""
    groups: dict[str, list[float]] = {}
    for ids, pieces, bits in _token_bits(model_dir, texts, threads):
        seen: set[int] = set()
        for token, piece, x in zip(ids, pieces, bits, strict=True):
            key = ("repeat" if token in seen else "first") + (", new" if token >= base_rows else ", base")
            g = groups.setdefault(key, [0.0, 0.0])
            g[0], g[1] = g[0] + len(piece), g[1] + x
            seen.add(token)
    total = sum(g[0] for g in groups.values())
    return {"all": sum(g[1] for g in groups.values()) / total,
            **{k: g[1] / g[0] for k, g in sorted(groups.items())},
            **{f"{k}: share of bytes": g[0] / total for k, g in sorted(groups.items())}}  # fmt: skip


def repeated(out: Path, model_dir: Path, bench_out: Path, stage_tokens: int, threads: int) -> None:
    """r23: can the extended model learn to copy its new tokens from context? (``buckets``: (a) reads a repeat of a new
    token within a document at 1.81 bits per byte against 1.86 the first time, where full fine-tuning copies it at
    1.04, and the base in its own pieces 1.32 / 2.72; on the held-out text disjoint from the bench's, the untrained
    extension 1.91 / 1.92.) Stage 1 of the default schedule trained on every training document written twice (the
    same tokens a step: half of them a repeat the model can copy), the new input rows alone (the default's trainable
    rows) or the new input and head rows; then the default's last three stages on the documents as they are,
    ``stage_tokens`` each. Scored on the held-out Korean disjoint from bench_cpt.py's, by repeat and first
    occurrence (:func:`repeat_split`), with the default four stages beside it; one line each in ``repeated.jsonl``,
    unmerged."""
    import torch

    from redwhale.config.schema import default_stages
    from redwhale.core.source import materialize, resolve
    from redwhale.train.run import train_schedule

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    base_dir = materialize(resolve(BASE), None)
    base_rows = base_vocab(model_dir)
    stages = [dict(s, share=None) for s in default_stages()]
    records = out / "repeated.jsonl"
    done = recorded_names(records)
    twice = [f"{t}\n\n{t}" for t in train]
    head_too = dict(stages[0], trainable={"embeddings": "new", "lm_head": "new"}, lazy_head_rows=False)  # as r23 ran
    if "the extension, untrained" not in done:
        result = score(model_dir, out / "repeated" / "untrained-eval.json", korean, english, base_dir)
        record = {"experiment": "repeated", "name": "the extension, untrained", "model": str(model_dir),
                  "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
                  "korean_by_occurrence": repeat_split(model_dir, korean, base_rows, threads)}  # fmt: skip
        write_record(records, record)
    for name, first, first_texts in (("default four stages", stages[0], train),
                                     ("stage 1 on documents written twice", stages[0], twice),
                                     ("stage 1 on documents written twice, head rows too", head_too, twice)):  # fmt: skip
        if name in done:
            continue
        work = out / "repeated" / name.replace(" ", "-").replace(",", "")
        started = time.perf_counter()
        one = train_schedule(model_dir, first_texts, None, train_section([first], [stage_tokens]), work / "stage1")
        rest = train_schedule(work / "stage1" / "model", train, None,
                              train_section(stages[1:], [stage_tokens] * 3), work / "rest")  # fmt: skip
        seconds = time.perf_counter() - started
        result = score(work / "rest" / "model", work / "eval.json", korean, english, base_dir)
        record = {"experiment": "repeated", "name": name, "model": str(model_dir), "train_seconds": round(seconds, 1),
                  "stages": [{k: s[k] for k in ("stage", "tokens", "seconds", "final_loss")}
                             for s in one["stages"] + rest["stages"]],
                  "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
                  "korean_by_occurrence": repeat_split(work / "rest" / "model", korean, base_rows, threads)}  # fmt: skip
        write_record(records, record)
        for folder in (work / "stage1" / "model", work / "rest" / "model"):
            for path in folder.glob("*.safetensors"):
                path.unlink()


def head_only(out: Path, arm: Path, bench_out: Path, tokens: int, rates: list[float], threads: int) -> None:
    """r34: do the frozen new head rows hold (a) back? (``buckets`` on r33's 480 s arms: (a) beats (b) on the new
    tokens it trained on fewer than twice and loses on those it trained on 8 times or more, 1.62 bits per byte against
    1.27 at 32 or more, whose output rows stay as calibrated.) ``arm``'s trained model (bench_cpt.py's (a)) trains its
    LM head's new rows alone, lazily (``lazy_head_rows``), at each of ``rates`` for ``tokens`` Korean tokens, everything
    else frozen; each scored on the held-out Korean disjoint from the bench's, by first occurrence and repeat
    (:func:`repeat_split`), beside the model as it is. One line each in ``head_only.jsonl``."""
    import torch

    from redwhale.core.source import materialize, resolve
    from redwhale.train.run import train_schedule

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    base_dir = materialize(resolve(BASE), None)
    start = arm / "train" / "model"
    base_rows = base_vocab(start)
    records = out / "head_only.jsonl"
    done = recorded_names(records)
    if "as trained" not in done:
        result = score(start, out / "head_only" / "start-eval.json", korean, english, base_dir)
        write_record(records, {"experiment": "head_only", "name": "as trained", "model": str(start),
                               "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
                               "korean_by_occurrence": repeat_split(start, korean, base_rows, threads)})  # fmt: skip
    for rate in rates:
        name = f"the new head rows alone, lazily at {rate:g}, {tokens} tokens"
        if name in done:
            continue
        work = out / "head_only" / f"lr-{rate:g}"
        stage = {"name": "head_rows", "trainable": {"lm_head": "new"}, "lr": rate}
        started = time.perf_counter()
        summary = train_schedule(start, train, None, train_section([stage], [tokens]), work)
        seconds = time.perf_counter() - started
        result = score(work / "model", work / "eval.json", korean, english, base_dir)
        write_record(records, {"experiment": "head_only", "name": name, "model": str(start), "tokens": tokens,
                               "train_seconds": round(seconds, 1), "final_loss": summary["stages"][0]["final_loss"],
                               "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
                               "korean_by_occurrence": repeat_split(work / "model", korean, base_rows, threads)})  # fmt: skip
        for path in (work / "model").glob("*.safetensors"):
            path.unlink()


def rows(out: Path, model_dir: Path, variants: list[str], bench_out: Path, threads: int) -> None:
    """r25: do new rows that are less alike, or output rows calibrated after the input rows are scaled, start or end
    better? (``buckets``: the new rows' mean cosine is 0.81 against the base rows' 0.45, each the mean of ~8.7 pieces
    on the 80k model, and the untrained extension copies no repeat: 1.91 against 1.92 the first time.) Each variant of
    ``model_dir`` (the pipeline's extended model) is written to ``out/rows/<variant>`` and scored untrained like
    ``score`` (one line each in ``scores.jsonl``, with the new rows' mean cosine); train one with the default schedule
    by linking it as ``ext-80000-pipeline`` in a fresh ``--out`` and running ``run --grid r16``. Variants:

    * ``idf-in:A``: each new *input* row the mean of its pieces' base rows weighted by ``(count + 1) ** -A`` (the
      piece's count in the training text under the base tokenizer: common byte pieces weigh less), at the base rows'
      mean norm as the pipeline leaves it;
    * ``idf-both:A``: the same for the output rows too, each keeping its calibration offset (old row minus its
      pieces' plain mean);
    * ``head:F``: the output rows re-made as their pieces' plain mean times ``F`` (``base``: each at the base rows'
      mean norm), then the offsets fitted again (``calibrate``, 2,048 positions as the pipeline) on the model as it
      is, its input rows already scaled (the pipeline calibrates before scaling them);
    * r31, ``center-in:F``: the new input rows less ``F`` times their mean row, then at the base rows' mean norm;
    * r31, ``rand-in:F`` / ``rand-both:F``: a random unit direction per new token (seed 0) times ``F`` times the row's
      norm added to its input row (then at the base's mean norm) / to its input and, the same direction, its output
      row (then the offsets fitted again, as ``head``): rows as unlike as the base's, for the base's copying circuits
      to tell them apart;
    * r32, ``tag-in:F`` / ``tag-both:F``: each new token tagged with a base word the model already copies (words of
      four letters or more after a space, the 500 commonest left out, given to the new tokens by their count in the
      training text, commonest first, reused past 27,385): the word's input row, as a unit direction times ``F`` times
      the row's norm, added to the new input row (then at the base's mean norm) / to its input and output rows (then
      the offsets fitted again): an identity the base's copying circuits know."""

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redwhale.core.source import materialize, resolve
    from redwhale.models.extend import calibration_data, count_tokens, match_input_norms, new_token_strings
    from redwhale.models.init import calibrate, decompose

    torch.set_num_threads(threads)
    train, _, _ = texts(bench_out)
    base_dir = materialize(resolve(BASE), None)
    base_tok, tokenizer = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(model_dir)
    base = len(base_tok)
    pieces = decompose(base_tok.backend_tokenizer, new_token_strings(tokenizer, base))
    new = slice(base, base + len(pieces))
    piece_counts = count_tokens(base_tok, train[:20_000])[:base]

    def weighted(matrix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return torch.stack([(weights[ids, None] * matrix[ids]).sum(0) / weights[ids].sum() if ids else matrix[r]
                            for r, ids in enumerate(pieces, start=base)])  # fmt: skip

    if any(v.startswith("tag-") for v in variants):  # r32: each new token tagged with a base word the model copies
        words = [i for i in range(base) if re.fullmatch(r"Ġ[A-Za-z]{4,}", base_tok.convert_ids_to_tokens(i))][500:]
        counts_new = count_tokens(tokenizer, train[:20_000])[new]
        by_count = sorted(range(len(pieces)), key=lambda r: -int(counts_new[r]))
        tags = torch.empty(len(pieces), dtype=torch.long)
        tags[by_count] = torch.tensor([words[i % len(words)] for i in range(len(pieces))])

    built = []
    for variant in variants:
        kind, _, value = variant.partition(":")
        folder = out / "rows" / variant.replace(":", "-")
        built.append(folder)
        if folder.is_dir():
            continue
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
        plain = torch.ones(base)
        with torch.no_grad():
            if kind in ("idf-in", "idf-both"):
                idf = (piece_counts + 1.0).float() ** -float(value)
                embed[new] = weighted(embed, idf)
                if kind == "idf-both":
                    head[new] = weighted(head, idf) + (head[new] - weighted(head, plain))
            elif kind == "center-in":
                embed[new] -= float(value) * embed[new].mean(0)
            elif kind in ("rand-in", "rand-both", "tag-in", "tag-both"):
                if kind.startswith("rand"):
                    direction = torch.randn(len(pieces), embed.shape[1], generator=torch.Generator().manual_seed(0))
                else:
                    direction = embed[tags].clone()
                direction /= direction.norm(dim=1, keepdim=True)
                embed[new] += float(value) * embed[new].norm(dim=1, keepdim=True) * direction
                if kind.endswith("-both"):
                    head[new] += float(value) * head[new].norm(dim=1, keepdim=True) * direction
            elif kind == "head":
                rows_out = weighted(head, plain)
                scale = (
                    head[:base].norm(dim=1).mean() / rows_out.norm(dim=1, keepdim=True)
                    if value == "base"
                    else float(value)
                )
                head[new] = rows_out * scale
            else:
                raise SystemExit(f"unknown variant {variant!r}")
        if kind in ("idf-in", "idf-both", "center-in", "rand-in", "rand-both", "tag-in", "tag-both"):
            match_input_norms(model, base, new.stop)  # at the base rows' mean norm, as the pipeline leaves them
        if kind in ("head", "rand-both", "tag-both"):
            sample, counts = calibration_data(tokenizer, train, 30_000, 0)  # the extend phase's defaults
            calibrate(model, tokenizer, sample, counts[new], pieces, base, max_positions=2048)
        save_beside(model, folder, model_dir)
    score_models(out, built, bench_out, threads)
    for folder in built:
        similarity = _row_similarity(folder, base)
        write_record(out / "scores.jsonl", {"experiment": "rows", "model": str(folder), **similarity})


@contextlib.contextmanager
def cache_targets(unigram: float, bigram: float):
    """r35: the training loop's loss replaced, while inside, by cross-entropy toward ``(1 - unigram - bigram)`` on the
    true next token, ``unigram`` spread over the tokens of the block so far (by count) and ``bigram`` over the tokens
    that followed the current token earlier in the block (its weight back on the true token where there are none):
    at its optimum the model predicts :func:`_with_cache`'s mixture, which ``copying`` found best for (a). Written by
    hand (a soft-target loss no library has); the model's own head over the whole vocabulary, not the fused loss, so
    its steps are slower (a measurement at equal tokens)."""
    import torch

    import redwhale.train.loop as loop
    from redwhale.train.loss import CausalLMLoss

    class CacheTargetLoss(CausalLMLoss):
        def forward(self, input_ids: torch.Tensor, **model_kwargs) -> torch.Tensor:
            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            hidden = base.get_decoder()(input_ids=input_ids, **model_kwargs).last_hidden_state
            logp = base.get_output_embeddings()(hidden[:, :-1]).float().log_softmax(-1)  # blocks x T-1 x vocabulary
            x, n = input_ids, input_ids.shape[1] - 1
            rows = torch.arange(n, device=x.device)
            seen = (rows[None, :] <= rows[:, None]).float() / (rows[:, None] + 1)  # [i, j]: x[j] in the context of i
            total = torch.zeros((), device=logp.device)
            for b in range(x.shape[0]):
                context = x[b, :n]
                true = logp[b, rows, x[b, 1:]]
                uni = (logp[b].gather(1, context[None, :].expand(n, n)) * seen).sum(1)
                same = (context[None, :] == context[:, None]) & (rows[None, :] < rows[:, None])  # x[j] == x[i], j < i
                count = same.sum(1)
                followed = logp[b].gather(1, x[b, 1:][None, :].expand(n, n))  # [i, j]: log p_i(x[j + 1])
                bi = (followed * same).sum(1) / count.clamp(min=1)
                weight_bi = bigram * (count > 0)
                total = total - ((1 - unigram - weight_bi) * true + unigram * uni + weight_bi * bi).mean()
            return total / x.shape[0]

    original = loop.CausalLMLoss
    loop.CausalLMLoss = CacheTargetLoss
    try:
        yield
    finally:
        loop.CausalLMLoss = original


def copy_documents(train: list[str], share: float, words: int = 64, seed: int = 0) -> list[str]:
    """Documents that teach copying (r35): ``words`` words (whitespace-separated, holding Hangul) drawn at random from
    ``train``, the sequence then written again, as many as make about ``share`` of the characters of ``train`` plus
    them."""
    rng = random.Random(seed)
    pool = hangul_words(train[:20_000])
    target = share / (1 - share) * sum(len(t) for t in train)
    out, chars = [], 0
    while chars < target:
        sequence = " ".join(rng.choice(pool) for _ in range(words))
        out.append(f"{sequence}\n{sequence}")
        chars += len(out[-1])
    return out


def replay(
    out: Path, model_dir: Path, bench_out: Path, tokens: int, share: float, threads: int, schedules: list[str]
) -> None:
    """r26: English replay (a stage's ``english_share``) in the stages after the first, from the Python reference's
    documents outside every English text scored here and by bench_cpt.py (and the check text ``merge_with_base: auto``
    chooses on): does it hold English at less Korean than merging back does, for the default schedule and for every
    layer in one stage (which learns more Korean and to copy, at +16% English unreplayed, r23c)? ``tokens`` in all,
    English blocks included (equal compute). Scored on the held-out Korean disjoint from the bench's, the bench's
    English, and licence English (another domain, ``bench_cpt.licence_english``); one line each in ``replay.jsonl``."""
    import torch

    from redwhale.config.schema import default_stages
    from redwhale.core.source import materialize, resolve
    from redwhale.train.run import train_schedule

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    from bench_cpt import licence_english, one_stage_stages, replay_english, replay_stages  # texts() put bench/ on path

    licences = licence_english()
    # the reference outside its first 60,000 characters (those scored, the check text after them, and a margin)
    pool = replay_english(50_000, 10_000)
    assert not set(english) & set(pool)
    base_dir = materialize(resolve(BASE), None)
    records = out / "replay.jsonl"
    done = recorded_names(records)

    def licence_at(model: Path, name: str) -> float:
        return licence_bpb(model, out / "replay" / name / "licences.json", licences)

    if "base" not in done:
        write_record(
            records, {"experiment": "replay", "name": "base", "licence_english_bpb": licence_at(base_dir, "base")}
        )
    if "the extension, untrained" not in done:
        write_record(records, {"experiment": "replay", "name": "the extension, untrained",
                               "licence_english_bpb": licence_at(model_dir, "untrained")})  # fmt: skip
    paper = [dict(s, share=None) for s in default_stages()]
    every_layer = [dict(s, share=None) for s in replay_stages()]  # bench_cpt's arm (d); its english_share set below
    first, layers = every_layer
    # bench_cpt's arm (e), the default since r30: the head's new rows frozen as calibrated (explicitly so, as r32 tried
    # the default with them trained)
    one_stage = [dict(s, share=None, trainable=dict(s.trainable, lm_head="none")) for s in one_stage_stages()]

    def with_head(**fields) -> list[dict]:  # the one stage with the head's new rows trained too (r32, r33)
        return [dict(one_stage[0], trainable=dict(one_stage[0]["trainable"], lm_head="new"), **fields)]

    for schedule_name, name, stages, shares, replayed in (
        ("default", "default", paper, [0.25] * 4, 0.0),
        ("default", f"default, English {share:g} after stage 1", paper, [0.25] * 4, share),
        ("all_layers", f"stage 1 then every layer, English {share:g}", every_layer, [0.25, 0.75], share),
        # r28: what stage 1 buys the every-layer schedule: a tenth of the tokens instead of a quarter, or no stage 1
        # (the new input rows trained beside every layer, at stage 1's rate, for all the tokens)
        ("stage1_tenth", f"stage 1 on a tenth, then every layer, English {share:g}", every_layer, [0.1, 0.9], share),
        ("one_stage", f"every layer and the new input rows in one stage, English {share:g}", one_stage, [1.0], share),
        # r29: with English replayed, does a faster rate for the layers buy Korean (without replay, 6e-4 bought ~1%
        # for +7.8% English on the paper's split: default_stages' table)?
        (
            "all_layers_6e-4",
            f"stage 1 then every layer at 6e-4, English {share:g}",
            [first, dict(layers, lr=6e-4)],
            [0.25, 0.75],
            share,
        ),
        # r29: no stage 1 (the new rows as extend made them), every layer for all the tokens: r18's one stage without
        # replay led the default at equal seconds; run at the tokens the default trains in as many seconds
        ("layers_only", f"every layer in one stage, new rows as extended, English {share:g}", [layers], [1.0], share),
        # r32: the one stage (the default since r30) with every fourth Korean training document written twice, so that
        # a quarter of the documents teach the layers to copy their new tokens (r23: repeats are most of the gap)
        ("one_stage_twice", f"one stage, English {share:g}, a quarter of the documents twice", one_stage, [1.0], share),
        # r32: the one stage with the new *head* rows trained too (at the new input rows' rate): can the output rows
        # learn what the layers write when they copy a new token (the head rows have been frozen as calibrated)?
        (
            "one_stage_head",
            f"one stage and the new head rows, English {share:g}",
            with_head(lazy_head_rows=False),
            [1.0],
            share,
        ),
        # r32: the same, but a new head row moves only at a step whose blocks hold its token (lazy_head_rows): with
        # every row stepped, AdamW moves the rows of absent tokens as far as present ones (its update is normalised),
        # shifting every new logit at once (default_stages' comment). r32 ran it with the training loop patched before
        # the loop did it (the head's full gradient, the absent rows put back after the step); the loop computes the
        # gradient of the present rows alone, so its clipping sees a slightly smaller norm
        (
            "one_stage_lazy_head",
            f"one stage and the new head rows (lazy), English {share:g}",
            with_head(lazy_head_rows=True),
            [1.0],
            share,
        ),
        # r33: the same with the head rows at the layers' rate (head_rows_lr 3e-4), or 6e-4, instead of the input
        # rows' 1e-3: on the demo's 2,000-token vocabulary the lazy rows at 1e-3 did worse than frozen ones (r32)
        (
            "one_stage_lazy_head_3e-4",
            f"one stage and the new head rows (lazy, 3e-4), English {share:g}",
            with_head(lazy_head_rows=True, head_rows_lr=3e-4),
            [1.0],
            share,
        ),
        (
            "one_stage_lazy_head_6e-4",
            f"one stage and the new head rows (lazy, 6e-4), English {share:g}",
            with_head(lazy_head_rows=True, head_rows_lr=6e-4),
            [1.0],
            share,
        ),
        # r34: the one stage's layers at twice full fine-tuning's rate (the buckets of r33's arms: (a) loses to (b) on
        # its commonest new tokens, which only the layers and the input rows learn), the new input rows at 1e-3 still
        (
            "one_stage_6e-4",
            f"every layer at 6e-4 and the new input rows in one stage, English {share:g}",
            [dict(one_stage[0], lr=6e-4)],
            [1.0],
            share,
        ),
        # r34: the new input rows faster (3e-3, 1e-2; the layers at 3e-4): at 1e-3 they end as alike as they start
        # (mean cosine 0.81 in r33's (a), the base rows' 0.45), too alike for the layers to tell tokens apart
        *(
            (
                f"one_stage_new_{rate:g}",
                f"every layer and the new input rows at {rate:g} in one stage, English {share:g}",
                [dict(one_stage[0], new_rows_lr=rate)],
                [1.0],
                share,
            )
            for rate in (3e-3, 1e-2)
        ),
        # r35: a tenth of the training tokens spent on copying: sequences of 64 words drawn at random from the training
        # text, each written twice (``copy_documents``). (a) copies almost nothing of its document (``copying``: a
        # cache of the document would bring r33's (a) from 1.851 to 1.781 at 480 s, (b)'s 1.783), and r32's quarter
        # of the documents written twice trained little of it (1.918): here every second half is copyable and nothing
        # else predicts it
        (
            "one_stage_copy",
            f"one stage, English {share:g}, a tenth of the tokens random words written twice",
            one_stage,
            [1.0],
            share,
        ),
        # r35: the one stage trained toward the document-cache mixture ``copying`` found best for (a) (0.1 on the
        # tokens seen before in the block, 0.2 on those that followed the same previous token, the rest on the true
        # next token; ``cache_targets``): every position teaches copying, not only those whose next token repeats
        (
            "one_stage_cache_targets",
            f"one stage, English {share:g}, trained toward the cache mixture 0.1 and 0.2",
            one_stage,
            [1.0],
            share,
        ),
        # r35: each new input row plus a learned map of its last four pieces' base rows, shared by every new token
        # (``composed_rows``): what a token's pieces carry (a syllable's final consonant, which decides the ending
        # after it) then reaches every new token from what any of them trains
        *(
            (
                f"one_stage_composer_{rate:g}",
                f"one stage, English {share:g}, new input rows composed from their last 4 pieces at {rate:g}",
                one_stage,
                [1.0],
                share,
            )
            for rate in (1e-4, 3e-4)
        ),
    ):
        if name in done or schedule_name not in schedules:
            continue
        kept = stages[:1] if len(stages) > 1 else []  # stage 1 reads Korean alone; a one-stage schedule replays
        stages = kept + [dict(s, english_share=replayed) for s in stages[len(kept) :]]
        work = out / "replay" / name.replace(" ", "-").replace(",", "")
        started = time.perf_counter()
        documents = train
        if schedule_name == "one_stage_twice":
            documents = [f"{t}\n\n{t}" if i % 4 == 0 else t for i, t in enumerate(train)]
        if schedule_name == "one_stage_copy":
            documents = train + copy_documents(train, 0.1)
        patched, composer_rate = contextlib.nullcontext(), None
        if schedule_name == "one_stage_cache_targets":
            patched = cache_targets(0.1, 0.2)
        if schedule_name.startswith("one_stage_composer_"):
            composer_rate = float(schedule_name.rsplit("_", 1)[1])
            patched = composed_rows(model_dir, 4, composer_rate)
        with patched as composer:
            train_cfg = train_section(stages, split_tokens(tokens, shares))
            summary = train_schedule(model_dir, documents, pool, train_cfg, work)
        seconds = time.perf_counter() - started
        result = score(work / "model", work / "eval.json", korean, english, base_dir)
        record = {"experiment": "replay", "name": name, "model": str(model_dir), "tokens": tokens,
                  "english_share": replayed, "train_seconds": round(seconds, 1),
                  "stages": [{k: s[k] for k in ("stage", "tokens", "seconds", "final_loss")} for s in summary["stages"]],
                  "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"],
                  "licence_english_bpb": licence_at(work / "model", work.name)}  # fmt: skip
        if composer_rate is not None:
            record.update(composer_rate=composer_rate, composer_norm=round(float(composer.matrices.detach().norm()), 4))
        if schedule_name.startswith("one_stage"):  # r32: by first occurrence and repeat
            base_rows = base_vocab(model_dir)
            record["korean_by_occurrence"] = repeat_split(work / "model", korean, base_rows, threads)
        write_record(records, record)


class _Composer:
    """r35: a new token's input row plus a learned function of its base pieces, shared by every new token: ``e_t +
    sum_j D_j E[p_j]`` over the token's last ``depth`` pieces (``j = 0`` its last piece), ``E`` the base's frozen
    input rows, the matrices ``D_j`` from zero. What the base tokenizer's pieces carry (a syllable's final consonant
    in its last byte, which decides the ending or particle after it) then reaches every new token from what any new
    token trains, where each row alone learns only from its own occurrences (r34's ``buckets``: (a) spends as much on
    ``X-ㄹ 수`` after training as before it). Written by hand: no library composes embedding rows from sub-tokens
    during training (FOCUS, WECHSEL and the like only initialise rows). Hooked into the training loop from outside
    (``composed_rows``: its parameter group added to the stage's selection, the rows written into the embedding before
    the model is saved), so the saved model is a plain one."""

    def __init__(self, base_rows: torch.Tensor, pieces: list[list[int]], base: int, depth: int):
        import torch

        self.base = base
        self.rows = torch.cat([base_rows.float(), torch.zeros(1, base_rows.shape[1])])  # the last row: no piece
        index = torch.full((len(pieces), depth), base, dtype=torch.long)
        for t, ids in enumerate(pieces):
            for j, piece in enumerate(reversed(ids[-depth:])):
                index[t, j] = piece
        self.index = index
        self.matrices = torch.nn.Parameter(torch.zeros(depth, base_rows.shape[1], base_rows.shape[1]))

    def delta(self, new: torch.Tensor) -> torch.Tensor:
        """The added part of the rows of new tokens ``new`` (row numbers from the first new row)."""
        import torch

        pieces = self.rows[self.index[new]]  # tokens x depth x hidden
        return torch.einsum("tjd,jed->te", pieces, self.matrices)

    def hook(self, module, inputs, output):
        import torch

        ids = inputs[0]
        mask = ids >= self.base
        if not bool(mask.any()):
            return output
        new, inverse = torch.unique(ids[mask] - self.base, return_inverse=True)
        extra = torch.zeros_like(output)
        extra[mask] = self.delta(new)[inverse].to(output.dtype)
        return output + extra

    def write_into(self, embedding: torch.Tensor) -> None:
        import torch

        with torch.no_grad():
            for start in range(0, self.index.shape[0], 4096):
                new = torch.arange(start, min(start + 4096, self.index.shape[0]))
                embedding[self.base + new] += self.delta(new).to(embedding.dtype)


@contextlib.contextmanager
def composed_rows(model_dir: Path, depth: int, rate: float):
    """r35: while inside, every training stage's new input rows are composed from their pieces as well
    (:class:`_Composer`, its matrices an optimizer group of their own at ``rate``): the training loop's selection and
    its model saving wrapped from outside (the rows written into the embedding before the save). Yields the composer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import redwhale.train.loop as loop
    from redwhale.core.source import materialize, resolve
    from redwhale.models.extend import new_token_strings
    from redwhale.models.init import decompose

    base_tok, tokenizer = (
        AutoTokenizer.from_pretrained(materialize(resolve(BASE), None)),
        AutoTokenizer.from_pretrained(model_dir),
    )
    base = len(base_tok)
    pieces = decompose(base_tok.backend_tokenizer, new_token_strings(tokenizer, base))
    start = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    comp = _Composer(start.get_input_embeddings().weight[:base].detach().clone(), pieces, base, depth)
    del start
    original_select, original_save = loop.select, loop.Trainer._save_model

    def select(model, stage, base_rows):
        selection = original_select(model, stage, base_rows)
        if not getattr(model, "_composer_hooked", False):
            model.get_input_embeddings().register_forward_hook(comp.hook)
            object.__setattr__(model, "_composer_hooked", True)
        selection.groups.append({"name": "composer", "params": [comp.matrices], "lr": rate, "weight_decay": 0.0})
        return selection

    def save(trainer, folder, summary):
        comp.write_into(trainer.model.get_input_embeddings().weight)
        trainer.model.get_input_embeddings()._forward_hooks.clear()
        return original_save(trainer, folder, summary)

    loop.select, loop.Trainer._save_model = select, save
    try:
        yield comp
    finally:
        loop.select, loop.Trainer._save_model = original_select, original_save


def _aligned_pairs(offsets, base_offsets) -> tuple[list[int], list[int]]:
    """Positions where both tokenizations end a token at the same character with the next token starting after it
    (a character split into byte pieces ends at its last piece, in either tokenization)."""

    def ends(spans) -> dict[int, int]:
        return {end: i for i, (_, end) in enumerate(spans) if i + 1 == len(spans) or spans[i + 1][0] >= end}

    mine, theirs = ends(offsets), ends(base_offsets)
    pairs = sorted((i, theirs[end]) for end, i in mine.items() if end in theirs)
    return [i for i, _ in pairs], [j for _, j in pairs]


def distill(out: Path, model_dir: Path, bench_out: Path, steps: int, lr: float, stage_tokens: int, threads: int):
    """r22: do the new tokens' *input* rows hold the extended model back? (Scaling them to the base rows' norm was
    worth 1.1%, ``default_stages``.) Trains only the new input rows of ``model_dir`` (an untied extended model) so that
    its last hidden state at each position matches the base model's after the same text in base pieces (squared error
    over the teacher's, at positions where both tokenizations end a token at the same character), ``steps`` documents
    of up to 512 new tokens; scores it untrained; then trains it with the default schedule's last three stages at
    ``stage_tokens`` each (the distillation in stage 1's place), and the default's four stages from ``model_dir``
    beside it. One line each in ``distill.jsonl``: held-out Korean disjoint from bench_cpt.py's, unmerged."""
    import torch
    from transformers import AutoTokenizer

    from redwhale.config.schema import default_stages
    from redwhale.core.source import materialize, resolve
    from redwhale.train.run import train_schedule

    torch.set_num_threads(threads)
    train, korean, english = texts(bench_out)
    base_dir = materialize(resolve(BASE), None)
    base_tok, tok = AutoTokenizer.from_pretrained(base_dir), AutoTokenizer.from_pretrained(model_dir)
    records = out / "distill.jsonl"
    recorded = [json.loads(line) for line in records.read_text().splitlines()] if records.is_file() else []
    folder = out / "distill" / f"lr{lr:g}-steps{steps}"
    later = [dict(s, share=None) for s in default_stages()]  # train_section gives each its tokens
    runs = [("distilled, untrained", folder, []), ("distilled + odd, even, LoRA", folder, later[1:]),
            ("default four stages", model_dir, later)]  # fmt: skip
    runs = [run for run in runs if (run[0], str(run[1])) not in {(r["name"], r["model"]) for r in recorded}]
    distilled = {"steps_done": 0, "seconds": 0.0, "loss_first_last": None}
    if any(model == folder for _, model, _ in runs):
        distilled = _distill_rows(model_dir, base_dir, base_tok, tok, train, steps, lr, folder)
    for name, model, stages in runs:
        trained, summary = model, {"stages": []}
        if stages:
            section = train_section(stages, [stage_tokens] * len(stages))
            work = out / "distill" / (f"{folder.name}-trained" if model == folder else "default-trained")
            summary = train_schedule(Path(model), train, None, section, work)
            trained = work / "model"
        result = score(trained, Path(str(trained) + "-eval.json"), korean, english, base_dir)
        record = {"experiment": "distill", "name": name, "model": str(model),
                  **({"lr": lr, "steps": steps, **distilled} if model == folder else {}),
                  "stages": [{k: s[k] for k in ("stage", "tokens", "seconds")} for s in summary["stages"]],
                  "korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"]}  # fmt: skip
        write_record(records, record)


def _distill_rows(model_dir, base_dir, base_tok, tok, train, steps, lr, folder) -> dict:
    """``distill``'s training of the new input rows (one document of up to 512 new tokens a step), saved to
    ``folder``; what it did."""
    import random

    import torch
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval().requires_grad_(False)
    student = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval().requires_grad_(False)
    rows = student.get_input_embeddings().weight
    assert rows is not student.get_output_embeddings().weight, "an untied extended model (extend.input_norm: base)"
    rows.requires_grad_(True)
    rows.register_hook(lambda g: torch.cat([torch.zeros_like(g[: len(base_tok)]), g[len(base_tok) :]]))
    optimizer = torch.optim.Adam([rows], lr=lr)
    documents = random.Random(0).sample(train, min(len(train), 4 * steps))
    started, losses = time.perf_counter(), []
    for text in documents:
        if len(losses) == steps:
            break
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, truncation=True, max_length=512)
        text = text[: enc["offset_mapping"][-1][1]] if enc["input_ids"] else ""
        base_enc = base_tok(text, add_special_tokens=False, return_offsets_mapping=True)
        mine, theirs = _aligned_pairs(enc["offset_mapping"], base_enc["offset_mapping"])
        if len(mine) < 16:
            continue
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with torch.no_grad():
                target = teacher.model(torch.tensor([base_enc["input_ids"]])).last_hidden_state[0, theirs].float()
            hidden = student.model(torch.tensor([enc["input_ids"]])).last_hidden_state[0, mine].float()
        loss = ((hidden - target) ** 2).sum(-1).mean() / (target**2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    seconds = time.perf_counter() - started
    rows.requires_grad_(False)
    student.save_pretrained(folder)
    tok.save_pretrained(folder)
    first_last = [losses[0], losses[-1]] if losses else None
    return {"steps_done": len(losses), "seconds": round(seconds, 1), "loss_first_last": first_last}


def speed(out: Path, model_dir: Path, bench_out: Path, steps: int, threads: int) -> None:
    """r31: tokens/s of bench_cpt.py's default stage on its extended model ``model_dir`` (arm (e)'s
    ``extend/model``) and of its full fine-tuning (b) on the base, with AdamW as ``make_optimizer`` builds it on CPU
    (torch's fused kernel) and as it did until r31 (``foreach``), alternating, ``steps`` steps each (the first left
    out: it pays for allocations); the median step. One line in ``speed.jsonl``, printed."""
    import shutil
    import statistics

    import torch

    import redwhale.train.loop
    from redwhale.core.source import materialize, resolve
    from redwhale.recipe.phases import read_texts
    from redwhale.train.optim import make_optimizer
    from redwhale.train.run import train_schedule

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_cpt as bc

    torch.set_num_threads(threads)
    prepared = bc.prepared_corpus(bench_out)
    train = list(read_texts(prepared.split("train")))
    replay = bc.replay_for(bench_heldout(prepared)[1])  # (e)'s English replay, as bench_cpt.py gives it
    base_dir = materialize(resolve(BASE), None)
    tokens = steps * bc.SEQ * bc.MICRO

    def foreach(groups, cfg, device, grad_accum=1):  # the optimizer before r31: torch's AdamW, foreach on CPU
        return torch.optim.AdamW(groups, betas=tuple(cfg.betas), foreach=True)

    record: dict = {"experiment": "speed", "model": str(model_dir), "steps": steps, "threads": threads}
    arms = (("e", model_dir, bc.one_stage_stages()), ("b", base_dir, [bc.full_stage(tokens)]))
    for optimizer in ("fused", "foreach"):
        redwhale.train.loop.make_optimizer = make_optimizer if optimizer == "fused" else foreach
        for arm, model, stages in arms:
            stages = [s.model_copy(update={"tokens": tokens, "share": None}) for s in stages]
            work = out / "speed" / f"{arm}-{optimizer}"
            shutil.rmtree(work, ignore_errors=True)
            english = replay if stages[0].english_share else None
            train_schedule(model, train, english, bc.section(stages, None, 0.0), work, bc.SEED)
            rows = [json.loads(x) for x in (work / "logs" / "metrics.jsonl").read_text().splitlines()][1:]
            record[f"{arm} {optimizer}"] = {
                "tokens_per_s": round(statistics.median(bc.SEQ * bc.MICRO / r["seconds"] for r in rows), 1),
                "final_loss": rows[-1]["loss"],
            }
            shutil.rmtree(work)
    redwhale.train.loop.make_optimizer = make_optimizer
    for arm, _, _ in arms:
        record[f"{arm}: fused / foreach"] = round(
            record[f"{arm} fused"]["tokens_per_s"] / record[f"{arm} foreach"]["tokens_per_s"], 3
        )
    write_record(out / "speed.jsonl", record)


def pipeline(out: Path, size: int, bench_out: Path) -> None:
    """The extended model the recipe's own tokenizer and extend phases build at ``size`` (bench_cpt.py's ``adapt``, on
    its prepared corpus), linked as ``out/ext-{size}-pipeline`` for the ``*_pipeline`` schedules."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_cpt import adapt, prepared_corpus
    from redwhale.config.schema import TokenizerSection

    target = out / f"ext-{size}-pipeline"
    if target.exists():
        return
    model, adapted, seconds = adapt(f"size-{size}", TokenizerSection(size=size), 10**6, prepared_corpus(bench_out),
                                    out / "pipeline" / str(size))  # fmt: skip
    target.symlink_to(Path(model).resolve())
    print(f"size {size}: {adapted.added_tokens:,} tokens added, {seconds:.0f} s -> {target}", flush=True)


def table(out: Path) -> None:
    for line in (out / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        print(
            f"{r['size']:>6} {r['schedule']:<15} {','.join(f'{s:g}' for s in r['shares']):<16} lr {r['lr']:<7g} "
            f"new {r['new_rows_lr']!s:<7} tokens {r['tokens']:>7,} {r['train_seconds']:>6.0f}s  "
            f"ko {r['korean_bpb']:.4f}  en {r['english_bpb']:.4f}  ko-tokens {r['korean_tokens']:,}"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["prepare", "probe", "run", "table", "merge", "pipeline", "score", "extend",
                                         "head-init", "dead-mass", "english-noise", "auto-further", "distill", "unmerge", "buckets", "repeated", "replay", "rows", "speed", "head-only", "copying", "spread"])  # fmt: skip
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--grid", default="r1")
    parser.add_argument("--tokens", type=int, default=65_536)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 to run two grids side by side)")
    parser.add_argument("--model", type=Path, nargs="+", help="merge, extend: the trained model folder; score: models")
    parser.add_argument("--tokenizer", type=Path, help="extend, head-init: the merged tokenizer folder")
    parser.add_argument("--start", type=Path, help="merge, english-noise: the model its training started from")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5], help="merge: merge_with_base values")
    parser.add_argument("--size", type=int, default=8000, help="pipeline: the tokenizer size (tokens)")
    parser.add_argument("--steps", type=int, default=40, help="distill: documents (one a step); speed: steps an arm")
    parser.add_argument("--lr", type=float, default=3e-3, help="distill: the new input rows' rate")
    parser.add_argument(
        "--alphas", type=float, nargs="+", default=[0.8, 1.0, 1.1, 1.25, 1.5], help="spread: row scales"
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2], help="head-only: the rates")
    parser.add_argument("--variants", nargs="+", default=["idf-in:0.5", "idf-in:1", "idf-both:1", "head:1", "head:base"],
                        help="rows: which variants of --model (see rows)")  # fmt: skip
    parser.add_argument(
        "--schedules",
        nargs="+",
        choices=[
            "default",
            "all_layers",
            "stage1_tenth",
            "one_stage",
            "all_layers_6e-4",
            "layers_only",
            "one_stage_twice",
            "one_stage_head",
            "one_stage_lazy_head",
            "one_stage_lazy_head_3e-4",
            "one_stage_lazy_head_6e-4",
            "one_stage_6e-4",
            "one_stage_new_0.003",
            "one_stage_new_0.01",
            "one_stage_copy",
            "one_stage_cache_targets",
            "one_stage_composer_0.0001",
            "one_stage_composer_0.0003",
        ],
        default=["default", "all_layers"],
        help="replay: which schedules to run (the default's four stages; stage 1 then every layer; the same with "
        "stage 1 on a tenth; every layer with the new input rows in one stage; stage 1 then every layer at 6e-4; "
        "every layer alone in one stage; r32: the one stage with a quarter of the documents written twice, or with the "
        "new head rows trained too; r33: the head rows at their own rate; r34: the layers at 6e-4, the new input rows "
        "at 3e-3 / 1e-2; r35: a tenth of the tokens on sequences written twice, the loss toward the document-cache "
        "mixture, the new input rows composed from their pieces at 1e-4 / 3e-4)",
    )
    parser.add_argument("--share", type=float, default=0.25, help="replay: the English share after stage 1")
    parser.add_argument("--keep-model", action="store_true", help="keep each trained model (for merge experiments)")
    parser.add_argument("--bench-out", type=Path, default=None, help="bench_cpt.py's --out: its corpus, disjoint text")
    args = parser.parse_args()
    from redwhale.core.environment import rerun_with_fast_malloc

    rerun_with_fast_malloc()  # as bench_cpt.py: its timings on tcmalloc, not on glibc's slowing malloc
    args.out.mkdir(parents=True, exist_ok=True)
    from redwhale.core.logs import setup_logging

    setup_logging()
    if args.what == "merge":
        return merge(args.out, args.model[0], args.start, args.weights, args.bench_out, args.threads)
    if args.what == "score":
        return score_models(args.out, args.model, args.bench_out, args.threads)
    if args.what == "extend":
        return extend_trained(args.out, args.model[0], args.tokenizer, args.bench_out, args.threads)
    if args.what == "head-init":
        return head_init(args.out, args.tokenizer, args.bench_out, args.threads)
    if args.what == "dead-mass":
        return dead_mass(args.out, args.model[0], args.bench_out, args.threads)
    if args.what == "english-noise":
        return english_noise(args.out, args.model[0], args.start, args.threads)
    if args.what == "auto-further":
        return auto_further(args.out, args.model[0], args.weights, args.bench_out, args.threads)
    if args.what == "repeated":
        return repeated(args.out, args.model[0], args.bench_out, args.tokens, args.threads)
    if args.what == "rows":
        return rows(args.out, args.model[0], args.variants, args.bench_out, args.threads)
    if args.what == "replay":
        return replay(args.out, args.model[0], args.bench_out, args.tokens, args.share, args.threads, args.schedules)
    if args.what == "buckets":
        return buckets(args.out, args.model[0], args.model[1], args.bench_out, args.threads)
    if args.what == "head-only":
        return head_only(args.out, args.model[0], args.bench_out, args.tokens, args.rates, args.threads)
    if args.what == "copying":
        return copying(args.out, args.model, args.bench_out, args.threads)
    if args.what == "spread":
        return spread(args.out, args.model, args.bench_out, args.alphas, args.threads)
    if args.what == "unmerge":
        return unmerge(args.out, args.model, args.bench_out, args.threads)
    if args.what == "speed":
        return speed(args.out, args.model[0], args.bench_out, args.steps, args.threads)
    if args.what == "pipeline":
        return pipeline(args.out, args.size, args.bench_out)
    if args.what == "distill":
        return distill(args.out, args.model[0], args.bench_out, args.steps, args.lr, args.tokens, args.threads)
    {"prepare": lambda: prepare(args.out), "probe": lambda: probe(args.out), "table": lambda: table(args.out)}.get(
        args.what, lambda: run(args.out, args.grid, args.tokens, args.bench_out, args.threads, args.keep_model)
    )()


if __name__ == "__main__":
    sys.exit(main())
