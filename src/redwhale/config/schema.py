"""The run config: one YAML file describes a whole adaptation run.

Each phase reads its own section; ``redwhale config reference`` prints every field with its default and a one-line
description (``configs/reference.yaml`` is that output, kept in sync by a test).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from redwhale.config.base import PathField, Section
from redwhale.tokenizer.scripts import SCRIPTS

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


class ModelSection(Section):
    """The base model to adapt."""

    base: str = Field(
        "smollm2-135m",
        description="base model: Hub id, local Hugging Face folder, .gguf file, or the alias smollm2-135m",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) when base is a Hub id")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype when loading: auto = bfloat16 on a GPU that supports it, float32 on CPU"
    )
    trust_remote_code: bool = Field(False, description="run model code shipped with a Hub repo (off: safe by default)")
    cache_dir: PathField | None = Field(
        None, description="cache for GGUF conversions (default: $XDG_CACHE_HOME/redwhale or ~/.cache/redwhale)"
    )


class CorpusInput(Section):
    """One source of raw text."""

    path: str = Field(description="file, folder, glob, or Hugging Face dataset id (with format: hf)")
    format: Literal["auto", "jsonl", "parquet", "text", "hf"] = Field(
        "auto", description="auto = from the file extension (.jsonl/.json/.gz, .parquet, .txt)"
    )
    text_field: str = Field("text", description="JSONL/Parquet/HF column that holds the text")
    split: str = Field("train", description="dataset split, for format: hf")
    limit: int | None = Field(None, ge=1, description="read at most this many documents from this source (documents)")


class CorpusSection(Section):
    """Where the Korean training text comes from."""

    inputs: list[CorpusInput] = Field(
        default_factory=list, description="raw text sources, read in order (at least one for a run)"
    )
    english: list[CorpusInput] = Field(
        default_factory=list, description="optional English text for replay in training and for English evaluation"
    )
    text_unit: Literal["file", "paragraph", "line"] = Field(
        "paragraph", description="for plain-text inputs: one document per file, per blank-line paragraph, or per line"
    )
    heldout_fraction: float = Field(
        0.05, ge=0.0, lt=1.0, description="share of documents held out (by a hash of their text) for measurements"
    )


class PrepareSection(Section):
    """Corpus preprocessing: a datatrove pipeline of normalisation, filters, PII masking and deduplication."""

    normalize: bool = Field(True, description="NFC, whitespace, control/zero-width characters, stray jamo")
    fix_mojibake: bool = Field(True, description="repair mojibake with ftfy (only texts its detector flags)")
    strip_html: bool = Field(True, description="remove HTML tags and decode entities")
    remove_boilerplate: bool = Field(True, description="drop boilerplate lines (copyright, share, subscribe)")
    script_filter: bool = Field(True, description="drop documents whose letters are mostly not of the script")
    min_script_share: float = Field(0.5, ge=0, le=1, description="minimum share of the script among letters")
    lid_model: PathField | None = Field(None, description="optional local fastText language-ID model (.bin)")
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
    minhash_bands: int = Field(20, ge=1, description="LSH bands (more: higher recall)")
    minhash_rows: int = Field(5, ge=1, description="hashes per band (more: fewer false matches)")
    perplexity_model: str | None = Field(None, description="optional reference model for a perplexity filter")
    max_bits_per_byte: float = Field(4.0, gt=0, description="perplexity filter: drop above this (bits per byte)")
    keep_dropped: bool = Field(False, description="write dropped documents to dropped/<reason>/ for inspection")
    output_format: Literal["jsonl", "parquet"] = Field("jsonl", description="format of the cleaned shards")
    tasks: int = Field(4, ge=1, description="datatrove tasks (shards of the input processed independently)")
    workers: int = Field(2, ge=1, description="processes of the local executor")
    executor: Literal["local", "slurm", "ray"] = Field("local", description="datatrove executor")
    executor_options: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra keyword arguments for the Slurm/Ray executor (partition, time...)"
    )


SCRIPT_NAMES = tuple(SCRIPTS)
DEFAULT_SIZES = [8000, 12000, 16000, 20000, 24000, 28000, 32000, 36000, 40000]


class TokenizerSection(Section):
    """Training the new-language tokenizer, the vocabulary-size sweep and the merge into the base tokenizer."""

    script: Literal[SCRIPT_NAMES] = Field(  # type: ignore[valid-type]
        "hangul", description="writing system of the new language; only tokens proving it are added"
    )
    sizes: list[int] = Field(
        default_factory=lambda: list(DEFAULT_SIZES),
        description="vocabulary sizes to sweep (tokens of the new tokenizer)",
    )
    size: int | Literal["auto"] = Field("auto", description="size to merge: auto = the knee of the sweep (tokens)")
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
        if isinstance(self.size, int) and self.size <= 256:
            raise ValueError("tokenizer.size: must exceed the 256 byte symbols")
        return self


INIT_METHODS = ("random", "mean", "decomposition", "weighted", "eeve", "calibrated")


class ExtendSection(Section):
    """Growing the model to the merged vocabulary and initialising the new rows."""

    init: Literal[INIT_METHODS] = Field(  # type: ignore[valid-type]
        "calibrated", description="init of new rows: random, mean, decomposition, weighted, eeve, calibrated"
    )
    compare: list[Literal[INIT_METHODS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: ["random", "mean", "decomposition", "weighted", "calibrated"],
        description="methods measured side by side before training (empty: skip the comparison)",
    )
    calibration_chars: int = Field(
        30_000, ge=1000, description="training text whose hidden states fit the calibrated offsets (characters)"
    )
    eval_chars: int = Field(
        20_000, ge=1000, description="held-out text per language for the init comparison (characters)"
    )


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
    tokens: int = Field(gt=0, description="token budget of the stage (tokens, summed over devices)")
    lr: float = Field(gt=0, description="peak learning rate")
    new_rows_lr: float | None = Field(None, gt=0, description="peak learning rate of new embedding/head rows")
    weight_decay: float = Field(0.0, ge=0, description="decoupled weight decay (never applied to embeddings)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="share of the stage's steps spent warming up")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay ends at this fraction of the peak")
    english_share: float = Field(0.0, ge=0, lt=1, description="share of blocks drawn from the English replay data")

    @model_validator(mode="after")
    def _trains_something(self) -> StageSection:
        if self.lora is None and self.trainable.selects_nothing():
            raise ValueError(f"stage {self.name!r}: trains no parameter (set trainable or lora)")
        if self.lora is not None and not self.trainable.selects_nothing():
            raise ValueError(f"stage {self.name!r}: a LoRA stage trains its adapters only; leave trainable empty")
        return self


def default_stages() -> list[StageSection]:
    """The RedWhale schedule: embeddings + head, odd layers, even layers, LoRA over the whole model."""
    return [
        StageSection(
            name="embeddings", trainable=Trainable(embeddings="all", lm_head="all"), tokens=20_000_000, lr=1e-3
        ),
        StageSection(name="odd_layers", trainable=Trainable(layers="odd"), tokens=20_000_000, lr=1e-4),
        StageSection(name="even_layers", trainable=Trainable(layers="even"), tokens=20_000_000, lr=1e-4),
        StageSection(name="lora", lora=LoraSection(), tokens=20_000_000, lr=2e-4),
    ]


class TrainSection(Section):
    """Continual pretraining: the stages and how every stage runs."""

    stages: list[StageSection] = Field(default_factory=default_stages, description="stages, run in order")
    sequence_length: int = Field(1024, ge=16, description="tokens per packed block")
    micro_batch_size: int = Field(8, ge=1, description="blocks per forward pass, per device")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast on a GPU that supports it, fp32 on CPU"
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")
    compile: bool = Field(False, description="torch.compile the model for each stage (faster on GPU, slow start)")
    optimizer: Literal["adamw", "adamw8bit"] = Field(
        "adamw", description="adamw (fused on CUDA) or adamw8bit (bitsandbytes, CUDA only)"
    )
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.95], description="AdamW betas")
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0 = off)")
    checkpoint_every: int = Field(200, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints kept per stage (the newest)")
    log_every: int = Field(1, ge=1, description="steps between log lines")
    tensorboard: bool = Field(True, description="write TensorBoard events")
    wandb_project: str | None = Field(None, description="log to Weights & Biases under this project; null = off")
    save_each_stage: bool = Field(False, description="also save the model after every stage (disk: one model each)")

    @model_validator(mode="after")
    def _valid(self) -> TrainSection:
        if not self.stages:
            raise ValueError("train.stages: at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"train.stages: stage names must be unique, got {names}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError("train.betas: two numbers in [0, 1)")
        return self


KOBEST_TASKS = ("boolq", "copa", "hellaswag", "sentineg", "wic")


class EvalSection(Section):
    """Evaluation of the base and the adapted model."""

    kobest: bool = Field(True, description="run KoBEST (local data from kobest_data, else the Hub; skipped offline)")
    kobest_data: PathField | None = Field(
        None, description="folder of <task>_<split>.jsonl files in skt/kobest_v1's layout; null = the Hub"
    )
    tasks: list[Literal[KOBEST_TASKS]] = Field(  # type: ignore[valid-type]
        default_factory=lambda: list(KOBEST_TASKS), description="KoBEST tasks"
    )
    shots: list[int] = Field(default_factory=lambda: [0], description="few-shot counts to run (examples)")
    split: Literal["test", "validation"] = Field(
        "test", description="split scored (a local folder without test files falls back to validation)"
    )
    limit: int | None = Field(None, ge=1, description="score at most this many examples per task (examples)")
    batch_size: int = Field(16, ge=1, description="KoBEST requests per forward pass")
    korean_chars: int = Field(50_000, ge=1000, description="held-out Korean text for bits per byte (characters)")
    english_chars: int = Field(50_000, ge=1000, description="English text for bits per byte (characters)")
    window: int = Field(1024, ge=16, description="scoring window for long documents (tokens)")

    @model_validator(mode="after")
    def _valid(self) -> EvalSection:
        if any(k < 0 for k in self.shots) or not self.shots:
            raise ValueError("eval.shots: one or more non-negative integers")
        return self


class ReportSection(Section):
    """The HTML and Markdown report of a run."""

    korean_prompts: list[str] = Field(
        default_factory=lambda: ["대한민국의 수도는", "오늘 날씨가 좋아서", "국회는 법률안을"],
        description="Korean prompts continued greedily by the base and the adapted model",
    )
    english_prompts: list[str] = Field(
        default_factory=lambda: ["The capital of France is", "def fibonacci(n):"],
        description="English prompts continued greedily by both models (forgetting, by eye)",
    )
    max_new_tokens: int = Field(32, ge=1, le=512, description="length of each generation (tokens)")


class RunConfig(Section):
    """A whole run: every phase, from raw corpus to evaluated model and report."""

    name: str = Field("run", description="run name; outputs go to <run_dir>/<name>/")
    run_dir: PathField = Field("runs", description="parent folder of run folders")
    seed: int = Field(0, ge=0, description="seed for every random choice (splits, init, data order)")
    model: ModelSection = Field(default_factory=ModelSection, description="the base model")
    corpus: CorpusSection = Field(default_factory=CorpusSection, description="raw text sources")
    prepare: PrepareSection = Field(default_factory=PrepareSection, description="corpus preprocessing")
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="new tokenizer and merge")
    extend: ExtendSection = Field(default_factory=ExtendSection, description="model extension and init")
    train: TrainSection = Field(default_factory=TrainSection, description="multistage continual pretraining")
    eval: EvalSection = Field(default_factory=EvalSection, description="evaluation")
    report: ReportSection = Field(default_factory=ReportSection, description="the report")

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
