"""redwhale against plain continual pretraining at the same wall clock, on CPU with SmolLM2-135M.

(a) redwhale: train a 20k Korean tokenizer, merge it, extend the model with calibrated decomposition init, then the
    four stages (embeddings + head, odd layers, even layers, LoRA merged) — the tokenizer and init time count
    against the budget;
(b) plain continual pretraining: full fine-tuning of every parameter with the base tokenizer.

Both train on the training split of ``../shared/data/ko_corpus/ko_train.jsonl`` and are scored on the same held-out
Korean documents and the same English text (CPython's reference, never trained on), in bits per byte, so the two
tokenizers are compared fairly. Token budgets come from each stage's throughput measured in a short probe run before
the timed run (probes are not counted); the printed table reports the wall clock each arm actually used.

    python bench/bench_cpt.py [--budget 600] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
BASE = "smollm2-135m"


def stages_paper(lrs=(1e-3, 1e-4, 1e-4, 2e-4)) -> list[dict]:
    return [
        {"name": "embeddings", "trainable": {"embeddings": "all", "lm_head": "all"}, "lr": lrs[0]},
        {"name": "odd_layers", "trainable": {"layers": "odd"}, "lr": lrs[1]},
        {"name": "even_layers", "trainable": {"layers": "even"}, "lr": lrs[2]},
        {"name": "lora", "lora": {"rank": 64, "alpha": 128}, "lr": lrs[3]},
    ]


def stage_full(lr=1e-4) -> list[dict]:
    return [
        {
            "name": "full",
            "trainable": {"embeddings": "all", "lm_head": "all", "layers": "all", "norms": True},
            "lr": lr,
        }
    ]


def train_section(stages: list[dict], tokens: list[int]):
    from redwhale.config.schema import TrainSection

    return TrainSection(
        sequence_length=512,
        micro_batch_size=4,
        checkpoint_every=10_000,
        tensorboard=False,
        stages=[dict(s, tokens=int(t)) for s, t in zip(stages, tokens, strict=True)],
    )


def rates(model: Path, texts: list[str], stages: list[dict], out: Path) -> list[float]:
    """Tokens per second of each stage, from a 3-step probe (its warm-up step makes it an underestimate, so the timed
    run ends a little under budget; the wall clock actually used is what the table reports)."""
    from redwhale.train.commands import train_command

    step_tokens = 512 * 4
    summary = train_command(model, texts, None, train_section(stages, [3 * step_tokens] * len(stages)), out)
    return [stage["tokens_per_s"] for stage in summary["stages"]]


def bpb(model: str, korean: list[str], english: list[str], out: Path, base_tokenizer: str | None) -> dict:
    from redwhale.evaluate.run import evaluate

    result = evaluate(model, out, korean=korean, english=english, kobest=False, base_tokenizer=base_tokenizer)
    return {"korean_bpb": result["korean_bpb"], "english_bpb": result["english_bpb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=600.0, help="wall-clock seconds per arm")
    parser.add_argument("--size", type=int, default=20_000, help="new Korean tokenizer size")
    parser.add_argument("--korean-chars", type=int, default=30_000)
    parser.add_argument("--english-chars", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if not CORPUS.is_file():
        raise SystemExit(f"needs {CORPUS} (see ../shared/data/PROVENANCE.md)")

    import torch
    from redwhale.train.commands import train_command

    from redwhale.config.schema import CorpusInput, TokenizerSection
    from redwhale.core.logs import setup_logging
    from redwhale.core.source import materialize, resolve
    from redwhale.core.text import heldout_sample, training_texts
    from redwhale.corpus.bundled import python_docs_english
    from redwhale.corpus.readers import iter_texts
    from redwhale.models.extend import extend_command
    from redwhale.tokenizer.commands import train_command as train_tokenizer
    from redwhale.tokenizer.merge import merge_tokenizers

    setup_logging()
    torch.manual_seed(0)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-cpt-"))
    out.mkdir(parents=True, exist_ok=True)
    texts = list(iter_texts([CorpusInput(path=str(CORPUS))]))
    train = list(training_texts(texts))
    korean = heldout_sample(texts, args.korean_chars)
    english = heldout_sample(python_docs_english(unit="paragraph"), args.english_chars, heldout_only=False)
    base_dir = materialize(resolve(BASE), None)
    print(f"{len(train):,} training documents; held-out: {len(korean)} Korean, {len(english)} English documents")

    # ---- (a) redwhale: tokenizer + init count against the budget
    started = time.perf_counter()
    train_file = out / "train.txt"
    train_file.write_text("\n\n".join(t.replace("\n\n", "\n") for t in train), encoding="utf-8")
    train_tokenizer(
        BASE, [CorpusInput(path=str(train_file), format="text")], TokenizerSection(size=args.size), out / "ko-tokenizer"
    )
    merge_tokenizers(BASE, out / "ko-tokenizer", out / "merged", pad_to_multiple_of=64)
    extend_command(BASE, out / "merged", "calibrated", out / "extended", train, 30_000)
    prep_s = time.perf_counter() - started
    print(f"(a) tokenizer, merge and init: {prep_s:.0f} s")

    paper = stages_paper()
    paper_rates = rates(out / "extended", train[:2000], paper, out / "probe-a")
    full = stage_full()
    full_rates = rates(base_dir, train[:2000], full, out / "probe-b")
    left = max(60.0, args.budget - prep_s)
    tokens_a = [r * left / len(paper) for r in paper_rates]
    tokens_b = [full_rates[0] * args.budget]
    print(
        f"rates (tokens/s): redwhale stages {[round(r) for r in paper_rates]}, full fine-tuning {round(full_rates[0])}"
    )

    started = time.perf_counter()
    train_command(out / "extended", train, None, train_section(paper, tokens_a), out / "train-a")
    wall_a = prep_s + time.perf_counter() - started
    started = time.perf_counter()
    train_command(base_dir, train, None, train_section(full, tokens_b), out / "train-b")
    wall_b = time.perf_counter() - started

    base = bpb(str(base_dir), korean, english, out / "eval-base.json", None)
    a = bpb(str(out / "train-a" / "model"), korean, english, out / "eval-a.json", str(base_dir))
    b = bpb(str(out / "train-b" / "model"), korean, english, out / "eval-b.json", None)
    rows = [
        ("base SmolLM2-135M", 0.0, 0, base),
        ("(a) redwhale", wall_a, sum(tokens_a), a),
        ("(b) full fine-tuning, base tokenizer", wall_b, sum(tokens_b), b),
    ]
    print("\n| model | wall clock (s) | training tokens | Korean bits/byte | English bits/byte | English vs base |")
    print("|---|---|---|---|---|---|")
    for name, wall, tokens, r in rows:
        change = (r["english_bpb"] / base["english_bpb"] - 1) * 100
        print(
            f"| {name} | {wall:.0f} | {tokens:,.0f} | {r['korean_bpb']:.4f} | {r['english_bpb']:.4f} | {change:+.2f}% |"
        )
    verdict = a["korean_bpb"] < b["korean_bpb"]
    print(
        f"\n(a) Korean below (b): {verdict}; (a) English degradation "
        f"{(a['english_bpb'] / base['english_bpb'] - 1) * 100:+.2f}% (target <= 5%)"
    )
    (out / "result.json").write_text(
        json.dumps({"rows": [{"name": n, "wall_s": w, "tokens": t, **r} for n, w, t, r in rows]}, indent=2)
    )
    print(f"outputs: {out}")


if __name__ == "__main__":
    main()
