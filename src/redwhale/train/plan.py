"""``redwhale train plan``: each stage's peak memory, estimated before anything is loaded.

Per stage, in bytes:

* weights: frozen ones in the compute dtype, trained ones in ``train.trainable_dtype`` (:mod:`redwhale.train.precision`);
* gradients: the trained weights, in their dtype (none kept when torchao's offload moves them to the host);
* optimizer: the state of the chosen optimizer per trained weight on the device (:func:`redwhale.train.optim.state_bytes`;
  with ``offload_optimizer`` it lives in host memory, reported beside);
* activations: what autograd saves for the backward pass. This is *measured*, not guessed: the model is built on
  PyTorch's ``meta`` device (no memory, no weights) with the stage's parameters marked trainable, one micro-batch runs
  forward with ``saved_tensors_hooks``, and the bytes of every distinct saved storage are summed. So frozen linear
  layers that save no input, layers below the lowest trainable one that build no graph, LoRA's extra inputs and
  gradient checkpointing are all accounted for as the installed transformers actually behaves. On a GPU, autocast
  also keeps a bf16 copy of each weight a linear layer saves (counted here with the activations); on a CPU with bf16
  weights the probe runs under the trainer's own context (:func:`redwhale.train.precision.cpu_bfloat16`) and counts
  the bf16 copies it keeps;
* transients: one chunk of logits of the fused loss (:mod:`redwhale.train.loss`), the gradient flowing back
  through one layer, and on a CPU with bf16 storage the head slice cast to float32 (and the float32 head gradient
  restored beside a bf16 trained head's own).

The micro-batch that fits is the largest whose total stays under the GPU memory minus a 10% reserve (allocator
fragmentation, the CUDA context).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from transformers import CONFIG_MAPPING, AttentionInterface, AutoConfig, AutoModelForCausalLM, DynamicCache

from redwhale.config.schema import StageSection, Trainable, TrainSection
from redwhale.core.errors import ConfigError
from redwhale.core.source import materialize, resolve
from redwhale.train.loss import HEAD_SLICE_ROWS, LOSS_CHUNK, CausalLMLoss, chunk_tokens
from redwhale.train.optim import offloads_gradients, state_bytes
from redwhale.train.precision import DTYPES, Precision, apply_dtypes, cpu_bfloat16, resolve_precision
from redwhale.train.select import select, wrap_lora

log = logging.getLogger(__name__)
RESERVE = 0.10  # of a device's memory never planned: allocator fragmentation, the CUDA context

GIB = 1024**3

#: Architectures from the models' public config.json files, so plans need no download.
PRESETS: dict[str, dict[str, Any]] = {
    "llama-3.1-8b": dict(
        model_type="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
    ),
    "solar-10.7b": dict(
        model_type="llama",
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=48,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=32000,
        tie_word_embeddings=False,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    ),
    "qwen2.5-7b": dict(
        model_type="qwen2",
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        tie_word_embeddings=False,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
    ),
    "llama-3.2-1b": dict(
        model_type="llama",
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
    ),
    "smollm2-135m": dict(
        model_type="llama",
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
    ),
}


@dataclass
class StagePlan:
    stage: str
    trainable_parameters: int
    weights_gib: float
    gradients_gib: float
    optimizer_gib: float
    activations_gib: float
    transients_gib: float
    total_gib: float
    fits: bool
    max_micro_batch: int
    flops_per_token: float
    micro_batch_size: int = 0
    host_gib: float = 0.0
    grad_accum: int = 0


def model_config(spec: str, new_tokens: int, pad_to: int = 64):
    """A transformers config for ``spec`` (a preset name, or anything the model loader accepts), with the
    vocabulary grown by ``new_tokens`` (padded to a multiple of ``pad_to``)."""

    if spec in PRESETS:
        values = dict(PRESETS[spec])
        config = CONFIG_MAPPING[values.pop("model_type")](**values)
    else:
        config = AutoConfig.from_pretrained(materialize(resolve(spec)))
    vocab = config.vocab_size + new_tokens
    config.vocab_size = -(-vocab // pad_to) * pad_to if pad_to else vocab
    return config


class _FlashLikeAttention(torch.autograd.Function):
    """Stands in for fused attention on ``meta``: saves what flash / memory-efficient SDPA kernels save (queries,
    keys and values at their own head counts, the output and a float32 log-sum-exp per query), never the
    ``L x L`` matrix that PyTorch's reference path on ``meta`` would save."""

    @staticmethod
    def forward(ctx, query, key, value):
        out = torch.empty_like(query)
        ctx.save_for_backward(query, key, value, out, query.new_empty(query.shape[:3], dtype=torch.float32))
        return out

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - the probe never runs backward
        raise NotImplementedError


_ATTENTION_CALLS: list[tuple[int, bool]] = []  # (query length x width, whether a gradient flows into it)


def _probe_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kwargs):
    needs_grad = query.requires_grad or key.requires_grad or value.requires_grad
    _ATTENTION_CALLS.append((query.shape[-2] * query.shape[-1] * query.shape[1], needs_grad))
    return _FlashLikeAttention.apply(query, key, value).transpose(1, 2).contiguous(), None


def _meta_model(config, gradient_checkpointing: bool):

    AttentionInterface.register("redwhale_probe", _probe_attention)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="redwhale_probe")
    if gradient_checkpointing:
        enable_checkpointing(model)
    model.train()
    return model


def enable_checkpointing(model) -> None:
    """Activation checkpointing, non-reentrant: ``activation_checkpointing_enable`` where transformers has it (it
    deprecated ``gradient_checkpointing_enable``, which warns on every stage), else the older name."""
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@dataclass
class Probe:
    """What one meta forward of a stage measured."""

    activation_bytes: int  # distinct storages autograd saved (parameters excluded)
    flops_forward: float  # per micro-batch
    flops_backward_input: float
    flops_backward_weight: float

    @property
    def flops(self) -> float:
        return self.flops_forward + self.flops_backward_input + self.flops_backward_weight


class _EmulatedAutocast(torch.overrides.TorchFunctionMode):
    """bf16 autocast as it behaves on CUDA, for ``meta`` tensors (autocast itself does not run on ``meta``): the
    inputs of matrix products are cast to bf16, everything else keeps its dtype (so the residual stream and norms
    stay fp32, and each linear layer saves bf16 copies of its input and weight, as under real autocast). A call with an
    ``out=`` tensor is not cast, as autocast does not cast one (the fused loss computes its logits into an fp32
    ``out`` when the head is frozen in bf16 and the hidden states are fp32: a stage that trains the new input rows of
    an untied model)."""

    LOW_PRECISION = {
        torch.nn.functional.linear,
        torch.matmul,
        torch.mm,
        torch.bmm,
        torch.addmm,
        torch.baddbmm,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
    }

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.LOW_PRECISION and "out" not in (kwargs or {}):
            args = tuple(
                a.to(torch.bfloat16) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
            )
        return func(*args, **(kwargs or {}))


def probe(model, sequence_length: int, micro_batch: int, on_gpu: bool, upcast: bool = False) -> Probe:
    """Run one forward of ``micro_batch`` sequences on ``meta`` and measure what autograd keeps and the FLOPs.

    Memory: every distinct saved storage (parameters excluded). On a GPU the forward runs under an emulation of bf16
    autocast (:class:`_EmulatedAutocast`), so the bf16 copies of inputs and weights that linear layers save are
    counted; on CPU (fp32) a saved weight is the parameter itself.
    FLOPs (PaLM's convention): a linear layer costs ``2 * in * out`` per token forward, the same again backward if a
    gradient flows into its input, and again if its weight trains; attention costs ``4 * s * width`` per token
    forward, twice that backward when a gradient flows into it (no causal discount). Whether a gradient flows is read
    from ``requires_grad`` during the forward, so it is exactly what autograd will compute."""
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    saved: dict[int, int] = {}
    flops = {"forward": 0.0, "input": 0.0, "weight": 0.0}

    def observe(tensor: torch.Tensor) -> None:
        key = tensor.untyped_storage()._cdata
        if key not in params:
            saved[key] = max(saved.get(key, 0), tensor.untyped_storage().nbytes())

    def pack(tensor: torch.Tensor):
        observe(tensor)
        return tensor

    def count(module, inputs):
        tokens = inputs[0].numel() // inputs[0].shape[-1]
        cost = 2 * module.in_features * module.out_features * tokens
        flops["forward"] += cost
        flops["input"] += cost if inputs[0].requires_grad else 0
        flops["weight"] += cost if module.weight.requires_grad else 0

    hooks = [m.register_forward_pre_hook(count) for m in model.modules() if isinstance(m, nn.Linear)]
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden_needs_grad: list[bool] = []
    hooks.append(
        base.get_decoder().register_forward_hook(
            lambda module, args, output: hidden_needs_grad.append(output.last_hidden_state.requires_grad)
        )
    )
    _ATTENTION_CALLS.clear()
    ids = torch.zeros((micro_batch, sequence_length), dtype=torch.long, device="meta")
    if on_gpu:
        context = contextlib.ExitStack()
        context.enter_context(torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t))
        context.enter_context(_EmulatedAutocast())
    elif upcast:  # what the trainer runs under (bf16 storage, fp32 products), counting what it keeps
        context = cpu_bfloat16(model.parameters(), observe=observe)
    else:
        context = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
    try:
        with context:
            # an explicit cache keeps transformers from inspecting position ids for packed sequences, which needs
            # values that meta tensors do not have; the cache holds no autograd state
            CausalLMLoss(model, chunk=LOSS_CHUNK)(
                ids, past_key_values=DynamicCache(config=getattr(model, "config", None))
            )
    finally:
        for hook in hooks:
            hook.remove()
    _head_and_attention_flops(flops, base, micro_batch, sequence_length, any(hidden_needs_grad))
    return Probe(sum(saved.values()), flops["forward"], flops["input"], flops["weight"])


def _head_and_attention_flops(flops: dict, base, micro_batch: int, sequence_length: int, hidden_grad: bool) -> None:
    """Add the FLOPs no ``nn.Linear`` hook sees: the LM head (inside the fused loss) and attention."""
    head = base.get_output_embeddings()
    if head is not None:
        head_cost = 2 * head.weight.numel() * micro_batch * (sequence_length - 1)
        flops["forward"] += head_cost
        flops["input"] += head_cost if hidden_grad else 0
        flops["weight"] += head_cost if head.weight.requires_grad else 0
    for width, needs_grad in _ATTENTION_CALLS:
        attention = 4 * sequence_length * width * micro_batch  # QK^T and AV, per token 2 s w each
        flops["forward"] += attention
        flops["input"] += 2 * attention if needs_grad else 0


def _cast_meta(model, precision: Precision | None) -> None:
    """Give the meta model the dtypes the stage will have (frozen and trainable weights)."""
    if precision is not None:
        apply_dtypes(model, precision)


def _loss_head_bytes(staged, precision: Precision, slice_numel: int) -> tuple[int, int]:
    """(transient bytes, bytes the probe counted that the gradients count too) of the fused loss's head.

    On a CPU with bf16 storage the loss casts a bf16 head to float32 a slice of rows at a time, and keeps its float32
    head gradient as a saved tensor (a bf16 copy, counted by the probe): backward restores it to float32, which a
    float32 head keeps as its gradient but a bf16 head holds beside its bf16 one. Saved as it is (no bf16 store), the
    float32 buffer the probe counted becomes a float32 head's gradient in place: counted once, with the gradients."""
    base = staged.get_base_model() if hasattr(staged, "get_base_model") else staged
    head = base.get_output_embeddings()
    trains = head is not None and head.weight.requires_grad
    head_bytes = head.weight.numel() * 4 if trains else 0
    if not precision.upcasts:
        return 0, head_bytes if precision.trainable == torch.float32 else 0
    return slice_numel * 4 + (head_bytes if precision.trainable != torch.float32 else 0), 0


def plan_stage(
    model,
    stage: StageSection,
    cfg: TrainSection,
    base_rows: int,
    gpu_bytes: float,
    precision: Precision,
    micro_batch: int,
    accum: int = 1,
    reserve: float = RESERVE,
) -> StagePlan:
    """The memory of one stage at ``micro_batch``, and the largest micro-batch under ``gpu_bytes``."""
    staged = wrap_lora(copy.deepcopy(model), stage) if stage.lora is not None else model
    selection = select(staged, stage, base_rows)
    _cast_meta(staged, precision)
    trainable = selection.count()
    frozen = sum(p.numel() for p in staged.parameters() if not p.requires_grad)
    device_state, host_state = state_bytes(cfg)
    weights = frozen * precision.bytes(False) + trainable * precision.bytes(True)
    offloaded = offloads_gradients(cfg, accum)
    gradients = 0 if offloaded else trainable * precision.bytes(True)
    optimizer = trainable * device_state
    on_gpu = precision.autocast is not None
    # saved(b) = fixed + b * per_sequence: two probes separate what grows with the micro-batch from what does not
    # (bf16 copies of trainable weights under autocast, the fused loss's weight-gradient buffer)
    upcast = precision.upcasts
    measured = probe(staged, cfg.sequence_length, 1, on_gpu, upcast)
    per_sequence = probe(staged, cfg.sequence_length, 2, on_gpu, upcast).activation_bytes - measured.activation_bytes
    fixed = measured.activation_bytes - per_sequence
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    logit_bytes = 6 if on_gpu else 4  # fp32 logits (and their bf16 copy under autocast)
    head_copy, counted_twice = _loss_head_bytes(staged, precision, min(HEAD_SLICE_ROWS, vocab) * hidden)
    fixed = max(0, fixed - counted_twice)
    chunk_bytes = chunk_tokens(vocab, "cuda" if on_gpu else "cpu") * vocab * logit_bytes
    transient_per_sequence = cfg.sequence_length * hidden * 4 * 4
    static = weights + gradients + optimizer + fixed

    def total(batch: int) -> float:
        chunk = min(chunk_bytes, batch * cfg.sequence_length * vocab * logit_bytes) + head_copy
        return static + chunk + batch * (per_sequence + transient_per_sequence)

    budget = gpu_bytes * (1 - reserve)
    max_batch = 0
    while max_batch < 4096 and total(max_batch + 1) <= budget:
        max_batch += 1
    return StagePlan(
        stage=stage.name,
        trainable_parameters=trainable,
        weights_gib=weights / GIB,
        gradients_gib=gradients / GIB,
        optimizer_gib=optimizer / GIB,
        activations_gib=(micro_batch * per_sequence + fixed) / GIB,
        transients_gib=(total(micro_batch) - static - micro_batch * per_sequence) / GIB,
        total_gib=total(micro_batch) / GIB,
        fits=total(micro_batch) <= budget,
        max_micro_batch=max_batch,
        flops_per_token=measured.flops / cfg.sequence_length,
        micro_batch_size=micro_batch,
        host_gib=trainable * host_state / GIB,
    )


def full_finetune_stage(stages: list[StageSection]) -> StageSection:
    return StageSection(
        name="full fine-tune",
        trainable=Trainable(embeddings="all", lm_head="all", layers="all", norms=True),
        tokens=1,
        lr=stages[0].lr,
    )


def plan_precision(cfg: TrainSection, model_dtype: str, on_gpu: bool) -> Precision:
    """The dtypes a run would have on a GPU (bf16 autocast) or on CPU, without a device at hand."""
    device = torch.device("cuda" if on_gpu else "cpu")
    if on_gpu:  # a GPU that supports bf16 is assumed (H100, A100, L40...)
        frozen = torch.float32 if model_dtype == "float32" else torch.bfloat16
        autocast = None if cfg.precision == "fp32" else torch.bfloat16
        return Precision(frozen, DTYPES[cfg.trainable_dtype], autocast, frozen)
    return resolve_precision(model_dtype, cfg, device)


def plan_config(
    config,
    cfg: TrainSection,
    gpu_memory_gib: float,
    new_tokens: int,
    precision: Precision,
    world_size: int = 1,
    include_full: bool = True,
) -> dict[str, Any]:
    """Plan every stage of ``cfg`` (and a full fine-tune) for a transformers ``config`` grown by ``new_tokens``."""
    base_rows = config.vocab_size - new_tokens
    model = _meta_model(config, cfg.gradient_checkpointing)
    if cfg.sequence_length > getattr(config, "max_position_embeddings", 1 << 30):
        raise ConfigError(
            f"train.sequence_length {cfg.sequence_length} exceeds the model's "
            f"{config.max_position_embeddings} positions"
        )
    stages = list(cfg.stages) + ([full_finetune_stage(cfg.stages)] if include_full else [])
    rows = []
    for stage in stages:
        for param in model.parameters():
            param.requires_grad_(True)
        first = plan_stage(model, stage, cfg, base_rows, gpu_memory_gib * GIB, precision, 1, cfg.grad_accum)
        micro, accum = batch_layout(cfg, first.max_micro_batch, world_size)
        rows.append(
            plan_stage(model, stage, cfg, base_rows, gpu_memory_gib * GIB, precision, micro, accum) if micro else first
        )
        rows[-1].grad_accum = accum
    return {
        "vocab_size": config.vocab_size,
        "new_tokens": new_tokens,
        "parameters": sum(p.numel() for p in model.parameters()),
        "gpu_memory_gib": gpu_memory_gib,
        "sequence_length": cfg.sequence_length,
        "micro_batch_size": cfg.micro_batch_size,
        "global_batch_size": cfg.global_batch_size,
        "optimizer": cfg.optimizer + (" + CPU offload" if cfg.offload_optimizer else ""),
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "precision": precision.describe(),
        "stages": [asdict(r) for r in rows],
    }


def choose_schedule(
    config,
    cfg: TrainSection,
    gpu_memory_gib: float,
    new_tokens: int,
    precision: Precision,
    world_size: int = 1,
    can_replay: bool = True,
) -> tuple[TrainSection, dict[str, Any], dict[str, str]]:
    """The section to run (``train.schedule`` resolved to its stages), its plan, and which schedule and why.

    ``auto`` takes every layer at once (the schedule that learned the most Korean at equal English) when each of its
    stages fits ``gpu_memory_gib`` at the batch layout it would run with and there is English to replay; otherwise the
    paper's split, whose odd and even stages each hold about half the layers' gradients and optimizer state (what fits
    SOLAR-10.7B on one 80 GB GPU). Given stages are planned as they are."""
    candidates = cfg.candidate_schedules()
    if not candidates:
        return cfg, plan_config(config, cfg, gpu_memory_gib, new_tokens, precision, world_size), {}
    why = ""
    for name in candidates:
        section = cfg.with_schedule(name)
        if name != candidates[-1] and cfg.schedule == "auto" and not can_replay and section.replays_english():
            share = max(stage.english_share for stage in section.stages)
            why = f"no English to replay ({name} replays {share:.0%} of its blocks)"
            continue
        result = plan_config(config, section, gpu_memory_gib, new_tokens, precision, world_size)
        stages = result["stages"][:-1]  # the last row: a full fine-tune, for comparison
        largest = max(stages, key=lambda row: row["total_gib"])
        if name != candidates[-1] and not all(row["fits"] for row in stages):
            why = (
                f"every layer at once does not fit: stage {largest['stage']!r} plans {largest['total_gib']:.1f} GiB "
                f"of the {gpu_memory_gib:.1f} GiB less {RESERVE:.0%} reserve"
            )
            continue
        if cfg.schedule != "auto":
            why = "train.schedule"
        elif name == "every_layer":
            why = f"every layer at once fits: {largest['total_gib']:.1f} GiB planned of {gpu_memory_gib:.1f} GiB"
        return section, result, {"schedule": name, "requested": cfg.schedule, "why": why}
    raise AssertionError("unreachable: the last candidate is always returned")


def plan(
    spec: str,
    cfg: TrainSection,
    gpu_memory_gib: float,
    new_tokens: int = 20000,
    on_gpu: bool = True,
    include_full: bool = True,
    model_dtype: str = "auto",
) -> dict[str, Any]:
    """Plan every stage of ``cfg`` (and a full fine-tune for comparison) for ``spec`` on one GPU (or on CPU)."""
    precision = plan_precision(cfg, model_dtype, on_gpu)
    # train.schedule resolved as a run on this memory would (English assumed given); given stages planned as given
    _, result, choice = choose_schedule(model_config(spec, new_tokens), cfg, gpu_memory_gib, new_tokens, precision)
    if not include_full:
        result["stages"] = result["stages"][:-1]
    return {"model": spec, **result, **({"schedule": choice} if choice else {})}


def batch_layout(cfg: TrainSection, max_micro_batch: int, world_size: int) -> tuple[int, int]:
    """(micro-batch, gradient accumulation) of a stage. A fixed ``micro_batch_size`` keeps ``grad_accum`` unless a
    ``global_batch_size`` is set; ``auto`` takes the largest micro-batch the plan fits that divides each device's
    share of the global batch (0 when not even one sequence fits)."""
    if cfg.global_batch_size is None:
        return int(cfg.micro_batch_size), cfg.grad_accum
    per_device, rest = divmod(cfg.global_batch_size, world_size)
    if rest:
        raise ConfigError(f"train.global_batch_size {cfg.global_batch_size} is not a multiple of {world_size} devices")
    if cfg.micro_batch_size == "auto":
        fits = [m for m in range(1, min(max_micro_batch, per_device) + 1) if per_device % m == 0]
        micro = max(fits) if fits else 0
    else:
        micro = cfg.micro_batch_size
        if per_device % micro:
            raise ConfigError(
                f"train.global_batch_size: {per_device} blocks per device is not a multiple of micro_batch_size {micro}"
            )
    return micro, per_device // micro if micro else 0


def plan_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Memory plan: {result['model']} (+{result['new_tokens']:,} tokens, {result['parameters'] / 1e9:.2f} B "
        f"parameters) on {result['gpu_memory_gib']:.1f} GiB",
        "",
        f"Sequence {result['sequence_length']}, {result['optimizer']}, {result['precision']}, gradient checkpointing "
        f"{'on' if result['gradient_checkpointing'] else 'off'}; {RESERVE:.0%} of the memory kept in reserve (allocator fragmentation, CUDA context).",
        "",
        "| stage | trainable | weights | grads | optimizer | activations | transients | total (GiB) | fits | "
        "headroom | micro-batch x accum | max micro-batch | host (GiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|",
    ]
    if choice := result.get("schedule"):
        lines[2:2] = [f"train.schedule {choice['requested']}: {choice['schedule']} ({choice['why']}).", ""]
    for s in result["stages"]:
        headroom = 1 - s["total_gib"] / result["gpu_memory_gib"]
        layout = f"{s['micro_batch_size']} x {s['grad_accum']}" if s["grad_accum"] else "-"
        lines.append(
            f"| {s['stage']} | {s['trainable_parameters'] / 1e6:,.1f} M | {s['weights_gib']:.1f} | "
            f"{s['gradients_gib']:.1f} | {s['optimizer_gib']:.1f} | {s['activations_gib']:.1f} | "
            f"{s['transients_gib']:.1f} | {s['total_gib']:.1f} | {'yes' if s['fits'] else 'no'} | {headroom:.0%} | "
            f"{layout} | {s['max_micro_batch']} | {s['host_gib']:.1f} |"
        )
    return "\n".join(lines) + "\n"
