"""bfloat16 as a storage format on CPU: float32 products, bf16 weights and bf16 saved activations."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from redwhale.train.loss import CausalLMLoss, ChunkedLinearCrossEntropy
from redwhale.train.precision import Precision, UpcastProducts, apply_dtypes, cpu_bfloat16

BF16_FROZEN = Precision(torch.bfloat16, torch.float32, None, torch.bfloat16)


def odd_layers_model() -> LlamaForCausalLM:
    """A random 4-layer Llama in the odd-layers stage: layers 1 and 3 train in fp32, the rest is frozen in bf16."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    for name, param in model.named_parameters():
        param.requires_grad = "layers.1." in name or "layers.3." in name
    apply_dtypes(model, BF16_FROZEN)
    return model


IDS = torch.randint(0, 512, (2, 64), generator=torch.Generator().manual_seed(0))


def _storages(model: nn.Module) -> set[int]:
    return {p.untyped_storage()._cdata for p in model.parameters()}


def test_every_layer_computes_in_float32_over_bf16_weights():
    """The frozen layers below the first trainable one get float32 rows from the bf16 embedding: no product runs in
    bf16 (a CPU without bf16 instructions makes those ~200x slower)."""
    model = odd_layers_model()
    outputs = []
    hooks = [
        m.register_forward_hook(lambda module, args, out: outputs.append(out.dtype))
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Embedding)
    ]
    with cpu_bfloat16(model.parameters()):
        CausalLMLoss(model)(IDS)
    for hook in hooks:
        hook.remove()
    assert len(outputs) == 1 + 4 * 7 and set(outputs) == {torch.float32}


def test_the_fused_losss_gradient_for_some_rows_is_the_full_gradient_there_and_zero_elsewhere():
    """Lazy head rows: the weight's gradient computed for the given rows only is the full one on those rows, to
    rounding, and zero on the others; the loss and the hidden states' gradient are the same."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 16, generator=generator)
    targets = torch.randint(0, 50, (40,), generator=generator)
    rows = torch.tensor([3, 7, 20, 41])
    results = []
    for given in (None, rows):
        h = hidden.clone().requires_grad_()
        w = torch.randn(50, 16, generator=torch.Generator().manual_seed(1)).requires_grad_()
        loss = ChunkedLinearCrossEntropy.apply(h, w, targets, 16, None, given)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    (loss, grad_h, grad_w), (loss_rows, grad_h_rows, grad_w_rows) = results
    assert torch.equal(loss, loss_rows) and torch.equal(grad_h, grad_h_rows)
    torch.testing.assert_close(grad_w_rows[rows], grad_w[rows])
    others = torch.ones(50, dtype=torch.bool)
    others[rows] = False
    assert grad_w[others].abs().sum() > 0 and torch.count_nonzero(grad_w_rows[others]) == 0


def test_the_fused_loss_in_bf16_products_over_a_float32_head_is_autocasts_own():
    """bf16 products over float32 weights (autocast's, on a GPU or a CPU with AMX): the fused loss, which casts the
    head once for all its chunks, gives the loss and gradients autograd gives through the same casts."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(40, 16, generator=generator)
    targets = torch.randint(0, 50, (40,), generator=generator)
    weight = torch.randn(50, 16, generator=generator)
    results = []
    for fused in (True, False):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        if fused:
            loss = ChunkedLinearCrossEntropy.apply(h, w, targets, 16, torch.bfloat16, None)
        else:
            logits = (h.to(torch.bfloat16) @ w.to(torch.bfloat16).T).float()
            loss = nn.functional.cross_entropy(logits, targets)
        loss.backward()
        results.append((loss.detach(), h.grad, w.grad))
    (loss, grad_h, grad_w), (own_loss, own_grad_h, own_grad_w) = results
    assert grad_w.dtype == torch.float32 and grad_h.dtype == torch.float32
    torch.testing.assert_close(loss, own_loss)
    # both round the same bf16 products; only the order of float32 sums differs
    torch.testing.assert_close(grad_h, own_grad_h, rtol=2e-2, atol=1e-3 * own_grad_h.abs().max().item())
    torch.testing.assert_close(grad_w, own_grad_w, rtol=2e-2, atol=1e-3 * own_grad_w.abs().max().item())


def test_a_frozen_float32_head_is_cast_to_the_products_dtype_once_and_again_only_when_it_changes():
    """Under bf16 products on CPU, a frozen float32 head is cast once for the stage, not at every forward: the loss is
    the one the cast at every forward gave; an in-place change of the head (a resumed or merged weight) is cast again;
    a head that trains is never cached (its gradient is the fused loss's own)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)  # fmt: skip
    model = LlamaForCausalLM(config)
    head = model.lm_head.weight
    head.requires_grad_(False)
    loss_fn = CausalLMLoss(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        first = loss_fn(IDS)
        cast = loss_fn._frozen_head(head, torch.bfloat16)
        again = loss_fn(IDS)
        assert loss_fn._frozen_head(head, torch.bfloat16) is cast and cast.dtype == torch.bfloat16
        assert torch.equal(cast, head.to(torch.bfloat16))
        with torch.no_grad():
            head.mul_(2.0)
        changed = loss_fn._frozen_head(head, torch.bfloat16)
        assert changed is not cast and torch.equal(changed, head.to(torch.bfloat16))
        uncached = CausalLMLoss(model)
        uncached._frozen_head = lambda weight, dtype: weight  # the cast inside the loss, at every forward
        torch.testing.assert_close(loss_fn(IDS), uncached(IDS), rtol=0, atol=0)
    assert torch.equal(first, again)
    head.requires_grad_(True)
    assert loss_fn._frozen_head(head, torch.bfloat16) is head


def test_saved_activations_are_bf16_the_loss_is_unchanged_and_gradients_close():
    model = odd_layers_model()
    loss_fn = CausalLMLoss(model)
    with UpcastProducts():
        reference = loss_fn(IDS)
    reference.backward()
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    expected = {n: p.grad.clone() for n, p in trained.items()}
    model.zero_grad(set_to_none=True)

    kept: list[torch.Tensor] = []
    with cpu_bfloat16(model.parameters(), observe=kept.append):
        loss = loss_fn(IDS)
    loss.backward()
    assert loss.item() == reference.item()  # only what backward reads is rounded
    params = _storages(model)
    activations = [t for t in kept if t.untyped_storage()._cdata not in params and t.numel() >= 4096]
    assert activations and all(t.dtype == torch.bfloat16 for t in activations)
    for name, param in trained.items():
        error = (param.grad - expected[name]).norm() / expected[name].norm()
        assert error < 0.05, name


def _saved_bytes(model, context_factory) -> int:
    """Bytes of the distinct non-parameter storages autograd keeps for one forward."""
    params, seen = _storages(model), {}

    def observe(tensor):
        key = tensor.untyped_storage()._cdata
        if key not in params:
            seen[key] = tensor.untyped_storage().nbytes()

    with context_factory(observe):
        CausalLMLoss(model)(IDS)
    return sum(seen.values())


def test_bf16_storage_halves_what_autograd_keeps_and_a_frozen_layer_keeps_no_input():
    model = odd_layers_model()

    def upcast_only(observe):
        stack = torch.autograd.graph.saved_tensors_hooks(lambda t: (observe(t), t)[1], lambda t: t)
        return _Both(stack, UpcastProducts())

    fp32_saved = _saved_bytes(model, upcast_only)
    bf16_saved = _saved_bytes(model, lambda observe: cpu_bfloat16(model.parameters(), observe=observe))
    assert bf16_saved <= 0.55 * fp32_saved

    # a frozen linear layer saves its weight only (the input is needed for the weight's gradient alone)
    layer = nn.Linear(64, 64).to(torch.bfloat16).requires_grad_(False)
    x = torch.randn(8, 64, requires_grad=True)
    kept = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: (kept.append(t), t)[1], lambda t: t), UpcastProducts():
        layer(x).sum().backward()
    assert [t.dtype for t in kept] == [torch.bfloat16] and x.grad is not None


class _Both:
    def __init__(self, *contexts):
        self.contexts = contexts

    def __enter__(self):
        for c in self.contexts:
            c.__enter__()

    def __exit__(self, *exc):
        for c in reversed(self.contexts):
            c.__exit__(*exc)


@pytest.mark.parametrize("stage", ["odd", "embeddings"])
def test_the_plan_counts_bf16_saved_activations(stage):
    """The planner probes under the trainer's own context: with bf16 frozen weights on CPU its activation figure is
    about half the fp32 one."""
    from redwhale.config.schema import StageSection, TrainSection
    from redwhale.train.plan import _meta_model, plan_stage

    trainable = {"layers": "odd"} if stage == "odd" else {"embeddings": "all", "lm_head": "all"}
    section = StageSection(name=stage, trainable=trainable, tokens=1, lr=1e-4)
    cfg = TrainSection(stages=[section], sequence_length=256, micro_batch_size=4)
    config = odd_layers_model().config
    plans = {}
    for name, precision in (
        ("fp32", Precision(torch.float32, torch.float32, None, torch.float32)),
        ("bf16", BF16_FROZEN),
    ):
        model = _meta_model(config, gradient_checkpointing=False)
        plans[name] = plan_stage(model, section, cfg, 512, 80 * 2**30, precision, 4)
    assert plans["bf16"].activations_gib <= 0.6 * plans["fp32"].activations_gib
    assert plans["bf16"].weights_gib < plans["fp32"].weights_gib


def test_the_copies_die_with_the_graph_without_the_garbage_collector():
    """No reference cycle keeps a step's bf16 copies alive into the next step (they would raise the peak by a
    step's activations until the collector happens to run)."""
    import gc
    import weakref

    model = odd_layers_model()
    params, copies = _storages(model), []

    def observe(tensor):
        if tensor.dtype == torch.bfloat16 and tensor.untyped_storage()._cdata not in params:
            copies.append(weakref.ref(tensor))

    gc.collect()
    gc.disable()
    try:
        with cpu_bfloat16(model.parameters(), observe=observe):
            loss = CausalLMLoss(model)(IDS)
        alive = sum(ref() is not None for ref in copies)
        loss.backward()
        del loss
        assert alive > 10 and all(ref() is None for ref in copies)
    finally:
        gc.enable()


def test_restored_views_hold_the_values_they_were_saved_with():
    """Every kind of saved view comes back as it was: a whole tensor, a transposed view of a shared storage, a small
    strided slice of a large buffer (copied alone), and a tensor changed in place after it was saved (copied again)."""
    from redwhale.train.precision import SavedInLowPrecision

    base = torch.randn(64, 128)
    views = [base, base.T, base[5:7, ::3], base[:, 10:20].T]
    restored = []
    hooks = SavedInLowPrecision([], min_numel=1)
    with hooks:
        packed = [hooks.pack_hook(v) for v in views]
        restored = [hooks.unpack_hook(p) for p in packed]
        before = base.clone()
        base.add_(1.0)  # a new version: the next save copies again
        again = hooks.unpack_hook(hooks.pack_hook(base))
    for view, back in zip(views, restored, strict=True):
        assert back.shape == view.shape
    for index, back in enumerate(restored):
        original = [before, before.T, before[5:7, ::3], before[:, 10:20].T][index]
        assert torch.allclose(back, original, rtol=1e-2, atol=1e-2)
    assert torch.allclose(again, before + 1.0, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize(("native", "expected"), [(True, torch.bfloat16), (False, None)])
def test_auto_precision_uses_bf16_products_only_on_a_cpu_that_multiplies_bf16_in_hardware(
    monkeypatch, native, expected
):
    """``precision: auto`` on CPU: bf16 autocast where the CPU multiplies bf16 in hardware (AMX or AVX512-BF16),
    float32 products elsewhere (emulated bf16 is two orders of magnitude slower); the weights stay float32 either way,
    and fp32 / bf16 force their choice."""
    from redwhale.config.schema import TrainSection
    from redwhale.train import precision

    monkeypatch.setattr(precision, "cpu_native_bf16", lambda: native)
    cpu = torch.device("cpu")
    auto = precision.resolve_precision("auto", TrainSection(), cpu)
    assert auto.autocast == expected
    assert (auto.frozen, auto.trainable) == (torch.float32, torch.float32)
    assert precision.resolve_precision("auto", TrainSection(precision="fp32"), cpu).autocast is None
    assert precision.resolve_precision("auto", TrainSection(precision="bf16"), cpu).autocast == torch.bfloat16


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "expected"),
    [(True, False, True), (False, True, True), (False, False, False), ("raises", True, True), ("raises", False, False)],
)
def test_bf16_products_are_used_on_amx_and_on_avx512_bf16_alone(monkeypatch, amx, avx512_bf16, expected):
    """Either instruction set multiplies bf16 in hardware (r38: AVX512-BF16 without AMX trained 1.7x to 1.9x faster in
    bf16, mean losses within 0.02), so either makes ``precision: auto`` use bf16 products; a probe that fails counts as
    absent."""
    from redwhale.core import environment as env

    def probe(value):
        def answer() -> bool:
            if value == "raises":
                raise RuntimeError("cpuinfo unavailable")
            return value

        return answer

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", probe(amx), raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", probe(avx512_bf16), raising=False)
    assert env.cpu_native_bf16() is expected


def test_the_fast_allocator_is_found_advised_and_preloaded(monkeypatch, tmp_path):
    """A tcmalloc beside the virtual environment is found, named in the advice a CPU run logs on glibc's malloc, and
    preloaded when a benchmark re-runs itself (once); a process already on it is left alone."""
    from redwhale.core import environment as env

    library = tmp_path / "lib" / "libtcmalloc_minimal.so.4"
    library.parent.mkdir()
    library.write_bytes(b"")
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path))
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    monkeypatch.delenv("REDWHALE_MALLOC_TRIED", raising=False)
    monkeypatch.setattr(env.sys, "platform", "linux")
    assert env.fast_malloc() == str(library)
    monkeypatch.setattr(env, "malloc_loaded", lambda: "system")
    assert f"LD_PRELOAD={library}" in env.malloc_advice()
    calls = []
    monkeypatch.setattr(env.os, "execve", lambda exe, argv, environ: calls.append(environ))
    env.rerun_with_fast_malloc()
    assert calls and calls[0]["LD_PRELOAD"].split(":")[0] == str(library) and calls[0]["REDWHALE_MALLOC_TRIED"]
    monkeypatch.setenv("REDWHALE_MALLOC_TRIED", "1")
    assert env.rerun_with_fast_malloc() == "system" and len(calls) == 1  # tried once: no loop if the preload fails
    monkeypatch.setattr(env, "malloc_loaded", lambda: "tcmalloc")
    assert env.malloc_advice() is None


def test_the_allocator_in_use_is_read_from_the_process_maps():
    """A process on glibc's malloc says ``system``; one started with a tcmalloc or jemalloc preloaded names it."""
    import os
    import subprocess
    import sys

    from redwhale.core.environment import fast_malloc

    code = "from redwhale.core.environment import malloc_loaded; print(malloc_loaded())"
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    assert subprocess.check_output([sys.executable, "-c", code], env=plain, text=True).strip() == "system"
    found = fast_malloc()
    if found is None:
        pytest.skip("no tcmalloc or jemalloc on this machine")
    loaded = subprocess.check_output([sys.executable, "-c", code], env=dict(plain, LD_PRELOAD=found), text=True)
    assert loaded.strip() == ("tcmalloc" if "tcmalloc" in found else "jemalloc")


def test_cpu_peak_memory_is_read_from_the_allocator_the_process_runs_on():
    """Under glibc's malloc, and under tcmalloc and jemalloc where the machine has them preloaded (as the benchmarks
    run), a 256 MiB tensor allocated in a block is counted in the block's peak: glibc's own counters read ~0 under
    another allocator, which the training logs once reported as 0 MiB."""
    import os
    import subprocess
    import sys

    from redwhale.core.environment import _LIB_DIRS

    code = (
        "import torch\n"
        "from redwhale.core.memory import PeakMemory\n"
        "with PeakMemory(torch.device('cpu')) as peak:\n"
        "    block = torch.ones(64 * 2**20)\n"
        "print(peak.measure, '|', peak.added_mib)\n"
    )
    plain = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    found = [Path(d) / name for name in ("libtcmalloc_minimal.so.4", "libjemalloc.so.2") for d in _LIB_DIRS]
    preloads = ["", *{path.name: str(path) for path in reversed(found) if path.is_file()}.values()]
    for preload in preloads:
        env = dict(plain, LD_PRELOAD=preload) if preload else plain
        measure, added = subprocess.check_output([sys.executable, "-c", code], env=env, text=True).rsplit("|", 1)
        assert "RSS" not in measure, (preload, measure)
        assert 250 <= float(added) < 400, (preload, measure, added)
