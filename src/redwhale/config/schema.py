"""The run config: one YAML file describes a whole adaptation run.

Each phase takes the sections it needs (see :mod:`redwhale.recipe.phases`); ``redwhale config reference`` prints every
field with its default and a one-line description (``configs/reference.yaml`` is that output, kept in sync by a test).
Two markers on a field tell the runner how to hash it: ``RESULTS_NEUTRAL`` fields (where outputs go, how many worker
processes, logging) never make a phase stale; ``INPUT`` fields name files whose *content* is hashed, so a copied or
edited corpus redoes what reads it.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from redwhale.config.base import INPUT, RESULTS_NEUTRAL, PathField, Section
from redwhale.core.scripts import SCRIPTS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SCRIPT_NAMES = tuple(SCRIPTS)


class ModelSection(Section):
    """The base model to adapt."""

    base: str = Field(
        "smollm2-135m",
        description="base model: Hub id, local Hugging Face folder, .gguf file, or the alias smollm2-135m",
        json_schema_extra=INPUT,
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when base is a Hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="dtype of frozen weights in training and of the saved model: auto = bfloat16 on a GPU that "
        "supports it, float32 on CPU (trainable weights follow train.trainable_dtype)",
    )
    trust_remote_code: bool = Field(False, description="run model code shipped with a Hub repo (off: safe by default)")


class CorpusInput(Section):
    """One source of raw text."""

    path: str = Field(
        description="file, folder, glob, Hugging Face dataset id (with format: hf), or bundled:konlpy",
        json_schema_extra=INPUT,
    )
    format: Literal["auto", "jsonl", "parquet", "text", "hf"] = Field(
        "auto", description="auto = from the file extension (.jsonl/.json/.gz, .parquet, .txt)"
    )
    text_field: str = Field("text", description="JSONL/Parquet/HF column that holds the text")
    split: str = Field("train", description="dataset split, for format: hf")
    limit: int | None = Field(None, ge=1, description="read at most this many documents from this source (documents)")


class CorpusSection(Section):
    """Where the training text of the new language comes from, and which writing system it is in."""

    inputs: list[CorpusInput] = Field(
        default_factory=list, description="raw text sources, read in order (at least one for a run)"
    )
    script: Literal[SCRIPT_NAMES] = Field(  # type: ignore[valid-type]
        "hangul", description="writing system of the new language (script filter; only tokens proving it are added)"
    )
    text_unit: Literal["file", "paragraph", "line"] = Field(
        "paragraph", description="for plain-text inputs: one document per file, per blank-line paragraph, or per line"
    )
    heldout_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of documents held out (by a hash of their text) for measurements"
    )


class EnglishSection(Section):
    """English text: replay during training (stages' english_share) and the text that measures forgetting."""

    inputs: list[CorpusInput] = Field(
        default_factory=list,
        description="English sources; none = measure forgetting on the Python reference shipped with CPython",
    )
    text_unit: Literal["file", "paragraph", "line"] = Field(
        "paragraph", description="for plain-text inputs: one document per file, per paragraph, or per line"
    )
    heldout_fraction: float = Field(
        0.05, gt=0.0, lt=1.0, description="share of English documents held out from replay to measure forgetting"
    )
    check_inputs: list[CorpusInput] = Field(
        default_factory=list,
        description="English that measures forgetting (evaluation's English bits per byte and train.merge_with_base "
        "auto's check), never replayed; none = the held-out part of inputs (else the Python reference). Give English "
        "of another kind than you replay: replay holds best the kind it replays (bench r37: at 1920 s the default ended "
        "20% under the base on the replayed Python reference and 4.3% over it on licence text, which auto did not see)",
    )


class PrepareSection(Section):
    """Corpus preprocessing: a datatrove pipeline of normalisation, filters, PII masking and deduplication."""

    normalize: bool = Field(True, description="NFC, whitespace, control/zero-width characters, stray jamo")
    fix_mojibake: bool = Field(True, description="repair mojibake with ftfy (only texts its detector flags)")
    strip_html: bool = Field(True, description="remove HTML tags and decode entities")
    remove_boilerplate: bool = Field(True, description="drop boilerplate lines (copyright, share, subscribe)")
    remove_template_lines: bool = Field(
        True,
        description="keep one copy of a line repeated 3+ times after other lines (a page template), so the "
        "repetition rules judge the content",
    )
    script_filter: bool = Field(True, description="drop documents whose letters are mostly not of the script")
    min_script_share: float = Field(0.5, ge=0, le=1, description="minimum share of the script among letters")
    lid_model: PathField | None = Field(
        None, description="optional local fastText language-ID model (.bin)", json_schema_extra=INPUT
    )
    lid_min_score: float = Field(0.5, ge=0, le=1, description="minimum language-ID score when lid_model is set")
    quality_filter: bool = Field(True, description="length, symbol/digit shares and repetition rules")
    min_chars: int = Field(2, ge=0, description="minimum document length (characters)")
    max_chars: int = Field(1_000_000, ge=1, description="maximum document length (characters)")
    max_symbol_share: float = Field(0.5, ge=0, le=1, description="maximum share of symbols among visible chars")
    max_digit_share: float = Field(0.5, ge=0, le=1, description="maximum share of digits among visible chars")
    max_duplicate_lines: float = Field(0.3, ge=0, le=1, description="maximum share of repeated lines")
    max_duplicate_line_chars: float = Field(0.2, ge=0, le=1, description="maximum share of characters in them")
    max_duplicate_paragraphs: float = Field(0.3, ge=0, le=1, description="maximum share of repeated paragraphs")
    max_duplicate_ngram_chars: float = Field(
        0.6, ge=0, le=1, description="maximum share of characters in repeated character 10-grams"
    )
    max_char_run_share: float = Field(0.5, ge=0, le=1, description="maximum share of characters in runs of 5+")
    max_replacement_share: float = Field(
        0.001, ge=0, le=1, description="maximum share of U+FFFD replacement characters (undecodable bytes)"
    )
    min_sentence_lines: float = Field(
        0.1, ge=0, le=1, description="minimum share of lines ending a sentence (documents of 3+ lines)"
    )
    mask_pii: bool = Field(True, description="mask resident numbers, phones, e-mails, accounts, IPs")
    dedup_exact: bool = Field(True, description="drop exact duplicates (hash of the normalised text)")
    dedup_near: bool = Field(True, description="drop near duplicates (MinHash LSH over character n-grams)")
    minhash_ngram: int = Field(5, ge=1, description="character n-gram size of the MinHash shingles (characters)")
    minhash_bands: int = Field(
        32, ge=1, description="LSH bands (more: higher recall; 32 x 4 finds a pair at Jaccard 0.58 with p = 0.97)"
    )
    minhash_rows: int = Field(4, ge=1, description="hashes per band (more: fewer candidate pairs to confirm)")
    dedup_threshold: float = Field(
        0.5,
        gt=0,
        le=1,
        description="a candidate pair from LSH is a near duplicate only if the exact Jaccard similarity of its "
        "documents' character n-grams reaches this (0.5: bench/bench_corpus.py counts a removal as wrong below it)",
    )
    perplexity_model: str | None = Field(
        None, description="optional reference model for a perplexity filter", json_schema_extra=INPUT
    )
    max_bits_per_byte: float = Field(4.0, gt=0, description="perplexity filter: drop above this (bits per byte)")
    keep_dropped: bool = Field(
        False,
        description="write dropped documents to dropped/<reason>/ for inspection",
        json_schema_extra=RESULTS_NEUTRAL,
    )
    output_format: Literal["jsonl", "parquet"] = Field("jsonl", description="format of the cleaned shards")
    tasks: int = Field(4, ge=1, description="datatrove tasks (shards of the input processed independently)")
    workers: int = Field(2, ge=1, description="processes of the local executor", json_schema_extra=RESULTS_NEUTRAL)
    executor: Literal["local", "slurm", "ray"] = Field(
        "local", description="datatrove executor", json_schema_extra=RESULTS_NEUTRAL
    )
    executor_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="extra keyword arguments for the Slurm/Ray executor (partition, time...)",
        json_schema_extra=RESULTS_NEUTRAL,
    )


DEFAULT_SIZES = [8000, 12000, 16000, 20000, 24000, 28000, 32000, 36000, 40000]
AUTO_SIZES = [48000, 56000, 64000, 72000, 80000]


class TokenizerSection(Section):
    """Training the new-language tokenizer, the vocabulary-size sweep and the merge into the base tokenizer."""

    sizes: list[int] = Field(
        default_factory=lambda: list(DEFAULT_SIZES),
        description="vocabulary sizes to sweep (tokens of the new tokenizer)",
    )
    size: int | Literal["auto", "knee"] = Field(
        "auto",
        description="size to merge: knee = the RIC/REC knee of the sweep (the paper's rule); auto = the largest size "
        "(of sizes and auto_sizes) whose new tokens occur at least min_occurrences times (on average, or at the "
        "quantile below) in the planned training tokens, past the knee when the budget allows (a larger vocabulary "
        "learned more Korean per unit of compute in every experiment, see redwhale.tokenizer.adapt); a number = that "
        "size (tokens)",
    )
    # Sizes and threshold by experiment (bench/cpt_explore.py, SmolLM2, calibrated init, the default stages; r15 and
    # r16), the recipe's own tokenizer and extend phases at each size, Korean held-out disjoint from bench_cpt's:
    #   new tokens   training tokens  mean occurrences  Korean bits/byte  English (vs base)  Korean tokens  seconds
    #    8,000        40,960           4.4               2.245             +3.1%              14,846         281
    #   20,000 knee   40,960           1.7               2.117             +2.8%              12,971         293
    #   40,000        40,960           0.82              2.050             +3.0%              12,005         324
    #   80,000        40,960           0.40              2.018             +4.1%              11,322         371
    #   40,000        81,920           1.6               2.029             +3.7%              12,005         632
    #   80,000        81,920           0.80              1.990             +4.1%              11,322         711
    # (mean occurrences: of a new token in the training tokens, from its held-out frequency). Every larger size
    # learned more Korean at equal tokens, by more than its slower steps cost (80k: 13-15% slower than 40k, 1.6-1.9%
    # lower bits per byte), with English ~0.5-1 point worse. So auto goes past the knee, up to 80,000 (auto_sizes),
    # and min_occurrences is the lowest mean at which the largest size was measured to win (0.4): below it no
    # experiment says a larger vocabulary pays. The mean, not a quantile: from 28k up the median new token occurs 0
    # or 1 times in the held-out text, so the quantiles read the size of the held-out text, not the vocabulary.
    # Past 80,000 (r29, cpt_explore_r29.jsonl, the default schedule since r11, 163,840 tokens, the same text): 120,000
    # (119,242 added) reached 1.925 against 80,000's 1.933 at equal tokens, but its steps ran 20% slower (564 s against
    # 471): at equal seconds no better (~1.934 by bench_cpt's slope). So auto_sizes stops at 80,000.
    min_occurrences: float = Field(
        0.4,
        gt=0,
        description="auto size: occurrences in the training budget each new token should reach (0.4 on average by "
        "experiment: with calibrated init a new row pays off before training has seen it once)",
    )
    occurrence_quantile: Literal[0.1, 0.25, 0.5, 0.75, 0.9, "mean"] = Field(
        "mean",
        description="auto size: the share of new tokens that must reach min_occurrences, or mean: their average must "
        "(a quantile of held-out counts reads 0 once most new tokens are rarer than the held-out text can show)",
    )
    auto_sizes: list[int] = Field(
        default_factory=lambda: list(AUTO_SIZES),
        description="auto size: larger sizes it may take past the sweep (measured only with size auto; the knee is "
        "taken over sizes, the paper's sweep)",
    )
    train_chars: int | None = Field(
        None, ge=10_000, description="train the new tokenizer on at most this much training text (characters)"
    )
    train_on: Literal["script_words", "all_text"] = Field(
        "script_words", description="train on the words holding the script (others would be dropped at the merge)"
    )
    min_frequency: int = Field(2, ge=1, description="minimum count of a pair to be merged in training (occurrences)")
    heldout_max_chars: int = Field(
        2_000_000, ge=1000, description="held-out text used to measure each size, at most (characters)"
    )
    pad_to_multiple_of: int | None = Field(
        64, ge=1, description="pad the merged vocabulary with reserved tokens to a multiple of this (tokens); null = no"
    )

    @model_validator(mode="after")
    def _sizes_are_sane(self) -> TokenizerSection:
        if not self.sizes:
            raise ValueError("tokenizer.sizes: at least one size")
        if min(self.sizes) <= 256:
            raise ValueError("tokenizer.sizes: every size must exceed the 256 byte symbols")
        if self.auto_sizes and min(self.auto_sizes) <= 256:
            raise ValueError("tokenizer.auto_sizes: every size must exceed the 256 byte symbols")
        if isinstance(self.size, int) and self.size <= 256:
            raise ValueError("tokenizer.size: must exceed the 256 byte symbols")
        return self

    def largest_size(self) -> int:
        """The most tokens ``size`` can merge: the size set, the largest of ``sizes`` (knee), or of ``sizes`` and
        ``auto_sizes`` (auto; a budget of billions of tokens takes it). Memory plans are made for it."""
        if isinstance(self.size, int):
            return self.size
        return max(self.sizes + (self.auto_sizes if self.size == "auto" else []))


COMPARED_METHODS = ("random", "mean", "decomposition", "weighted", "calibrated")
# extend.compare: auto compares when training sees this many times the tokens the comparison scores (the comparison
# runs forward passes only, about a third of a training step's cost per token: 1/100 x 1/3 is about 0.3-1%)
COMPARE_BUDGET_FACTOR = 100


class ExtendSection(Section):
    """Growing the model to the merged vocabulary and initialising the new rows."""

    init: str = Field("calibrated", description="init of new rows (methods: `redwhale model extend --help`)")
    compare: list[str] | Literal["auto"] = Field(
        "auto",
        description="methods measured side by side before training (empty: skip the comparison); auto = "
        f"{', '.join(COMPARED_METHODS)} when the training budget is at least {COMPARE_BUDGET_FACTOR}x the tokens the "
        "comparison scores (its cost is then about 1% of training), else none",
    )
    calibration_chars: int = Field(
        30_000, ge=1000, description="training text sampled for the calibrated offsets' hidden states (characters)"
    )
    calibration_positions: int = Field(
        2048,
        ge=256,
        description="positions whose hidden states fit the calibrated offsets (three numbers: 2,048 fit them as well "
        "as 16,384 to 0.002 nats of a 0.85-nat gain, 4,096 to 0.001 at twice the cost, bench/bench_calibration.py)",
    )
    eval_chars: int = Field(
        20_000, ge=1000, description="held-out text per language for the init comparison (characters)"
    )
    input_norm: Literal["base", "init"] = Field(
        "base",
        description="new input rows: base = scaled to the base rows' mean norm after the init (averaged pieces are "
        "shorter; a tied head is untied, keeping the init's output rows): 1.1% less Korean bits per byte at equal "
        "training in bench/cpt_explore.py r13b against r12a; init = as the init method left them",
    )

    def compared_methods(self, training_tokens: int) -> tuple[list[str], str]:
        """The methods the comparison measures, and why (``compare: auto`` decides by the training budget)."""
        if self.compare != "auto":
            return list(self.compare), "extend.compare is set" if self.compare else "skipped: extend.compare is empty"
        # the comparison scores each method and the base on eval_chars per language: at most a token per character
        scored = (len(COMPARED_METHODS) + 1) * 2 * self.eval_chars
        if training_tokens >= COMPARE_BUDGET_FACTOR * scored:
            return list(COMPARED_METHODS), f"the training budget is at least {COMPARE_BUDGET_FACTOR}x its tokens"
        why = (
            f"skipped: the training budget ({training_tokens:,} tokens) is under {COMPARE_BUDGET_FACTOR}x the "
            f"{scored:,} tokens the comparison scores"
        )
        return [], why


class Trainable(Section):
    """Which parameters a stage trains. Layers are named by their 0-based index, as in the parameter names
    (``model.layers.0`` is the first layer): ``odd`` = 1, 3, 5, ...; ``even`` = 0, 2, 4, ...."""

    embeddings: Literal["all", "new", "none"] = Field(
        "none", description="input embedding rows: all, only the new tokens' rows, or none"
    )
    lm_head: Literal["all", "new", "none"] = Field(
        "none", description="LM head rows (the same tensor as the embeddings when tied): all, new or none"
    )
    layers: Literal["none", "odd", "even", "all"] | list[int] = Field(
        "none", description="transformer layers: none, odd (1,3,5,...), even (0,2,4,...), all, or a list of indices"
    )
    norms: bool = Field(False, description="also train every normalisation weight (final norm, all layers' norms)")
    patterns: list[str] = Field(default_factory=list, description="extra parameters to train (regexes over names)")

    def selects_nothing(self) -> bool:
        return (
            self.embeddings == "none"
            and self.lm_head == "none"
            and self.layers in ("none", [])
            and not self.norms
            and not self.patterns
        )


class LoraSection(Section):
    """LoRA adapters (peft) on linear layers, merged into the weights when the stage ends."""

    rank: int = Field(64, ge=1, description="adapter rank")
    alpha: float = Field(128.0, gt=0, description="scaling numerator (the update is scaled by alpha / rank)")
    dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="dropout on the adapter input (off, as in peft: continual pretraining has data)",
    )
    targets: Literal["all-linear"] | list[str] = Field(
        "all-linear", description="modules to adapt: all-linear (every linear layer but the LM head) or names"
    )


class StageSection(Section):
    """One training stage: what trains, how fast, on how many tokens."""

    name: str = Field(description="stage name (used in logs, checkpoints and the report)")
    trainable: Trainable = Field(default_factory=Trainable, description="parameters trained in this stage")
    lora: LoraSection | None = Field(None, description="train LoRA adapters instead (merged at the end); null = none")
    tokens: int | None = Field(
        None, gt=0, description="token budget of the stage (tokens, summed over devices); or give a share"
    )
    share: float | None = Field(
        None, gt=0, le=1, description="share of train.tokens given to this stage (shares sum to 1)"
    )
    lr: float = Field(gt=0, description="peak learning rate")
    new_rows_lr: float | None = Field(
        None, gt=0, description="peak learning rate of the new embedding/head rows (null = lr)"
    )
    head_rows_lr: float | None = Field(
        None, gt=0, description="peak learning rate of an untied LM head's new rows (null = new_rows_lr)"
    )
    lazy_head_rows: bool = Field(
        True,
        description="the LM head's new rows (trainable.lm_head: new) step only at steps whose blocks hold their token "
        "(lazy AdamW rows; their gradient is computed for those rows alone): stepped at every step, AdamW moves the "
        "rows of absent tokens as far as present ones (its update is normalised), shifting every new logit at once "
        "(bench/cpt_explore.py r32: 1.905 Korean bits per byte against 1.967 dense and 1.924 frozen)",
    )
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (never applied to embeddings)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of the stage's steps spent warming up")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay ends at this fraction of the peak")
    english_share: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="share of blocks drawn from the English replay data (english.inputs; none given: the Python "
        "reference shipped with CPython, outside the text that measures forgetting)",
    )

    @model_validator(mode="after")
    def _trains_something(self) -> StageSection:
        if self.lora is None and self.trainable.selects_nothing():
            raise ValueError(f"stage {self.name!r}: trains no parameter (set trainable or lora)")
        if self.lora is not None and not self.trainable.selects_nothing():
            raise ValueError(f"stage {self.name!r}: a LoRA stage trains its adapters only; leave trainable empty")
        if (self.tokens is None) == (self.share is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of tokens and share")
        return self


# The new rows keeping learning after stage 1 (``new_rows_lr``), measured again on the 80,000-token model the pipeline
# builds at 81,920 training tokens (r17, bench/measured/cpt_explore_r17.jsonl, one machine): the new input *and* head
# rows trained in the layer stages at 3e-4 / 1e-3 reached 1.998 / 2.017 Korean bits per byte against the default's
# 1.993, English +3.1% / +3.6% against +4.2%, in 27-32% more time (the head's weight gradient over all 128k rows each
# step). At equal compute they learn less Korean, so the default leaves the head rows as calibrated; a user who wants
# English back for a little Korean has that trade, and train.merge_with_base a cheaper one.
# r18 (bench_cpt.py at bf16 products and tcmalloc, ~200k tokens in 480 s; cpt_explore_r18.jsonl, the disjoint text):
# the default on the 80k model reaches Korean 1.952, English +5.8%; every layer in one stage on the same model 1.914,
# +18.5% (461 s); every parameter of it 1.916, +23.7% (129,024 tokens in 430 s, as many seconds as the default's
# training); full fine-tuning of the base 1.845, +21.1%, and the same merged halfway back (merge_with_base 0.5) 1.941,
# +2.4%. At these token counts full fine-tuning merged back beats the default on both scores, and the 80k model
# trained in full does not learn more Korean than its default schedule: the larger vocabulary's slower steps and
# untrained rows cost more than the schedule. Not changed yet (see bench/EXPERIMENTS.md).
# r19 (cpt_explore_r19.jsonl, the same text): no vocabulary size or rate tried pays at these budgets. A 2,000-size
# tokenizer (1,720 new tokens, 655 tokens per 1,000 Korean characters) trained in full, 225,280 tokens in 463 s:
# 2.062 (untrained: 2.785, worse than the base's 2.536, as the base's pieces of each syllable go unused); the 80k
# model untrained: 2.157 (the calibrated rows), trained in full at 3e-4 1.916, at 1e-3 1.981 (English +137%), with
# its new rows at 3e-3 2.080. Extending (b)'s trained model afterwards with the 80k tokenizer: 2.086 against its own
# 1.845 (the init does not carry over what training learned through the base's pieces).
# r24-r26 (cpt_explore_r24.jsonl, the 80k model, 163,840 tokens, the same text): the attention of every layer after
# stage 1 1.971 (English +8.3%); new input rows weighted by their pieces' rarity, or output rows calibrated after the
# input rows are scaled, 1.972 / 1.960 (untrained 2.119 / 2.124 against 2.157: the edge does not survive training).
# English replay (english_share) holds English where merging back costs Korean: stage 1, then every layer with a tenth
# of the blocks English, 1.933 with English under the base's, on the reference (0.916 against 1.036) and on licence
# text (1.067 against 1.078), against the default's 1.962 at +5.4% / +2.8%; the default's stages with a quarter
# English 1.981. Every layer at once needs about twice the stage's gradients and optimizer state of odd / even (SOLAR-
# 10.7B: 101.8 GiB against 65.3 of 74.5 usable on 80 GB), so ``train.schedule: auto`` (TrainSection.schedule) takes it
# where its memory plan fits the device and the paper's split, below, where it does not (bench_cpt.py r11 on).
# r28 (cpt_explore_r28.jsonl, the same model, tokens and text, a machine ~6% slower): stage 1 on a tenth of the tokens
# instead of a quarter, 1.943 in 471 s (worse and slower: every-layer steps cost more than stage 1's); no stage 1, the
# new input rows trained beside every layer at stage 1's rate for all the tokens, 1.915 in 538 s, English 0.898 /
# 1.062 (better at equal tokens, but 22% slower than the quarter's ~440 s here: at equal seconds about 0.01 ahead, one
# seed's noise; not adopted before a bench run at equal wall clock).
# r29 (cpt_explore_r29.jsonl, the same model and text, r28's machine, where r26's default reproduced its 1.9326 in 471
# s): the layers at 6e-4 after stage 1, 1.927 (within noise) for licence English +1.7% against the base's (3e-4:
# -1.0%); every layer from the start, the new rows as extended (no stage 1), 1.943 at equal seconds (159,744 tokens in
# 426 s); the new input rows beside every layer in one stage at equal seconds (141,312 tokens in 467 s), 1.925 with
# English 0.905 / 1.056: ahead by 0.4%, within one seed's noise, as in r28 at equal tokens.
# r30 (bench_cpt.py at equal wall clock, bench/measured/cpt-r30.json): that one-stage variant, arm (e), against stage 1
# then every layer, arm (a) then, in one run: 1.876 against 2.008 at 480 s ((a)'s every-layer stage went unstable,
# gradient norms up to 560 where the other r30 runs stayed under 25) and 1.822 against 1.848 at 960 s, English as good or
# better. Over the four runs with both in one run (r29, seed 1, r30 at 480 and 960 s) (e) led three times (1.2%, 6.5%,
# 1.4%) and trailed once (0.4%), with one stage fewer, so every_layer_stages() is (e) since r30.
# r32 (cpt_explore.py replay, cpt_explore_r32.jsonl; (e) on the 80k model at bench_cpt's 480 s tokens, 151,552, the
# held-out text disjoint from the bench's): (e) 1.924; the new head rows trained too, at the input rows' rate, 1.967
# (every row stepped: AdamW moves the rows of absent tokens as far as present ones and shifts every new logit); the
# same with a head row stepped only where its token is in the step's blocks (lazy_head_rows), 1.905 (-1.0%), English
# 0.907 / 1.059 (licences) against 0.901 / 1.057. Its gradient for those rows alone keeps the step within ~6% of (e)'s.
# In bench_cpt.py at 480 s (cpt-r32.json) that schedule as (a) reached 1.873 against full fine-tuning's 1.779 (5.3%
# behind; r31's two seeds of (e): 6.7% / 5.9%, within one run's spread), but on the demo (a 2,000-token vocabulary,
# 32,768 tokens) it reached 2.353 Korean bits per byte against 2.201 with the head rows frozen: the head rows stay
# frozen by default. r33 gave them a rate of their own (head_rows_lr; cpt_explore_r33.jsonl): lazily at 3e-4 / 6e-4 /
# 1e-3 the 80k model reached 1.919 / 1.928 / 1.905 against 1.924 frozen, the demo 2.187 / 2.196 / 2.342 against 2.205:
# within ~0.5% of frozen rows at both rates that do not break the demo, not monotonic in the rate (one seed each),
# and the lazy rows slow the 80k model's steps (by 6% in r32's bench probe): no rate earns the default.
# r34 (cpt_explore_r34.jsonl, the same model, tokens and text): the one stage with its layers at 6e-4 1.914 (licence
# English +4.1% against the base's, the default's -2.0%), its new input rows at 3e-3 / 1e-2 1.927 / 1.928, a twentieth
# of its blocks English 1.914, against the default's 1.924: within one seed's ~0.5%, no change. The new head rows of
# bench r33's (a) trained alone for 40,960 more tokens: 1.906 -> 1.903 / 1.910 / 2.369 at 1e-4 / 1e-3 / 1e-2.
def default_stages() -> list[StageSection]:
    """The RedWhale schedule (``train.schedule: paper``, what ``auto`` runs where every layer at once does not fit):
    the new input rows, odd layers, even layers, LoRA over the whole model.

    What stage 1 trains and the rates are set by experiment (``bench/cpt_explore.py`` grids r3-r13: SmolLM2-135M + 20k
    calibrated tokens, 40,960 training tokens, one seed, held-out Korean disjoint from what ``bench/bench_cpt.py``
    scores; Korean / English bits per byte, base 2.536 / 1.036). Rows before r12 are on the tied model with its new
    input rows as averaged (``extend.input_norm: init``):

    ==============================================================  =======  =================
    stage 1 rows; layers' rate; LoRA's rate                          Korean   English (vs base)
    ==============================================================  =======  =================
    all (the paper); 1e-4; 2e-4 (two defaults ago)                  2.148    1.058 (+2.1%)
    all; 3e-4; 6e-4                                                 2.129    1.069 (+3.1%)
    all; 6e-4; 2e-4                                                 2.124    1.103 (+6.5%)
    all; 6e-4; 1.2e-3                                               2.122    1.131 (+9.2%)
    new (input and head); 3e-4; 2e-4 (the previous default)         2.136    1.061 (+2.4%)
    new; 4.5e-4; 2e-4                                               2.138    1.078 (+4.0%)
    new; 6e-4; 2e-4                                                 2.127    1.100 (+6.2%)
    new; 6e-4; 1.2e-3                                               2.114    1.117 (+7.8%)
    new at 3e-4 / 3e-3 / 1e-2 in stage 1; 3e-4; 2e-4                 2.139 / 2.146 / 2.194  +2.8% / +3.3% / +4.3%
    no stage 1 (odd, even, LoRA: a third each, 39,936 tokens); 3e-4; 2e-4  2.137    1.073 (+3.5%)
    no stage 1, new rows trained with the layers at 3e-4; 2e-4       2.139    1.081 (+4.3%)
    the extended model fully fine-tuned, every row at 3e-4           2.104    1.210 (+16.8%)
    one stage: every layer and norm at 3e-4, embeddings frozen (r11b) 2.101    1.181 (+14.0%)
    the same with the new rows at 3e-4 (r11a)                        2.104    1.179 (+13.8%)
    untied head; stage 1 new input rows at 1e-3 / 1e-2 (r12a/b)       2.140 / 2.135  +2.4% / +2.5%
    **untied, new input rows at the base's norm; stage 1 new input   **2.115**  1.068 (+3.1%)
    rows at 1e-3; 3e-4; 2e-4 (r13b, the default)**
    untied, input rows at the base's norm; every layer, one stage     2.081    1.158 (+11.8%)
    full fine-tuning, base tokenizer, 3e-4 (bench_cpt's arm (b))    2.128    1.059 (+2.2%)
    ==============================================================  =======  =================

    On the tied model stage 1 buys no Korean: AdamW moves every new head row at every step (all of them get a gradient
    through the softmax), shifting all new logits at once; above 1e-3 that undoes the calibrated offsets (stage 1's
    loss rose to 12.0 at 1e-2). Untying the head and training the input rows alone (r12) lets stage 1's loss fall, but
    buys no Korean either. What does: the new input rows are averages of their pieces' rows, 2.0 long against the
    base rows' 3.2 on SmolLM2, and inputs that small are what the layers spend their training on. Scaled to the base
    rows' mean norm (``extend.input_norm: base``, which unties a tied head so that the output rows keep their
    calibrated init), the same schedule reaches 2.115 instead of 2.140 (-1.1%, over twice the ~0.01 one-seed noise;
    the training loss is ~0.1 nats lower from stage 1 on), the first schedule here below full fine-tuning of the
    base (2.128), for English +3.1% against +2.4%. Training every layer in one stage learns the most Korean and loses
    English 12-17%: the English losses come from the layers, not from the rows (frozen rows lose as much) nor from
    probability leaking to the new tokens (0.3% of the default's +2.4%, measured with the head cut to the base's
    rows).

    Above 3e-4 the layers buy Korean with English, and differences under ~0.01 bits per byte are within one seed's
    noise (4.5e-4 did worse than 3e-4). The default is the schedule that learned the most Korean while keeping English
    near 3% of the base: stage 1 on the new input rows only (with a tied head, the same rows are the head's: training
    the base's head rows on Korean alone shifts English predictions), layers at 3e-4 (the rate of the full
    fine-tuning it competes with), LoRA at 2e-4. A user who can give up English for Korean raises the layers' and
    LoRA's rates (6e-4 / 1.2e-3: -1.0% Korean, +7.8% English against the base on the tied model).
    Merging back after training (``train.merge_with_base``) is measured beside that field."""
    return [
        StageSection(name="embeddings", trainable=Trainable(embeddings="new"), share=0.25, lr=1e-3),
        StageSection(name="odd_layers", trainable=Trainable(layers="odd"), share=0.25, lr=3e-4),
        StageSection(name="even_layers", trainable=Trainable(layers="even"), share=0.25, lr=3e-4),
        StageSection(name="lora", lora=LoraSection(), share=0.25, lr=2e-4),
    ]


EVERY_LAYER_ENGLISH_SHARE = 0.1  # bench/cpt_explore.py r26: a tenth held English under the base's, as a quarter did


def every_layer_stages() -> list[StageSection]:
    """The schedule that learned the most Korean at equal English where memory allows it (``train.schedule:
    every_layer``): every layer, every norm and the new input rows in one stage, the rows at the paper's stage 1 rate
    (``new_rows_lr``), with a tenth of the blocks English (bench/bench_cpt.py's arm (e), r29-r30; until r30 the paper's
    stage 1 came first, then every layer: arm (d); the new head rows trained too, lazily, in r32: see the comment above
    :func:`default_stages`)."""
    paper = default_stages()
    trainable = Trainable(embeddings="new", layers="all", norms=True)
    return [
        StageSection(
            name="all_layers",
            trainable=trainable,
            share=1.0,
            lr=paper[1].lr,
            new_rows_lr=paper[0].lr,
            english_share=EVERY_LAYER_ENGLISH_SHARE,
        )
    ]


SCHEDULES = {"paper": default_stages, "every_layer": every_layer_stages}


class TrainSection(Section):
    """Continual pretraining: the stages and how every stage runs."""

    tokens: int | None = Field(
        80_000_000, gt=0, description="token budget of the whole schedule (tokens); stages take their share"
    )
    seconds: float | None = Field(
        None,
        gt=0,
        description="wall-clock cap on training (seconds): each stage stops once its part of these seconds (its "
        "tokens' share of the schedule's) is spent, if before its tokens, its warmup and cosine then planned over the "
        "steps that fit at the speed measured so far; counted from a stage's first step, checkpoints included, not "
        "loading, saving or the merge search; the tokens trained then depend on the machine, and tokenizer.size: "
        "auto still plans for train.tokens (set it to what the seconds will train; null: tokens only)",
    )
    stages: list[StageSection] = Field(
        default_factory=default_stages,
        description="stages, run in order; not given: train.schedule's",
    )
    schedule: Literal["auto", "paper", "every_layer"] = Field(
        "auto",
        description="the stages when train.stages is not given: paper = the paper's four (stage 1 on the new input "
        "rows, odd layers, even layers, LoRA; a quarter of the tokens each), what fits SOLAR-10.7B on one 80 GB GPU; "
        "every_layer = every layer, every norm and the new input rows (at stage 1's rate) in one stage with a tenth "
        "of the blocks English (more Korean at equal compute and English held in bench/cpt_explore.py r26-r29 and "
        "bench_cpt.py r30, at about twice the paper's trainable memory); auto = every_layer when its memory plan fits "
        "the device and English can be replayed, else paper (the choice and why: train/schedule.json and the report)",
    )
    sequence_length: int = Field(1024, ge=16, description="tokens per packed block")
    micro_batch_size: int | Literal["auto"] = Field(
        8, description="blocks per forward pass, per device; auto = the largest the memory plan fits, per stage"
    )
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (ignored with global_batch_size)")
    global_batch_size: int | None = Field(
        None,
        ge=1,
        description="blocks per optimizer step over all devices; set, gradient accumulation keeps it fixed "
        "whatever the micro-batch (required with micro_batch_size: auto)",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="matrix products: auto = bf16 autocast on a GPU that supports it and on a CPU that multiplies "
        "bf16 in hardware, AMX or AVX512-BF16 (1.9x / 1.7x faster than fp32 there), fp32 on other CPUs",
    )
    trainable_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="dtype of the weights a stage trains: float32 master weights (exact updates, 4 bytes each), or "
        "bfloat16 updated with Kahan-compensated AdamW (torch-optimi: 2 bytes each plus 2 for the compensation)",
    )
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = Field(
        "adamw",
        description="adamw (fused on CUDA and CPU), adamw8bit (bitsandbytes, CUDA only) or sgd (plain, no momentum)",
    )
    offload_optimizer: bool = Field(
        False,
        description="keep AdamW's moments in CPU memory and step there (torchao CPUOffloadOptimizer, CUDA only)",
    )
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], description="AdamW betas")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0 = off)")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    compile: bool = Field(False, description="torch.compile the model for each stage (faster on GPU, slow start)")
    processes: int | Literal["auto"] = Field(
        1,
        description="training processes on this machine: auto = one per local GPU (DDP through accelerate); 1 = "
        "this process",
        json_schema_extra=RESULTS_NEUTRAL,
    )
    accelerate_config: PathField | None = Field(
        None,
        description="accelerate config for processes > 1 (FSDP, DeepSpeed; default: DDP)",
        json_schema_extra=RESULTS_NEUTRAL,
    )
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints", json_schema_extra=RESULTS_NEUTRAL)
    keep_checkpoints: int = Field(
        2, ge=1, description="checkpoints kept per stage (the newest)", json_schema_extra=RESULTS_NEUTRAL
    )
    log_every: int = Field(
        1,
        ge=1,
        description="steps between metric records (and log lines when the output is not a terminal)",
        json_schema_extra=RESULTS_NEUTRAL,
    )
    tensorboard: bool = Field(True, description="write TensorBoard events", json_schema_extra=RESULTS_NEUTRAL)
    wandb_project: str | None = Field(
        None, description="log to Weights & Biases under this project; null = off", json_schema_extra=RESULTS_NEUTRAL
    )
    # Merging back (``train.merge_with_base``, grid r14 and ``cpt_explore.py merge``; the same held-out text):
    #
    # ================================================================  ===========  =================
    # model                                                             Korean       English (vs base)
    # ================================================================  ===========  =================
    # every layer, one stage, normed rows, 40,960 tokens                2.081        +11.8%
    # the same merged halfway back (merge_with_base: 0.5)               2.113        +2.3%
    # every layer, one stage, normed rows, 81,920 tokens                2.030        +13.8%
    # the same merged halfway back                                      2.079        +2.6%
    # the default schedule, an earlier bench_cpt 960 s model (94,208)  2.077        +3.1%
    # the same merged a fifth back (0.2)                                2.088        +1.8%
    # full fine-tuning of the base, bench_cpt's 960 s (77,824 tokens)   2.024        +7.1%
    # the same merged halfway back                                      2.061        +0.2%
    # ================================================================  ===========  =================
    #
    # Merging keeps ~90% of the Korean gained and gives back most of the English lost. At 40-80k training tokens no
    # merged schedule learned more Korean than the default schedule at equal English (within ~0.01, one seed's
    # noise). At bench_cpt.py's 480 s (~200k tokens, r19: cpt_explore_r19.jsonl) the default forgets more (+5.8%) and
    # merging it back 0.3 / 0.5 gives 1.969 / 1.993 Korean, English +2.4% / +1.0%. So the default is ``auto``: no
    # merge while English stays within english_tolerance of the base model's (3%: the figure issue 13 asks of the
    # recipe, not an experiment), else the smallest of 0.1 ... 0.9 that brings it back within, measured on English
    # held-out text disjoint from what evaluation scores. The base's figure, not the extended start's: the new rows
    # themselves cost ~0.35% English at init (80k new tokens on SmolLM2), and the user's 3% is against the model they
    # began with (bench r6 held English to the start and reported +3.05% against the base at 960 s; r7, held to the
    # base, +2.82%). Up to 0.9, not 0.5: bench r8's 960 s arm trained 17% more tokens than r7's, was still 0.1% above
    # the tolerance at 0.5 and scored +3.12% English; the tolerance is the user's, so the search goes on until it holds.
    merge_with_base: float | Literal["auto"] = Field(
        "auto",
        description="after the last stage, move every trained weight this share of the way back to the model "
        "training started from (linear merging, as WiSE-FT and Branch-and-Merge: most of the new language kept, "
        "most of the forgetting given back); the new vocabulary rows keep their trained values; 0 = off; auto = the "
        "smallest of 0.1, 0.2 ... 0.9 that keeps English bits per byte within english_tolerance of the base "
        "model's (an extended model's with its new rows left out of the softmax, so the vocabulary's own cost counts; "
        "the start's when the English holds new tokens or the start was trained since its extension; 0 when training "
        "already does; 0.9 when none does)",
    )
    english_tolerance: float = Field(
        0.03,
        ge=0,
        description="merge_with_base auto: English bits per byte may rise this share above the base model's (0.03 "
        "= 3%)",
    )
    english_check_chars: int = Field(
        10_000,
        ge=1000,
        description="merge_with_base auto: English text measured to choose the weight (characters; held-out, after "
        "the text evaluation scores)",
    )
    save_each_stage: bool = Field(
        False,
        description="also save the model after every stage (disk: one model each)",
        json_schema_extra=RESULTS_NEUTRAL,
    )

    @model_validator(mode="after")
    def _valid(self) -> TrainSection:
        if not self.stages:
            raise ValueError("train.stages: at least one stage")
        given_both = {"stages", "schedule"} <= self.model_fields_set and self.schedule != "auto"
        if given_both and self.stages != SCHEDULES[self.schedule]():  # a resolved section carries both, agreeing
            raise ValueError("train.schedule chooses the stages when train.stages is not given: set one of them")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"train.stages: stage names must be unique, got {names}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("train.betas: two numbers in [0, 1)")
        shares = [s.share for s in self.stages if s.share is not None]
        if not shares and "tokens" in self.model_fields_set and self.tokens is not None:
            raise ValueError(
                "train.tokens: the stages give their own tokens; give shares instead, or drop train.tokens"
            )
        if shares and self.tokens is None:
            raise ValueError("train.tokens: stages give shares, so set the total token budget")
        if shares and len(shares) == len(self.stages) and abs(sum(shares) - 1) > 1e-6:
            raise ValueError(f"train.stages: shares sum to {sum(shares):g}, not 1")
        if isinstance(self.merge_with_base, float) and not 0 <= self.merge_with_base < 1:
            raise ValueError(f"train.merge_with_base: a share in [0, 1) or auto, got {self.merge_with_base:g}")
        if self.micro_batch_size == "auto" and self.global_batch_size is None:
            raise ValueError("train.global_batch_size: required with micro_batch_size: auto")
        if isinstance(self.micro_batch_size, int) and self.micro_batch_size < 1:
            raise ValueError("train.micro_batch_size: at least 1")
        if isinstance(self.processes, int) and self.processes < 1:
            raise ValueError("train.processes: at least 1")
        if self.trainable_dtype == "bfloat16" and self.optimizer != "adamw":
            raise ValueError("train.trainable_dtype: bfloat16 works with optimizer adamw (Kahan-compensated)")
        if self.offload_optimizer and (self.optimizer != "adamw" or self.trainable_dtype != "float32"):
            raise ValueError("train.offload_optimizer: works with optimizer adamw and float32 trainable weights")
        return self

    def gives_stages(self) -> bool:
        """Whether the stages are the user's (set in the config, or by a resolved schedule) rather than the default."""
        return "stages" in self.model_fields_set

    def with_schedule(self, schedule: str) -> TrainSection:
        """This section running ``schedule``'s stages (``paper`` or ``every_layer``), the stages marked as given."""
        return self.model_copy(update={"stages": SCHEDULES[schedule](), "schedule": schedule})

    def candidate_schedules(self) -> list[str]:
        """The schedules a run may take, in order of preference: none when the stages are given."""
        if self.gives_stages():
            return []
        return ["every_layer", "paper"] if self.schedule == "auto" else [self.schedule]

    def replays_english(self) -> bool:
        """Whether a stage this section may run replays English: its given stages', or those of any schedule
        ``train.schedule`` may take."""
        stages = [s for name in self.candidate_schedules() for s in SCHEDULES[name]()] or self.stages
        return any(s.english_share > 0 for s in stages)

    def stage_tokens(self) -> list[int]:
        """Each stage's token budget: its own ``tokens``, or its share of ``train.tokens``."""
        return [s.tokens if s.tokens is not None else round(self.tokens * s.share) for s in self.stages]

    def stage_seconds(self) -> list[float | None]:
        """Each stage's wall-clock cap: its tokens' share of ``train.seconds`` (None for each without it)."""
        tokens = self.stage_tokens()
        if self.seconds is None:
            return [None] * len(tokens)
        return [self.seconds * t / sum(tokens) for t in tokens]


KOBEST_TASKS = ("kobest_boolq", "kobest_copa", "kobest_hellaswag", "kobest_sentineg", "kobest_wic")


class EvalSection(Section):
    """Evaluation of the base and the adapted model."""

    benchmarks: Literal["auto", "on", "off"] = Field(
        "auto",
        description="run the benchmark tasks: on; off; auto = when eval.data is set or the Hugging Face Hub answers "
        "(decided once per run, recorded in the results and the report)",
    )
    tasks: list[str] = Field(
        default_factory=lambda: list(KOBEST_TASKS),
        description="benchmark tasks: kobest (all five) or kobest_<task>, kmmlu or kmmlu_<subject>, or any "
        "lm-evaluation-harness task name",
    )
    data: PathField | None = Field(
        None,
        description="folder of local benchmark files (KoBEST: <task>_<split>.jsonl; KMMLU: <Subject>-<split>.csv); "
        "null = the Hub",
        json_schema_extra=INPUT,
    )
    shots: list[int] = Field(default_factory=lambda: [0], description="few-shot counts to run (examples)")
    split: Literal["test", "validation"] = Field(
        "test", description="split scored (a local folder without test files falls back to validation)"
    )
    limit: int | None = Field(None, ge=1, description="score at most this many examples per task (examples)")
    batch_size: int = Field(16, ge=1, description="benchmark requests per forward pass")
    korean_chars: int = Field(50_000, ge=1000, description="held-out Korean text for bits per byte (characters)")
    english_chars: int = Field(50_000, ge=1000, description="English text for bits per byte (characters)")
    window: int = Field(1024, ge=16, description="scoring window for long documents (tokens)")
    korean_prompts: list[str] = Field(
        default_factory=lambda: ["대한민국의 수도는", "오늘 날씨가 좋아서", "국회는 법률안을"],
        description="Korean prompts continued greedily by the base and the adapted model (shown in the report)",
    )
    english_prompts: list[str] = Field(
        default_factory=lambda: ["The capital of France is", "def fibonacci(n):"],
        description="English prompts continued greedily by both models (forgetting, by eye)",
    )
    max_new_tokens: int = Field(32, ge=1, le=512, description="length of each generation (tokens)")

    @field_validator("benchmarks", mode="before")
    @classmethod
    def _yaml_booleans(cls, value):
        # YAML reads a bare on/off as a boolean
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @model_validator(mode="after")
    def _valid(self) -> EvalSection:
        if any(k < 0 for k in self.shots) or not self.shots:
            raise ValueError("eval.shots: one or more non-negative integers")
        return self


class ChatVectorSection(Section):
    """Instruction following back after continual pretraining: adapted + scale x (instruct - base)."""

    instruct: str = Field(description="the instruction-tuned model of the same base", json_schema_extra=INPUT)
    base: str | None = Field(
        None, description="the base the instruct model was tuned from (null = model.base)", json_schema_extra=INPUT
    )
    scale: float = Field(1.0, gt=0, description="multiplier of the difference")


class ExportSection(Section):
    """After the adaptation: a GGUF file for llama.cpp / Ollama, and a chat vector."""

    gguf: list[Literal["f32", "f16", "bf16", "q8_0"]] = Field(
        default_factory=list, description="GGUF files to write, by type (empty: none)"
    )
    chat_vector: ChatVectorSection | None = Field(None, description="apply a chat vector (null: no)")


class RunConfig(Section):
    """A whole run: every phase, from raw corpus to evaluated model and report."""

    name: str = Field("run", description="run name; outputs go to <run_dir>/<name>/", json_schema_extra=RESULTS_NEUTRAL)
    run_dir: PathField = Field("runs", description="parent folder of run folders", json_schema_extra=RESULTS_NEUTRAL)
    cache_dir: PathField | None = Field(
        None,
        description="cache for GGUF conversions (default: $XDG_CACHE_HOME/redwhale or ~/.cache/redwhale)",
        json_schema_extra=RESULTS_NEUTRAL,
    )
    seed: int = Field(0, ge=0, description="seed for every random choice (splits, init, data order)")
    model: ModelSection = Field(default_factory=ModelSection, description="the base model")
    corpus: CorpusSection = Field(default_factory=CorpusSection, description="training text of the new language")
    english: EnglishSection = Field(default_factory=EnglishSection, description="English replay and forgetting text")
    prepare: PrepareSection = Field(default_factory=PrepareSection, description="corpus preprocessing")
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="new tokenizer and merge")
    extend: ExtendSection = Field(default_factory=ExtendSection, description="model extension and init")
    train: TrainSection = Field(default_factory=TrainSection, description="multistage continual pretraining")
    eval: EvalSection = Field(default_factory=EvalSection, description="evaluation")
    export: ExportSection = Field(default_factory=ExportSection, description="after the adaptation")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a valid run name (letters, digits, '.', '_', '-'; at most 100)")
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RunConfig:
        if self.model.revision is not None and (self.model.base.endswith(".gguf") or self.model.base == "smollm2-135m"):
            raise ValueError("model.revision applies to Hub ids only, not to a .gguf file or an alias")
        return self


#: Keys that moved, with where they went: an old config gets a message that says so.
MOVED = {
    "tokenizer.script": "corpus.script",
    "corpus.english": "english.inputs",
    "model.cache_dir": "cache_dir (top level)",
    "eval.kobest": "eval.benchmarks (auto, on or off)",
    "eval.kobest_data": "eval.data",
    "report": "eval (korean_prompts, english_prompts, max_new_tokens)",
}
