"""Which parameters a stage trains, and the optimizer groups they fall into.

A stage's ``trainable`` record (see :class:`~redwhale.config.schema.Trainable`) is resolved against the model here:
embedding and LM-head rows (all, or only the new tokens' rows), transformer layers by 0-based index, norms, and
regexes. Every trainable parameter lands in exactly one optimizer group (asserted): embeddings and head (no weight
decay, optionally a different learning rate for the new rows), layer matrices (weight decay), and vectors such as
norms and biases (no weight decay). Everything else gets ``requires_grad=False``, so autograd skips its gradients.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from redwhale.config.schema import StageSection
from redwhale.core.errors import ConfigError


@dataclass
class RowRule:
    """An embedding/head tensor whose rows train differently: base rows frozen (``freeze_base``), new rows at
    ``new_rows_scale`` times the group's learning rate, or new rows stepped only where their token occurs (``lazy``:
    the LM head's new rows, ``StageSection.lazy_head_rows``)."""

    param: nn.Parameter
    base_rows: int
    freeze_base: bool
    new_rows_scale: float = 1.0
    lazy: bool = False


@dataclass
class Selection:
    names: list[str] = field(default_factory=list)
    groups: list[dict] = field(default_factory=list)
    row_rules: list[RowRule] = field(default_factory=list)

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [p for g in self.groups for p in g["params"]]

    def count(self) -> int:
        return sum(p.numel() for p in self.parameters)

    @property
    def lazy_from(self) -> int | None:
        """The first new row when a tensor's new rows step lazily (the loss then computes the head's gradient for the
        new rows of the batch's tokens alone), else None."""
        return next((r.base_rows for r in self.row_rules if r.lazy), None)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's list of transformer blocks (the longest ``ModuleList`` of ``num_hidden_layers`` entries)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and (n is None or len(m) == n)]
    if not candidates:
        raise ConfigError("cannot find the transformer layers of this model")
    return max(candidates, key=len)


def layer_indices(spec, n_layers: int) -> list[int]:
    """0-based layer indices for ``none``, ``odd``, ``even``, ``all`` or an explicit list."""
    if spec == "none":
        return []
    if spec == "odd":
        return list(range(1, n_layers, 2))
    if spec == "even":
        return list(range(0, n_layers, 2))
    if spec == "all":
        return list(range(n_layers))
    bad = [i for i in spec if not 0 <= i < n_layers]
    if bad:
        raise ConfigError(f"layers {bad} do not exist: the model has layers 0..{n_layers - 1}")
    return sorted(set(spec))


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower()


def _row_choices(
    model: nn.Module, stage: StageSection, base_rows: int, chosen: dict[int, str], rates: dict[str, float]
) -> list[RowRule]:
    """Mark the embedding and head tensors the stage trains (``rates``: the learning rate of a group of their own);
    rules for tensors whose rows train differently."""
    spec = stage.trainable
    embed = model.get_input_embeddings().weight
    head_module = model.get_output_embeddings()
    head = head_module.weight if head_module is not None else None
    rules: list[RowRule] = []

    def rows(param: nn.Parameter, modes: list[str], head_rows: bool, rate: float | None) -> None:
        modes = [m for m in modes if m != "none"]
        if not modes:
            return
        freeze_base = "all" not in modes
        scale = (rate / stage.lr) if rate else 1.0
        lazy = stage.lazy_head_rows and head_rows and freeze_base
        chosen[id(param)] = "embeddings"
        if freeze_base and scale != 1.0:
            # the base rows do not move (zero gradients, zero moments, no weight decay: AdamW's update is exactly 0),
            # so the new rows' rate is the tensor's own group's: no copy of the rows and no rescaling around the step
            # (NewRowsStep's clone and lerp_ of the new rows: ~16 ms of a ~2.8 s CPU step on bench_cpt.py's 80k model)
            chosen[id(param)] = name = "new_head_rows" if head_rows and param is not embed else "new_rows"
            rates[name] = scale * stage.lr
            scale = 1.0
        if freeze_base or scale != 1.0:
            rules.append(RowRule(param, base_rows, freeze_base, scale, lazy))

    if head is not None and head is embed:
        rows(embed, [spec.embeddings, spec.lm_head], spec.lm_head == "new", stage.new_rows_lr)
    else:
        rows(embed, [spec.embeddings], False, stage.new_rows_lr)
        if head is not None:
            rows(head, [spec.lm_head], True, stage.head_rows_lr or stage.new_rows_lr)
    return rules


def _other_choices(model: nn.Module, stage: StageSection, chosen: dict[int, str]) -> None:
    """Mark the layers, norms and patterned parameters the stage trains, with their optimizer group."""
    spec = stage.trainable
    layers = decoder_layers(model)
    for index in layer_indices(spec.layers, len(layers)):
        for module in layers[index].modules():
            for param in module.parameters(recurse=False):
                chosen.setdefault(id(param), "no_decay" if _is_norm(module) or param.ndim < 2 else "decay")
    if spec.norms:
        for module in model.modules():
            if _is_norm(module):
                for param in module.parameters(recurse=False):
                    chosen.setdefault(id(param), "no_decay")
    for pattern in spec.patterns:
        regex = re.compile(pattern)
        matched = [p for n, p in model.named_parameters() if regex.search(n)]
        if not matched:
            raise ConfigError(f"stage {stage.name!r}: pattern {pattern!r} matches no parameter")
        for param in matched:
            chosen.setdefault(id(param), "no_decay" if param.ndim < 2 else "decay")


def select(model: nn.Module, stage: StageSection, base_rows: int) -> Selection:
    """Set ``requires_grad`` for the stage and build its optimizer groups (LoRA stages: the adapter weights)."""
    names = {id(p): n for n, p in model.named_parameters()}
    if stage.lora is not None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise ConfigError(f"stage {stage.name!r}: LoRA left no trainable parameter")
        groups = [{"name": "lora", "params": trainable, "lr": stage.lr, "weight_decay": stage.weight_decay}]
        return _checked(model, Selection([names[id(p)] for p in trainable], groups), stage)
    chosen: dict[int, str] = {}  # id(param) -> group name
    rates: dict[str, float] = {}  # group name -> its learning rate, where not the stage's
    row_rules = _row_choices(model, stage, base_rows, chosen, rates)
    _other_choices(model, stage, chosen)
    for param in model.parameters():
        param.requires_grad_(id(param) in chosen)
    by_group: dict[str, list[nn.Parameter]] = {"embeddings": [], "decay": [], "no_decay": []}
    seen: set[int] = set()
    for param in model.parameters():
        if id(param) in chosen and id(param) not in seen:
            seen.add(id(param))
            by_group.setdefault(chosen[id(param)], []).append(param)
    decay = {"decay": stage.weight_decay}  # none on embeddings, head rows, norms and vectors
    groups = [
        {"name": g, "params": ps, "lr": rates.get(g, stage.lr), "weight_decay": decay.get(g, 0.0)}
        for g, ps in by_group.items()
        if ps
    ]
    if not groups:
        raise ConfigError(f"stage {stage.name!r}: the selection matches no parameter of this model")
    selection = Selection([names[id(p)] for g in groups for p in g["params"]], groups, row_rules)
    return _checked(model, selection, stage)


def _checked(model: nn.Module, selection: Selection, stage: StageSection) -> Selection:
    """Every trainable parameter is in exactly one group, and nothing else trains."""
    in_groups = [id(p) for g in selection.groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups)), f"stage {stage.name}: a parameter is in two optimizer groups"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == set(in_groups), f"stage {stage.name}: trainable parameters and optimizer groups differ"
    return selection


def apply_row_rules_to_grads(selection: Selection) -> None:
    """Zero the gradient of frozen base rows (so AdamW, with no weight decay on these tensors, leaves them exact)."""
    for rule in selection.row_rules:
        if rule.freeze_base and rule.param.grad is not None:
            rule.param.grad[: rule.base_rows].zero_()


class NewRowsStep:
    """Around ``optimizer.step()``: scales the update of new rows by ``new_rows_lr / lr``, and puts back the lazy
    rules' new rows whose token is not in ``present`` (the new rows, from 0, of the tokens in the step's blocks).

    AdamW's update of a row is ``lr * (m / (sqrt(v) + eps))`` (no weight decay on embeddings) and its moments do
    not depend on the learning rate, so scaling a row's update is exactly a different learning rate for that row.
    Putting a row back makes it lazy (as TensorFlow's LazyAdam, for dense tensors): its moments still decay, but it
    moves only at steps that hold its token. Optimizers cannot give rows of one tensor different learning rates or
    step some rows only, hence this wrapper (written by hand)."""

    def __init__(self, selection: Selection, present: torch.Tensor | None = None):
        self.rules = [r for r in selection.row_rules if r.new_rows_scale != 1.0 or r.lazy]
        if any(r.lazy for r in self.rules) and present is None:
            raise ValueError("lazy new rows need the step's tokens (present)")
        self.present = present
        self.before: list[torch.Tensor] = []

    def __enter__(self) -> NewRowsStep:
        self.before = [r.param.detach()[r.base_rows :].clone() for r in self.rules]
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for rule, before in zip(self.rules, self.before, strict=True):
                new = rule.param[rule.base_rows :]
                if rule.lazy:  # the stepped rows kept, every row put back, the kept ones written (two plain copies)
                    present = self.present.to(new.device)
                    kept = new[present]
                    if rule.new_rows_scale != 1.0:
                        kept = before[present] + rule.new_rows_scale * (kept - before[present])
                    new.copy_(before)
                    new[present] = kept
                elif rule.new_rows_scale != 1.0:  # before + scale * (new - before) in one pass, in place: no three
                    # temporaries of the new rows' size (~2% of a CPU step on bench_cpt.py's 80k-row embedding)
                    new.lerp_(before, 1.0 - rule.new_rows_scale)
        self.before = []


def wrap_lora(model, stage: StageSection):
    """The model with peft LoRA adapters of the stage on its linear layers (the LM head excluded)."""
    lora = stage.lora
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        bias="none",
        target_modules=lora.targets,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
