"""What the Korean vocabulary saves after training: seconds to read and to write the same Korean text, the base model
against redwhale's extended one, in one run on one machine.

Issue 13 counts each model's tokens per 1,000 Korean characters as "the inference and context cost the user pays
forever after". Fewer tokens is not the same as less time: the extended model also pays for a larger LM head at every
token (SmolLM2-135M: 49,152 tied rows against 128,512 untied ones at the 80,000-token vocabulary ``tokenizer.size:
auto`` chose for bench_cpt's (a) at 480 s; the head is a large share of a 135M model, a small one of a 7B). So this
bench times both models on the same held-out Korean (bench_cpt's, from its prepared corpus), batch 1:

* **read** (prefill): one forward pass over each chunk of the text, the chunks cut by characters so that both models
  read exactly the same text (``--chunk-chars``, by default what 1,024 base tokens hold);
* **write** (decode): the KV-cached step generation takes, one token at a time, teacher-forced along the first
  ``--decode-chars`` characters of each document (the text's own tokens, so that both models step through the same
  characters, not through whatever each would generate);
* **context**: Korean characters a ``--context``-token window holds (from the tokens per character).

Timings depend on the models' shapes, not their weights: an untrained extension times as the trained (a) does. The
models alternate, ``--repeats`` times, and each figure is the median, so that the machine's drift falls on both.
Transformers' eager forward on CPU at batch 1 pays a fixed cost per step (Python, a kernel call per operation of 30
layers) that weighs as much as the head; an engine bound by reading the weights (llama.cpp, a GPU decoding) pays in
proportion to the weights a token reads (the layers and the head; of a tied model's embedding, its use as the head).
The record prints that estimate beside the timings, named as an estimate: ``weights_read_per_token``.

    python bench/bench_inference.py --out DIR [--adapted M] [--record R.json]   # JSON to bench/measured/inference.json

Without ``--adapted`` the extended model is built in ``DIR`` by bench_cpt's tokenizer and extend phases (``size:
auto`` for ``--planned-tokens``, what (a) planned at 480 s in bench r33, which chose 80,000); ``DIR`` is bench_cpt's
``--out`` or a fresh folder (its corpus is prepared there once).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from redwhale.core.io import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
BASE = "smollm2-135m"


def chunks(texts: list[str], chars: int) -> list[str]:
    """The texts cut into pieces of at most ``chars`` characters (at whitespace where there is some)."""
    out = []
    for text in texts:
        while text:
            if len(text) <= chars:
                out.append(text)
                break
            cut = text.rfind(" ", chars // 2, chars)
            cut = cut if cut > 0 else chars
            out.append(text[:cut])
            text = text[cut:]
    return out


def encode(tokenizer, texts: list[str]) -> list[torch.Tensor]:
    return [torch.tensor(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"] if ids]


@torch.inference_mode()
def read_seconds(model, sequences: list[torch.Tensor]) -> float:
    started = time.perf_counter()
    for ids in sequences:
        model(input_ids=ids[None], use_cache=True, logits_to_keep=1)  # as generation prefills: the last logits
    return time.perf_counter() - started


@torch.inference_mode()
def write_seconds(model, sequences: list[torch.Tensor]) -> float:
    """Incremental decoding with the KV cache, one token a step (the full logits of each step, as generation needs)."""
    started = time.perf_counter()
    for ids in sequences:
        past = None
        for i in range(len(ids)):
            past = model(input_ids=ids[None, i : i + 1], past_key_values=past, use_cache=True).past_key_values
    return time.perf_counter() - started


def extended_model(out: Path, planned: int) -> Path:
    """bench_cpt's tokenizer and extend phases with redwhale's defaults (``tokenizer.size: auto`` for ``planned``)."""
    import bench_cpt
    from redwhale.config.schema import TokenizerSection

    target = out / "inference" / "adapt"
    done = target / "model.txt"
    if done.is_file():
        return Path(done.read_text().strip())
    model, adapted, seconds = bench_cpt.adapt("a", TokenizerSection(), planned, bench_cpt.prepared_corpus(out), target)
    print(f"extended: {adapted.added_tokens:,} tokens added in {seconds:.0f} s", flush=True)
    atomic_write_text(done, str(model))
    return Path(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="bench_cpt's --out (its prepared corpus), or a folder")
    parser.add_argument("--adapted", type=Path, help="the extended (or trained) model; default: built in --out")
    parser.add_argument("--planned-tokens", type=int, default=244_736, help="tokenizer.size auto's training budget")
    parser.add_argument("--korean-chars", type=int, default=15_000, help="held-out Korean timed (bench_cpt's)")
    parser.add_argument("--chunk-chars", type=int, default=0, help="read: characters a pass (0: 1,024 base tokens)")
    parser.add_argument("--decode-chars", type=int, default=200, help="write: characters decoded per document")
    parser.add_argument("--decode-documents", type=int, default=4, help="write: documents decoded")
    parser.add_argument("--context", type=int, default=2048, help="context: tokens a window holds")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default=None,
                        help="default: bfloat16 where the CPU multiplies in it (AMX), else float32")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--record", type=Path, default=HERE / "measured" / "inference.json")
    args = parser.parse_args()

    from redwhale.core.environment import cpu_native_bf16, rerun_with_fast_malloc

    malloc = rerun_with_fast_malloc()
    sys.path.insert(0, str(HERE))
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import bench_cpt
    from redwhale.core.source import materialize, resolve
    from redwhale.recipe.phases import korean_heldout

    args.out.mkdir(parents=True, exist_ok=True)
    korean = korean_heldout(bench_cpt.prepared_corpus(args.out), args.korean_chars, 0)
    adapted = args.adapted or extended_model(args.out, args.planned_tokens)
    dtype = args.dtype or ("bfloat16" if cpu_native_bf16() else "float32")
    paths = {"base": Path(materialize(resolve(BASE))), "adapted": adapted}
    tokenizers = {name: AutoTokenizer.from_pretrained(path) for name, path in paths.items()}
    chars = sum(len(t) for t in korean)
    per_1000 = {n: 1000 * sum(len(s) for s in encode(t, korean)) / chars for n, t in tokenizers.items()}
    chunk_chars = args.chunk_chars or int(1024 * 1000 / per_1000["base"])
    pieces = chunks(korean, chunk_chars)
    heads = [t[: args.decode_chars] for t in korean if len(t) >= args.decode_chars][: args.decode_documents]
    if len(heads) < args.decode_documents:
        raise SystemExit(f"fewer than {args.decode_documents} held-out documents of {args.decode_chars} characters")
    read = {n: encode(t, pieces) for n, t in tokenizers.items()}
    write = {n: encode(t, heads) for n, t in tokenizers.items()}
    models = {}
    for name, path in paths.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
        models[name] = model
        read_seconds(model, read[name][:2])  # warm up: the first passes allocate
    timings: dict[str, dict[str, list[float]]] = {n: {"read": [], "write": []} for n in paths}
    for _ in range(args.repeats):
        for name, model in models.items():
            timings[name]["read"].append(read_seconds(model, read[name]))
            timings[name]["write"].append(write_seconds(model, write[name]))
    read_chars, write_chars = sum(len(p) for p in pieces), sum(len(h) for h in heads)
    rows = {}
    for name, model in models.items():
        read_s, write_s = (statistics.median(timings[name][k]) for k in ("read", "write"))
        rows[name] = {
            "model": str(paths[name]),
            "vocabulary": len(tokenizers[name]),
            "lm_head_rows": model.get_output_embeddings().weight.shape[0],
            "tied_head": bool(model.config.tie_word_embeddings),
            "parameters": sum(p.numel() for p in model.parameters()),
            # a token reads every layer and the whole head; of an untied input embedding, one row
            "weights_read_per_token": sum(p.numel() for p in model.parameters())
            - (0 if model.config.tie_word_embeddings else model.get_input_embeddings().weight.numel()),
            "tokens_per_1000_korean_chars": round(per_1000[name], 1),
            "context_korean_chars": round(args.context * 1000 / per_1000[name]),
            "read_tokens": sum(len(s) for s in read[name]),
            "read_seconds": [round(s, 3) for s in timings[name]["read"]],
            "read_korean_chars_per_s": round(read_chars / read_s, 1),
            "read_tokens_per_s": round(sum(len(s) for s in read[name]) / read_s, 1),
            "write_tokens": sum(len(s) for s in write[name]),
            "write_seconds": [round(s, 3) for s in timings[name]["write"]],
            "write_korean_chars_per_s": round(write_chars / write_s, 1),
            "write_tokens_per_s": round(sum(len(s) for s in write[name]) / write_s, 1),
        }
    base, ours = rows["base"], rows["adapted"]
    ratios = {k: round(ours[k] / base[k], 2) for k in ("read_korean_chars_per_s", "write_korean_chars_per_s",
                                                         "context_korean_chars", "tokens_per_1000_korean_chars")}  # fmt: skip
    # an estimate, not a timing: Korean characters a second where decoding is bound by reading the weights
    ratios["write_korean_chars_per_s_if_weight_bound"] = round(
        base["tokens_per_1000_korean_chars"] * base["weights_read_per_token"]
        / (ours["tokens_per_1000_korean_chars"] * ours["weights_read_per_token"]), 2)  # fmt: skip
    record = {
        "what": "Korean characters a second read (prefill) and written (KV-cached decode), batch 1, same text",
        "dtype": dtype, "threads": torch.get_num_threads(), "malloc": malloc, "cpu": platform.processor() or platform.machine(),
        "korean_chars": chars, "chunk_chars": chunk_chars, "read_chunks": len(pieces), "read_chars": read_chars,
        "decode_documents": len(heads), "write_chars": write_chars, "repeats": args.repeats, "context": args.context,
        "rows": rows, "adapted_over_base": ratios,
    }  # fmt: skip
    args.record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.record, record)
    print(f"\n{dtype}, {torch.get_num_threads()} threads, {malloc}; the same {read_chars:,} held-out Korean characters "
          f"read in {len(pieces)} passes of <= {chunk_chars} characters, {write_chars:,} written in {len(heads)} documents")  # fmt: skip
    print(f"{'model':<10}{'vocab':>9}{'head rows':>11}{'tok/1k ch':>11}{'read ch/s':>11}{'write ch/s':>12}"
          f"{'write tok/s':>13}{'ctx chars':>11}")  # fmt: skip
    for name, row in rows.items():
        print(f"{name:<10}{row['vocabulary']:>9,}{row['lm_head_rows']:>11,}{row['tokens_per_1000_korean_chars']:>11.0f}"
              f"{row['read_korean_chars_per_s']:>11,.0f}{row['write_korean_chars_per_s']:>12,.1f}"
              f"{row['write_tokens_per_s']:>13,.1f}{row['context_korean_chars']:>11,}")  # fmt: skip
    print(f"adapted / base: {ratios}\nrecord: {args.record}")


if __name__ == "__main__":
    main()
