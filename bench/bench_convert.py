"""Conversion of the embedded SmolLM2 GGUF: time to convert, time to load from the cache, and greedy equality.

    python bench/bench_convert.py [--model smollm2-135m]

Prints the conversion time (fresh cache), the cached lookup + load time, and whether the converted folder, loaded in a
fresh process with plain transformers, gives the same greedy continuation of "The capital of France is" as the
GGUF file loaded directly by transformers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT = "The capital of France is"


def greedy_in_fresh_process(folder: Path) -> list[int]:
    script = (
        "import json, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(folder)!r}); t = AutoTokenizer.from_pretrained({str(folder)!r})\n"
        f"ids = t({PROMPT!r}, return_tensors='pt').input_ids\n"
        "print(json.dumps(m.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=t.pad_token_id)[0].tolist()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from redwhale.core.source import convert, load_model, load_tokenizer, materialize, resolve

    source = resolve(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        start = time.perf_counter()
        materialize(source, cache)
        convert_s = time.perf_counter() - start
        start = time.perf_counter()
        materialize(source, cache)
        lookup_s = time.perf_counter() - start
        start = time.perf_counter()
        load_model(args.model, cache_dir=cache, dtype="float32")
        load_tokenizer(args.model, cache_dir=cache)
        load_s = time.perf_counter() - start
        out = convert(args.model, Path(tmp) / "hf", cache_dir=cache)
        converted = greedy_in_fresh_process(out)

        gguf = source.path
        direct = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
        )
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        ids = tok(PROMPT, return_tensors="pt").input_ids
        reference = direct.generate(ids, max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)[0].tolist()

    print(f"model: {source.describe()}")
    print(f"conversion (dequantise + save, fresh cache): {convert_s:.1f} s")
    print(f"cached lookup (hash of the file): {lookup_s:.2f} s; load model + tokenizer from the cache: {load_s:.2f} s")
    print(f"greedy continuation identical (fresh process, plain transformers vs GGUF): {converted == reference}")
    print(f"continuation: {tok.decode(reference[ids.shape[1] :])!r}")


if __name__ == "__main__":
    main()
