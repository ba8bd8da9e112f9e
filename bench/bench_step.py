"""Where a CPU training step of bench_cpt.py's arm (a) goes, and whether a factored head would be faster.

    python bench/bench_step.py MODEL [--steps 10] [--record FILE]   # MODEL: an extended model (B/budget-480/a/extend/model)
    python bench/bench_step.py --sparse-head [--record FILE]

The first trains the default one stage (``train.schedule: every_layer``: every layer, every norm and the new input
rows; no English replay, which has no cost of its own) for ``--steps`` steps of 2 x 512 tokens of the Korean training
corpus, as bench_cpt.py's arms do (tcmalloc when the machine has it, ``train.precision: auto``), and prints the
seconds of a step (the first left out: it allocates) split into the decoder's forward pass, the fused loss (the LM
head's two products, the softmax and its gradient: :class:`redwhale.train.loss.ChunkedLinearCrossEntropy`), the
backward pass, and the rest (clipping, AdamW, the row rules). r41 (2-core AMD EPYC, AVX512-BF16, tcmalloc), bench r41's
80k model: 2.79 s a step, the decoder's forward 0.75 s (27%), the fused loss 0.65 s (23%), backward 1.26 s (45%), the
rest 0.13 s (5%); on that machine (a) and (b) trained the same tokens a second in the benchmark (371 and 369).

The second asks whether the frozen head of an extension could be computed from its base rows: the calibrated init
makes each new output row the mean of its base pieces' rows plus an offset along one direction (``w_t = mean_i
W[p_i] + b_t v``), so the new logits are a sparse matrix (each new token's pieces) times the base logits, plus
``b (h . v)``. It times, for one chunk of the fused loss (256 tokens, bf16 products, 576 wide: SmolLM2), the dense
head of 49,152 + 80,000 rows against the base rows' product and the sparse matrix (2-9 pieces a token, ~440,000
entries, torch's CSR kernels), forward and input gradient. r41 (medians of 5): dense 55 ms forward (with the float32
copy of the logits) and 69 ms input gradient; factored, the base rows' product 21 ms plus the sparse product 63 ms
forward, and 49 ms for the sparse half of the input gradient alone: no faster, so not built.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ko_corpus" / "ko_train.jsonl"


def step_split(model: Path, steps: int) -> dict:
    from accelerate import Accelerator

    from redwhale.config.schema import TrainSection, every_layer_stages
    from redwhale.train import loop, loss
    from redwhale.train.run import train_schedule

    spent: dict[str, list[float]] = {"step": [], "forward": [], "loss": [], "backward": []}

    def timed(name, original, skip_meta=False):
        def wrapper(*args, **kwargs):
            if skip_meta and any(isinstance(a, torch.Tensor) and a.device.type == "meta" for a in args):
                return original(*args, **kwargs)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                spent[name].append(time.perf_counter() - started)

        return wrapper

    patches = [(loop.Trainer, "_step"), (loss.CausalLMLoss, "forward"), (Accelerator, "backward")]
    saved = [getattr(owner, name) for owner, name in patches]
    loop.Trainer._step = timed("step", saved[0])
    loss.CausalLMLoss.forward = timed("forward", saved[1], skip_meta=True)
    Accelerator.backward = timed("backward", saved[2])
    fused = loss.ChunkedLinearCrossEntropy.forward
    loss.ChunkedLinearCrossEntropy.forward = staticmethod(timed("loss", fused, skip_meta=True))
    with CORPUS.open(encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for _, line in zip(range(3000), handle, strict=False)]
    stage = dict(every_layer_stages()[0].model_dump(exclude={"share"}), english_share=0.0, tokens=steps * 1024)
    section = TrainSection(tokens=None, sequence_length=512, micro_batch_size=2, checkpoint_every=10**6,
                           tensorboard=False, merge_with_base=0, stages=[stage])  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="bench-step-"))
    try:
        train_schedule(model, texts, None, section, work)
    finally:
        for (owner, name), original in zip(patches, saved, strict=True):
            setattr(owner, name, original)
        loss.ChunkedLinearCrossEntropy.forward = staticmethod(fused)
        shutil.rmtree(work, ignore_errors=True)
    mean = {k: statistics.fmean(v[1:]) for k, v in spent.items()}  # the first step allocates
    split = {"decoder forward": mean["forward"] - mean["loss"], "fused loss": mean["loss"],
             "backward": mean["backward"], "rest": mean["step"] - mean["forward"] - mean["backward"]}  # fmt: skip
    print(f"{model}: {mean['step']:.3f} s a step ({1024 / mean['step']:.0f} tokens/s), {steps - 1} steps")
    for name, seconds in split.items():
        print(f"  {name:16} {seconds:.3f} s ({seconds / mean['step']:.0%})")
    return {"model": str(model), "steps": steps, "step_s": round(mean["step"], 4),
            "split_s": {k: round(v, 4) for k, v in split.items()}}  # fmt: skip


def sparse_head(tokens: int = 256, width: int = 576, base: int = 49_152, new: int = 80_000) -> dict:
    """The dense head against base rows plus a sparse piece matrix, one chunk of the fused loss (ms, median of 5)."""
    gen = torch.Generator().manual_seed(0)
    dense = torch.randn(base + new, width, generator=gen).bfloat16()
    h = torch.randn(tokens, width, generator=gen).bfloat16()
    pieces = torch.randint(2, 10, (new,), generator=gen)
    rows = torch.cat([torch.zeros(1, dtype=torch.long), pieces.cumsum(0)])
    columns = torch.randint(0, base, (int(pieces.sum()),), generator=gen)
    values = (1.0 / pieces.float()).repeat_interleave(pieces)
    matrix = torch.sparse_csr_tensor(rows, columns, values, (new, base))
    transposed = matrix.to_sparse_coo().t().coalesce().to_sparse_csr()
    grad = torch.randn(tokens, base + new, generator=gen).bfloat16()
    base_logits = (h @ dense[:base].T).float()
    new_grad = torch.randn(tokens, new, generator=gen)

    def ms(fn) -> float:
        fn()
        times = []
        for _ in range(5):
            started = time.perf_counter()
            fn()
            times.append((time.perf_counter() - started) * 1000)
        return round(statistics.median(times), 1)

    result = {
        "dense_forward_ms": ms(lambda: (h @ dense.T).float()),
        "dense_input_grad_ms": ms(lambda: grad @ dense),
        "base_rows_forward_ms": ms(lambda: (h @ dense[:base].T).float()),
        "sparse_forward_ms": ms(lambda: torch.sparse.mm(matrix, base_logits.T)),
        "sparse_input_grad_ms": ms(lambda: torch.sparse.mm(transposed, new_grad.T)),
        "nonzeros": int(pieces.sum()),
    }
    for name, value in result.items():
        print(f"  {name:22} {value}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, nargs="?")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--sparse-head", action="store_true", help="time the factored head instead")
    parser.add_argument("--record", type=Path, help="append one JSON line with the figures")
    args = parser.parse_args()
    from redwhale.core.environment import malloc_loaded, rerun_with_fast_malloc

    rerun_with_fast_malloc()
    if args.sparse_head:
        record = {"sparse_head": sparse_head()}
    elif args.model is None:
        raise SystemExit("give an extended model folder, or --sparse-head")
    else:
        record = step_split(args.model, args.steps)
    record.update(malloc=malloc_loaded(), threads=torch.get_num_threads())
    if args.record:
        with args.record.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
