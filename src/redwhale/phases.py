"""The phases of a run, each a function from (config, run directory, inputs) to the files it writes.

Each phase works in its ``.partial`` folder (see :mod:`redwhale.rundir`) and returns a summary; the runner
(:mod:`redwhale.runner`) decides which phases are up to date, commits each one and records its summary in the marker.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from redwhale.config.schema import CorpusInput, RunConfig
from redwhale.errors import DataError

log = logging.getLogger(__name__)


def _texts(inputs: list[CorpusInput], text_unit: str = "paragraph"):
    from redwhale.corpus.readers import ReadReport, iter_texts

    report = ReadReport()
    return iter_texts(inputs, report, text_unit), report


def prepare_phase(cfg: RunConfig, work: Path) -> dict[str, Any]:
    from redwhale.corpus.pipeline import prepare

    return prepare(
        cfg.corpus.inputs,
        cfg.prepare,
        work,
        cfg.seed,
        cfg.corpus.heldout_fraction,
        cfg.corpus.text_unit,
        cfg.tokenizer.script,
    )


def corpus_split(prepared: Path, split: str) -> list[CorpusInput]:
    from redwhale.corpus.pipeline import prepared_inputs

    return prepared_inputs(prepared, split)


def heldout_korean(cfg: RunConfig, prepared: Path, max_chars: int) -> list[str]:
    """A fixed sample of the held-out split of the prepared corpus."""
    from redwhale.corpus.heldout import heldout_sample

    texts, _ = _texts(corpus_split(prepared, "heldout"))
    sample = heldout_sample(texts, max_chars, cfg.seed, heldout_only=False)
    if not sample:
        raise DataError("the held-out split is empty: raise corpus.heldout_fraction or add text")
    return sample


def english_texts(cfg: RunConfig, max_chars: int) -> list[str]:
    """English for measuring forgetting: the config's English inputs, else the Python reference (CPython)."""
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.heldout import heldout_sample

    if cfg.corpus.english:
        texts, _ = _texts(cfg.corpus.english, cfg.corpus.text_unit)
        # English also used for replay: score its held-out split only
        return heldout_sample(texts, max_chars, cfg.seed, cfg.corpus.heldout_fraction, heldout_only=True)
    return heldout_sample(python_docs_english(unit="paragraph"), max_chars, cfg.seed, heldout_only=False)


def tokenizer_phase(cfg: RunConfig, work: Path, prepared: Path) -> dict[str, Any]:
    """Sweep (one training at the largest size), choose the size, merge."""
    from redwhale.tokenizer.merge import merge_tokenizers
    from redwhale.tokenizer.sweep import sweep

    section = cfg.tokenizer
    train, _ = _texts(corpus_split(prepared, "train"))
    heldout, _ = _texts(corpus_split(prepared, "heldout"))
    heldout_texts = list(heldout)
    sizes = sorted(set(section.sizes + ([section.size] if isinstance(section.size, int) else [])))
    result = sweep(
        cfg.model.base,
        train,
        sizes,
        work / "sweep",
        section.script,
        cfg.seed,
        0.0,
        section.heldout_max_chars,
        section.train_on,
        section.min_frequency,
        cfg.model.cache_dir,
        heldout_texts=heldout_texts,
    )
    size = result["chosen_size"] if section.size == "auto" else section.size
    report = merge_tokenizers(
        cfg.model.base,
        work / "sweep" / "new-tokenizer",
        work / "merged",
        section.script,
        section.pad_to_multiple_of,
        size,
        cfg.model.cache_dir,
        {"korean": heldout_texts[:200]},
    )
    audit = report["audit"]
    if audit["dead_tokens"] or audit["non_target_identical"] < 1 or audit["round_trip"] < 1:
        log.warning("tokenizer audit: %s", audit)
    return {
        "chosen_size": size,
        "knee": result["chosen_size"],
        "added_tokens": report["added_tokens"],
        "merged_size": report["merged_size"],
        "rec": report["rec"],
        "audit": audit,
        "base_chars_per_token": result["base_chars_per_token"],
        "chars_per_token": next(r["chars_per_token"] for r in result["rows"] if r["size"] == size),
    }


def extend_phase(cfg: RunConfig, work: Path, prepared: Path, merged: Path) -> dict[str, Any]:
    """Compare init methods (before any training), then extend with the configured one."""
    from transformers import AutoTokenizer

    from redwhale.models.compare import compare_init
    from redwhale.models.extend import extend_command

    section = cfg.extend
    summary: dict[str, Any] = {"init": section.init}
    if section.compare:
        korean = heldout_korean(cfg, prepared, section.eval_chars)
        english = english_texts(cfg, section.eval_chars)
        train, _ = _texts(corpus_split(prepared, "train"))
        result = compare_init(
            cfg.model.base,
            merged,
            section.compare,
            korean,
            english,
            work / "compare",
            train,
            section.calibration_chars,
            cfg.seed,
            cache_dir=cfg.model.cache_dir,
            save_method=section.init,
            save_dir=work / "model",
        )
        summary["compare"] = {
            k: {m: v for m, v in row.items() if m in ("korean_bpb", "english_bpb", "korean_vs_base", "english_vs_base")}
            for k, row in result["rows"].items()
            if "korean_bpb" in row
        }
    if (work / "model").is_dir():  # the comparison already built the configured init
        summary["merged_vocab"] = len(AutoTokenizer.from_pretrained(str(merged)))
        return summary
    train, _ = _texts(corpus_split(prepared, "train"))
    report = extend_command(
        cfg.model.base,
        merged,
        section.init,
        work / "model",
        train,
        section.calibration_chars,
        cfg.seed,
        cache_dir=cfg.model.cache_dir,
    )
    summary.update(merged_vocab=report["merged_vocab"], seconds=report["seconds"])
    return summary


def train_phase(cfg: RunConfig, work: Path, prepared: Path, extended: Path) -> dict[str, Any]:
    """The training schedule; continues from its checkpoints when the phase was interrupted."""
    from redwhale.train import checkpoint
    from redwhale.train.commands import train_command

    train, _ = _texts(corpus_split(prepared, "train"))
    english = None
    if cfg.corpus.english:
        from redwhale.corpus.heldout import training_texts

        english_iter, _ = _texts(cfg.corpus.english, cfg.corpus.text_unit)
        english = training_texts(english_iter, cfg.seed, cfg.corpus.heldout_fraction)
    latest = checkpoint.latest(work / "checkpoints")
    resume = latest is not None
    if resume:
        log.info("continuing training from %s", latest.name)
    summary = train_command(extended, train, english, cfg.train, work, cfg.seed, resume, cfg.name)
    return {
        "stages": [
            {k: s[k] for k in ("stage", "tokens", "seconds", "tokens_per_s", "peak_memory_mb", "final_loss")}
            for s in summary["stages"]
        ],
        "tokens": summary["tokens"],
        "seconds": summary["seconds"],
    }


def eval_phase(cfg: RunConfig, work: Path, prepared: Path, adapted: Path) -> dict[str, Any]:
    """Base and adapted model on the same held-out Korean and English text (and KoBEST when its data is there)."""
    from redwhale.evaluate.run import compare, evaluate

    section = cfg.eval
    korean = heldout_korean(cfg, prepared, section.korean_chars)
    english = english_texts(cfg, section.english_chars)
    kobest = section.kobest and (section.kobest_data is not None or _hub_reachable())
    if section.kobest and not kobest:
        log.warning("KoBEST skipped: no eval.kobest_data and the Hugging Face Hub is not reachable")
    common = dict(
        korean=korean,
        english=english,
        kobest=kobest,
        kobest_data=section.kobest_data,
        tasks=list(section.tasks),
        shots=list(section.shots),
        split=section.split,
        limit=section.limit,
        batch_size=section.batch_size,
        window=section.window,
        cache_dir=cfg.model.cache_dir,
    )
    base = evaluate(cfg.model.base, work / "base.json", extra={"label": "base"}, **common)
    adapted_results = evaluate(
        str(adapted), work / "adapted.json", base_tokenizer=cfg.model.base, extra={"label": "adapted"}, **common
    )
    (work / "compare.md").write_text(compare(base, adapted_results), encoding="utf-8")
    return {
        "base_korean_bpb": base["korean_bpb"],
        "adapted_korean_bpb": adapted_results["korean_bpb"],
        "base_english_bpb": base["english_bpb"],
        "adapted_english_bpb": adapted_results["english_bpb"],
        "kobest": kobest,
    }


def _hub_reachable() -> bool:
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def generations(spec: str, prompts: list[str], max_new_tokens: int, cache_dir=None) -> list[str]:
    """Greedy continuations of ``prompts``."""
    import torch

    from redwhale.models.source import load_model, load_tokenizer

    model = load_model(spec, dtype="auto", cache_dir=cache_dir)
    tokenizer = load_tokenizer(spec, cache_dir=cache_dir)
    device = next(model.parameters()).device
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(device)
        with torch.no_grad():
            generated = model.generate(
                ids,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                repetition_penalty=1.1,
            )
        out.append(tokenizer.decode(generated[0, ids.shape[1] :], skip_special_tokens=True))
    return out
