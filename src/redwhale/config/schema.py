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


class RunConfig(Section):
    """A whole run: every phase, from raw corpus to evaluated model and report."""

    name: str = Field("run", description="run name; outputs go to <run_dir>/<name>/")
    run_dir: PathField = Field("runs", description="parent folder of run folders")
    seed: int = Field(0, ge=0, description="seed for every random choice (splits, init, data order)")
    model: ModelSection = Field(default_factory=ModelSection, description="the base model")
    corpus: CorpusSection = Field(default_factory=CorpusSection, description="raw text sources")
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="new tokenizer and merge")
    extend: ExtendSection = Field(default_factory=ExtendSection, description="model extension and init")

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
