"""GGUF export of an adapted SmolLM2, checked with a real llama.cpp (llama-cpp-python).

    python bench/bench_export.py [--model runs/<name>/train/model] [--base smollm2-135m] [--tokens 32]
                                 [--llama-build-seconds S]

Without ``--model`` an adapted SmolLM2 is made in a minute without training: a Korean tokenizer trained on konlpy's
text, merged into SmolLM2's, and the model extended to it (decomposition init), as the recipe's tokenizer and extend
phases do. Measures and prints, and saves to bench/measured/export.json:

* the pre-tokenizer type the export found (SmolLM2: "smollm", from the base's chkhsh) and whether the merged
  tokenizer's own chkhsh differs from the base's (the case llama.cpp's converter cannot name);
* export time and file size for f16 and q8_0, and the exporter's own tokenizer check in llama.cpp;
* greedy continuations (``--tokens`` ids) of 3 Korean and 2 English prompts from the f16 file in llama.cpp and from
  the model in transformers (float32): whether the token ids are identical, per prompt;
* Korean bits per byte of the f16 and the q8_0 files from llama.cpp's own logits (``logits_all=True``), on the last
  petitions of ../shared/data/ko_corpus/ko_train.jsonl when present (else konlpy text), each document cut to
  ``--window`` tokens, prefixed with the BOS (else EOS) id as in redwhale.core.bpb; q8_0 should be within 2% of f16.

Needs llama-cpp-python (``pip install 'redwhale[llama]'``, compiled from source).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
KO_CORPUS = ROOT.parent / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"
OUT = ROOT / "bench" / "measured" / "export.json"
KOREAN_PROMPTS = ["대한민국의 수도는", "오늘은 날씨가 좋아서", "인공지능 언어 모델은"]
ENGLISH_PROMPTS = ["The capital of France is", "def fibonacci(n):"]


def adapted_smollm2(base: str, work: Path, size: int) -> tuple[Path, dict]:
    """Train a Korean tokenizer on konlpy text, merge it into the base's, extend the model (no training)."""
    from redwhale.config.schema import ExtendSection
    from redwhale.core.scripts import SCRIPTS
    from redwhale.corpus.bundled import konlpy_texts
    from redwhale.models.adapt import extend_and_compare
    from redwhale.tokenizer.base import load_base
    from redwhale.tokenizer.merge import merge_tokenizers
    from redwhale.tokenizer.train import train_new

    started = time.perf_counter()
    texts = konlpy_texts()
    _, base_tok = load_base(base)
    train_new(texts, base_tok, size, SCRIPTS["hangul"], work / "ko-tok", "script_words", 2)
    merge = merge_tokenizers(base, work / "ko-tok", work / "merged", "hangul", 64)
    section = ExtendSection(init="decomposition", compare=[], calibration_chars=20000)
    extend_and_compare(base, work / "merged", section, texts, [], [], work / "model", None)
    info = {"tokenizer_size": size, "merged_vocab": merge.get("merged_size"), "seconds": time.perf_counter() - started}
    return work / "model", info


def korean_documents(count: int) -> list[str]:
    """The last ``count`` petitions of the shared corpus (its movie reviews are one-liners), else konlpy text."""
    if KO_CORPUS.is_file():
        docs = [json.loads(line) for line in KO_CORPUS.read_text(encoding="utf-8").splitlines()]
        return [d["text"] for d in docs if d.get("source") == "petitions" and len(d["text"]) >= 200][-count:]
    from redwhale.corpus.bundled import konlpy_texts

    text = "\n".join(konlpy_texts())
    return [text[i : i + 1500] for i in range(0, 1500 * count, 1500)]


def llama_bpb(path: Path, docs: list[list[int]], nbytes: int, window: int) -> float:
    """Bits per byte from llama.cpp's logits: each document's ids (first = BOS/EOS prefix) scored after the first."""
    from redwhale.export.llama_cpp import open_llama

    llm = open_llama(path, n_ctx=window, n_batch=window, logits_all=True, n_threads=2, seed=0)
    nats = 0.0
    for ids in docs:
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
        top = logits.max(axis=-1, keepdims=True)
        logp = logits - (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))
        nats -= logp[np.arange(len(ids) - 1), ids[1:]].sum()
    llm.close()
    return nats / math.log(2) / nbytes


def greedy_pairs(gguf_path: Path, model_dir: Path, tokens: int) -> list[dict]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redwhale.export.llama_cpp import hf_greedy, llama_greedy, open_llama

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    llm = open_llama(gguf_path, n_ctx=256, logits_all=True, n_threads=2, seed=0)
    rows = []
    for lang, prompt in [("ko", p) for p in KOREAN_PROMPTS] + [("en", p) for p in ENGLISH_PROMPTS]:
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        same_prompt = llm.tokenize(prompt.encode(), add_bos=False, special=False) == ids
        ours, theirs = llama_greedy(llm, ids, tokens), hf_greedy(model, ids, tokens)
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b), None)
        rows.append(
            {
                "lang": lang,
                "prompt": prompt,
                "prompt_ids_equal": same_prompt,
                "identical": ours == theirs,
                "first_difference": first,
                "llama_cpp": ours,
                "transformers": theirs,
                "text": tokenizer.decode(theirs),
            }
        )
    llm.close()
    return rows


def bpb_pair(files: dict[str, Path], model_dir: Path, count: int, window: int) -> dict:
    from transformers import AutoTokenizer

    from redwhale.core.bpb import prefix_token_id

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    prefix, docs, nbytes = prefix_token_id(tokenizer), [], 0
    for text in korean_documents(count):
        ids = tokenizer(text, add_special_tokens=False).input_ids[: window - 1]
        nbytes += len(tokenizer.decode(ids).encode("utf-8"))  # the bytes of the part that is scored
        docs.append([prefix, *ids])
    result = {kind: llama_bpb(path, docs, nbytes, window) for kind, path in files.items()}
    result["documents"], result["bytes"], result["tokens"] = len(docs), nbytes, sum(len(d) - 1 for d in docs)
    result["q8_0_vs_f16"] = result["q8_0"] / result["f16"] - 1
    return result


def chkhsh_differs(model_dir: Path, base: str) -> dict:
    from transformers import AutoTokenizer

    from redwhale.core.source import load_tokenizer
    from redwhale.export.gguf_vocab import KNOWN_PRE, chkhsh

    merged, base_hash = chkhsh(AutoTokenizer.from_pretrained(str(model_dir))), chkhsh(load_tokenizer(base))
    return {"base": base_hash, "merged": merged, "differs": merged != base_hash, "merged_known": merged in KNOWN_PRE}


def run(args, work: Path) -> dict:
    from redwhale.export.gguf import export_gguf

    made = None
    model_dir = Path(args.model) if args.model else None
    if model_dir is None:
        model_dir, made = adapted_smollm2(args.base, work, args.tokenizer_size)
    exports = {kind: export_gguf(model_dir, work / f"model.{kind}.gguf", kind, args.base) for kind in ("f16", "q8_0")}
    files = {kind: Path(e["path"]) for kind, e in exports.items()}
    return {
        "model": str(args.model or f"SmolLM2-135M extended without training ({made})"),
        "base": args.base,
        "chkhsh": chkhsh_differs(model_dir, args.base),
        "export": {k: {key: v for key, v in e.items() if key != "path"} for k, e in exports.items()},
        "greedy_f16": greedy_pairs(files["f16"], model_dir, args.tokens),
        "korean_bpb": bpb_pair(files, model_dir, args.documents, args.window),
        "llama_cpp_python_build_seconds": args.llama_build_seconds,
    }


def report(result: dict) -> None:
    print(f"model: {result['model']}")
    c = result["chkhsh"]
    print(f"chkhsh: base {c['base'][:12]}, merged {c['merged'][:12]} (differs: {c['differs']})")
    for kind, e in result["export"].items():
        print(
            f"export {kind}: {e['seconds']:.1f} s, {e['bytes'] / 2**20:.1f} MiB, {e['tensors']} tensors, vocab "
            f"{e['vocab']}, pre {e['pre_tokenizer']!r} ({e['pre_tokenizer_from']}); llama.cpp: {e['llama_cpp_check']}"
        )
    for row in result["greedy_f16"]:
        print(f"greedy f16 [{row['lang']}] {row['prompt']!r}: identical={row['identical']} {row['text']!r}")
    b = result["korean_bpb"]
    print(
        f"Korean bpb (llama.cpp logits, {b['documents']} docs, {b['bytes']} bytes): f16 {b['f16']:.4f}, "
        f"q8_0 {b['q8_0']:.4f} ({b['q8_0_vs_f16']:+.2%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="an adapted model folder (default: extend SmolLM2 now, without training)")
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument("--tokenizer-size", type=int, default=2000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--documents", type=int, default=20)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--llama-build-seconds", type=float, help="wall time of `pip install llama-cpp-python`")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        sys.exit("this benchmark needs llama-cpp-python: pip install 'redwhale[llama]' (compiles llama.cpp)")
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    report(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
