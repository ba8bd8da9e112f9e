"""The training loop: one loop runs every stage of the schedule, on accelerate.

Read top to bottom: before any weight is loaded, the memory plan of every stage decides its micro-batch
(``micro_batch_size: auto``) and stops a stage that cannot fit; then for each stage: choose what trains
(:mod:`redwhale.train.select`; a LoRA stage wraps the model with peft first), cast the weights to the stage's dtypes
(:mod:`redwhale.train.precision`), build the optimizer (:mod:`redwhale.train.optim`), and step: forward, loss,
backward over the micro-batches, clip, optimizer step at the learning rate of a warmup + cosine schedule, log,
checkpoint; with ``train.seconds`` a stage also stops when its part of the seconds is spent, its schedule planned
over the steps that fit at the speed measured so far (:func:`planned_steps`). A LoRA stage ends by merging its
adapters, in float32. After the last stage ``merge_with_base`` can move the weights part of the way back to the start
(:mod:`redwhale.train.merge`; ``auto``: as far as English measured before and after needs); the model is then saved
as a plain Hugging Face folder in ``model.dtype``.

``accelerate launch`` runs the same loop on several processes (DDP; FSDP and DeepSpeed through accelerate
configs): each process reads its own share of every step's blocks. Peak memory per stage is measured as allocated
memory (:mod:`redwhale.core.memory`) and written beside the plan's figure.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from peft.tuners.lora import LoraLayer
from transformers import AutoConfig

from redwhale.config.schema import TrainSection
from redwhale.core.bpb import bits_per_byte_each, scores_with_own_head
from redwhale.core.environment import malloc_advice, malloc_loaded
from redwhale.core.errors import ConfigError, DataError, RedwhaleError
from redwhale.core.io import atomic_dir, atomic_write_json
from redwhale.core.memory import PeakMemory
from redwhale.core.progress import PROGRESS_FILE, Progress, format_seconds
from redwhale.core.source import load_model, load_tokenizer
from redwhale.train import checkpoint as ckpt
from redwhale.train.data import BlockStream, PackedBlocks, StreamState
from redwhale.train.loss import CausalLMLoss
from redwhale.train.merge import merge_with_start, merge_within_tolerance, safetensors_index
from redwhale.train.metrics import MetricsLogger, read_metrics
from redwhale.train.optim import OffloadedAdamW, make_optimizer
from redwhale.train.plan import GIB, batch_layout, choose_schedule, enable_checkpointing
from redwhale.train.precision import Precision, apply_dtypes, cpu_bfloat16, resolve_precision
from redwhale.train.select import NewRowsStep, Selection, apply_row_rules_to_grads, select, wrap_lora

log = logging.getLogger(__name__)
SCHEDULE_FILE = "schedule.json"  # train.schedule's choice, kept for a resumed run


def warmup_cosine(total_steps: int, warmup_fraction: float, min_ratio: float):
    """LR multiplier: linear warmup over ``round(warmup_fraction * total)`` steps, then cosine to ``min_ratio``."""
    warmup = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def planned_steps(total_steps: int, step: int, seconds: float, cap: float | None) -> int:
    """The steps a stage's learning-rate schedule is planned over: its tokens' ``total_steps``, or, under a wall-clock
    ``cap``, the steps that fit it at the mean speed of the ``step`` steps run in ``seconds`` (never fewer than the
    next step's), whichever is fewer. With constant steps the cosine then ends where the time does; before the first
    step the plan is the tokens'."""
    if cap is None or step == 0 or seconds <= 0:
        return total_steps
    return max(min(total_steps, math.ceil(step * cap / seconds)), step + 1)


def device_memory_gib(device: torch.device) -> float:
    """What one device offers the plan: the GPU's memory, or on CPU the memory available now."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / GIB
    return psutil.virtual_memory().available / GIB


def merge_lora(peft_model, dtype: torch.dtype):
    """Merge every LoRA adapter into its base weight in float32 (one layer at a time), then drop the adapters; the
    merged weights are stored in ``dtype``."""
    with torch.no_grad():
        for module in peft_model.modules():
            if isinstance(module, LoraLayer):
                weight = module.get_base_layer().weight
                weight.data = weight.data.float()
                module.merge()
                weight.data = weight.data.to(dtype)
    return peft_model.unload()


@dataclass
class StageRun:
    """What one stage runs with."""

    index: int
    model: Any  # the plain or peft model (never a DDP or loss wrapper)
    wrapped: Any  # what the forward calls: the loss wrapper, prepared by accelerate
    selection: Selection
    optimizer: Any
    schedule: Any
    total_steps: int
    seconds: float | None  # the stage's wall-clock cap (train.seconds), None without one
    per_step: int
    micro: int
    accum: int
    state: ckpt.TrainState


class Trainer:
    """Runs a schedule of stages on one extended model; see the module docstring."""

    def __init__(
        self,
        model_dir: Path,
        korean_data: Path,
        english_data: Path | None,
        cfg: TrainSection,
        work: Path,
        seed: int = 0,
        run_name: str = "redwhale",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        english_check: list[str] | None = None,
    ):
        self.cfg, self.work, self.seed = cfg, Path(work), seed
        self.english_check, self.trust_remote_code = english_check, trust_remote_code
        self.accelerator = Accelerator(mixed_precision="no", cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.precision: Precision = resolve_precision(dtype, cfg, self.device)
        if self.device.type == "cpu" and (advice := malloc_advice()):
            log.warning(advice)
        self.model_dir = Path(model_dir)
        self.base_rows = self._base_rows()
        if cfg.merge_with_base == "auto" and not english_check:
            raise ConfigError("train.merge_with_base auto: no English text to measure (give English, or a weight)")
        if cfg.merge_with_base != 0:
            safetensors_index(self.model_dir)  # no weights to merge toward fails here, before any training
        self.plans = self._plan(has_english=english_data is not None)  # resolves train.schedule into self.cfg
        cfg = self.cfg
        self.baseline_mib = PeakMemory(self.device).now_mib()  # what the process held before the model
        self.model = load_model(str(model_dir), dtype=self.precision.frozen, trust_remote_code=trust_remote_code)
        if self.device.type == "cpu":
            # transformers maps safetensors files into memory; own copies make the weights process memory, counted
            # by the allocator as they would be on a GPU (and as the plan counts them)
            with torch.no_grad():
                for param in self.model.parameters():
                    param.data = param.data.clone()
        self.model.config.use_cache = False
        if cfg.gradient_checkpointing:
            enable_checkpointing(self.model)
        self.model.to(self.device)
        self.plain_head = self._plain_head()
        self.korean = PackedBlocks(korean_data, cfg.sequence_length)
        self.english = PackedBlocks(english_data, cfg.sequence_length) if english_data else None
        if self.english is None and any(s.english_share > 0 for s in cfg.stages):
            raise ConfigError("a stage sets english_share but no English data was given")
        self.checkpoints = self.work / "checkpoints"
        self.metrics = MetricsLogger(
            self.work / "logs", self.accelerator.is_main_process, cfg.tensorboard, cfg.wandb_project, run_name
        )
        self.summaries: list[dict[str, Any]] = []

    def _base_rows(self) -> int:
        report = self.model_dir / "init_report.json"
        if report.is_file():
            return int(json.loads(report.read_text())["base_vocab"])
        needs = [s.name for s in self.cfg.stages if "new" in (s.trainable.embeddings, s.trainable.lm_head)]
        if needs:
            raise ConfigError(
                f"stages {needs} train new rows only, but {self.model_dir} has no init_report.json "
                "saying where the new rows start (extend the model with `redwhale model extend`)"
            )
        return AutoConfig.from_pretrained(str(self.model_dir)).vocab_size

    def _plan(self, has_english: bool) -> list[dict[str, Any]]:
        """Each stage's memory plan on this device and its batch layout; a stage that cannot fit stops the run here,
        before any weight is loaded. ``train.schedule`` is resolved here (the stages of ``self.cfg`` from then on) and
        the choice kept in ``schedule.json``: a resumed run keeps the schedule it began with, whatever the device."""
        config = AutoConfig.from_pretrained(str(self.model_dir))
        memory = device_memory_gib(self.device)
        world = self.accelerator.num_processes
        new_tokens = config.vocab_size - self.base_rows
        requested = self.cfg.schedule if self.cfg.candidate_schedules() else None
        chosen = self.work / SCHEDULE_FILE
        recorded = json.loads(chosen.read_text()) if requested and chosen.is_file() else None
        if recorded and recorded.get("requested") != requested:
            recorded = None  # the config asks for another schedule: choose again
        cfg = self.cfg.with_schedule(recorded["schedule"]) if recorded else self.cfg
        self.cfg, result, choice = choose_schedule(
            config, cfg, memory, new_tokens, self.precision, world, can_replay=has_english
        )
        self.schedule: dict[str, Any] = recorded or choice
        if choice and self.accelerator.is_main_process:
            self.work.mkdir(parents=True, exist_ok=True)
            atomic_write_json(chosen, choice)
        if self.schedule:
            log.info("train.schedule %s: %s (%s%s)", self.schedule["requested"], self.schedule["schedule"],
                     self.schedule["why"], "; as this run began" if recorded else "")  # fmt: skip
        stages, full = result["stages"][:-1], result["stages"][-1]
        for stage, plan in zip(self.cfg.stages, stages, strict=True):
            plan["full_finetune_gib"] = full["total_gib"]
            if plan["max_micro_batch"] == 0:
                where = "the GPU has" if self.device.type == "cuda" else "this machine has available"
                raise ConfigError(
                    f"stage {stage.name!r} does not fit: {plan['total_gib']:.2f} GiB planned at micro-batch 1, {where} "
                    f"{memory:.2f} GiB (try train.gradient_checkpointing, optimizer adamw8bit, trainable_dtype "
                    "bfloat16 or offload_optimizer)"
                )
            plan["layout"] = batch_layout(self.cfg, max(plan["max_micro_batch"], 1), world)
        return stages

    # ------------------------------------------------------------------------------------------------- schedule
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run (or continue) every stage; returns the summary. The final model goes to ``work/model``."""
        state, resume_from = ckpt.TrainState(), None
        if resume:
            resume_from = ckpt.latest(self.checkpoints)
        elif ckpt.latest(self.checkpoints) is not None:
            raise RedwhaleError(f"{self.checkpoints} already holds checkpoints: pass --resume to continue from them")
        # measured before a checkpoint's weights are loaded: the English auto holds training to
        self.english_reference = self._english_reference() if self._checks_english() else None
        if resume_from is not None:
            state = ckpt.TrainState.read(resume_from)
            log.info("resuming from %s (stage %s, step %d)", resume_from.name, state.stage_name, state.step)
            if state.stage_done:
                ckpt.load_weights(resume_from, self.model)
        self.summaries = self._read_summaries()
        stream = BlockStream(
            self.korean,
            self.english,
            self.seed,
            self.accelerator.process_index,
            self.accelerator.num_processes,
            StreamState.from_dict(state.data) if state.data else None,
        )
        first = state.stage_index + (1 if state.stage_done else 0) if resume_from else 0
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # stages seed (and restore) the generator; the caller's is kept
            for index in range(first, len(self.cfg.stages)):
                resumed = resume_from and not state.stage_done and index == state.stage_index
                state = self._run_stage(index, stream, state, resume_from if resumed else None)
        self.metrics.close()
        return self._finish()

    def _checks_english(self) -> bool:
        return self.cfg.merge_with_base == "auto" and self.accelerator.is_main_process

    @functools.cached_property
    def _check_tokenizer(self):
        return load_tokenizer(str(self.model_dir), trust_remote_code=self.trust_remote_code)

    def _english_bpb(self) -> float:
        return self._english_bpbs((None,))[0]

    def _english_bpbs(self, vocabs: tuple[int | None, ...]) -> list[float]:
        """Bits per byte of the model as it is now on ``english_check`` (``merge_with_base: auto``; the tokenizer is
        loaded once for the start's measurement and the search's), for each of ``vocabs`` from one forward pass
        (``None``: the whole head; ``self.base_rows``: the base rows only, the base model). Products in the precision
        training runs in (bf16 autocast where it trains so: 2.7x faster than float32 on SmolLM2 with 80k new tokens on
        2 AMX cores, 1.8 s against 4.9 s, the figure 0.03% apart), the same for every measurement auto compares."""
        window = min(1024, self.cfg.sequence_length)
        with self._autocast(self.model):
            results = bits_per_byte_each(
                self.model, self._check_tokenizer, self.english_check, window, window // 2, vocabs=vocabs
            )
        return [r.bits_per_byte for r in results]

    def _english_reference(self) -> dict[str, Any]:
        """The English bits per byte ``merge_with_base: auto`` keeps training within tolerance of: the base model's
        (the start with its new vocabulary rows left out of the softmax, exactly the base wherever the extension left
        the base rows alone, less any rows the base padded its vocabulary with, whose probability is then left out
        too), so that the English the new vocabulary costs counts too; the start's when the model was
        not extended, when it was trained since (a redwhale model folder with a training summary: its base rows are
        no longer the base's), or when the check text holds new tokens (English with Korean in it, say)."""
        started = time.perf_counter()
        base = None
        if (self.model_dir / "training_summary.json").is_file():
            log.info("merge_with_base auto: %s was trained since its extension; holding English to it", self.model_dir)
        elif self.base_rows < self.model.get_input_embeddings().weight.shape[0]:
            try:  # one pass for the start and the base: two took 7.8-8.9 s against 4.3-4.6 s (SmolLM2 at 80k, 2 cores)
                start, base = self._english_bpbs((None, self.base_rows))
            except DataError as error:
                log.warning("merge_with_base auto: %s; holding English to the start's instead of the base's", error)
        if base is None:
            start = self._english_bpb()
        reference = {"reference": "the start", "reference_english_bpb": start, "start_english_bpb": start}
        if base is not None:
            reference.update(reference="the base model", reference_english_bpb=base)
        reference["reference_seconds"] = time.perf_counter() - started
        return reference

    def _plain_head(self) -> bool:
        """Whether the model's logits are its LM head's output, checked on a few tokens while its weights are still
        of one dtype (a soft-cap or a logit scale the fused loss does not know of, in remote code say, makes the model
        compute its loss itself). Every process loads the whole model and checks it, so all agree."""
        if scores_with_own_head(self.model, range(1, 9)):  # the English checks reuse the answer
            return True
        log.warning(
            "the model's logits are not its LM head's output: training with its own loss, not the fused one (the "
            "memory plan assumed the fused loss: the model's own holds micro-batch x sequence x vocabulary logits)"
        )
        return False

    def _read_summaries(self) -> list[dict[str, Any]]:
        path = self.work / "stages.json"
        return json.loads(path.read_text()) if path.is_file() else []

    # ---------------------------------------------------------------------------------------------------- stage
    def _setup_stage(self, index: int, stream: BlockStream, previous: ckpt.TrainState, resume_from: Path | None):
        cfg, stage, acc = self.cfg, self.cfg.stages[index], self.accelerator
        model = wrap_lora(self.model, stage) if stage.lora is not None else self.model
        selection = select(model, stage, self.base_rows)
        apply_dtypes(model, self.precision)
        if resume_from is not None:
            ckpt.load_weights(resume_from, model)
        sharded = acc.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)
        if selection.row_rules and sharded:
            raise ConfigError(
                f"stage {stage.name!r}: training only new rows, or new rows at their own learning rate, "
                "needs whole embedding tensors; with FSDP or DeepSpeed train all rows at one rate"
            )
        embedding = model.get_input_embeddings()
        # A tied matrix gets a dense gradient from the LM head anyway: the lookup's gradient can then be sparse, which
        # spares a vocabulary-sized zero-fill and addition per step (an untied one must stay dense for AdamW, and DDP
        # expects a parameter's gradients to be all sparse or all dense).
        embedding.sparse = bool(
            embedding.weight.requires_grad
            and self._tied(model)
            and acc.num_processes == 1
            and not cfg.offload_optimizer
        )
        micro, accum = self.plans[index]["layout"]
        optimizer = make_optimizer(selection.groups, cfg, self.device, accum)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        per_step = micro * accum * cfg.sequence_length * acc.num_processes
        total_steps = math.ceil(cfg.stage_tokens()[index] / per_step)
        wrapped = acc.prepare(CausalLMLoss(model, plain_head=self.plain_head, lazy_from=selection.lazy_from))
        if cfg.compile:
            wrapped = torch.compile(wrapped)
        state = ckpt.TrainState(
            index, stage.name, 0, 0, False, stream.state.as_dict(), previous.total_tokens, micro, accum
        )
        if resume_from is not None:
            state = ckpt.TrainState.read(resume_from)
            ckpt.load_optimizer(resume_from, optimizer)
            stream.state = StreamState.from_dict(state.data)
            ckpt.restore_rng(resume_from)
        else:
            torch.manual_seed(self.seed * 1000 + index)
        schedule = functools.partial(warmup_cosine, warmup_fraction=stage.warmup_fraction, min_ratio=stage.min_lr_ratio)
        cap = cfg.stage_seconds()[index]
        return StageRun(
            index, model, wrapped, selection, optimizer, schedule, total_steps, cap, per_step, micro, accum, state
        )

    def _autocast(self, model):
        if self.precision.upcasts:
            return cpu_bfloat16(model.parameters())
        if self.precision.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.precision.autocast)

    def _step(self, run: StageRun, stream: BlockStream) -> tuple[float, float | None]:
        """One optimizer step of the stage: (rank-averaged loss, gradient norm before clipping)."""
        cfg, stage, acc = self.cfg, self.cfg.stages[run.index], self.accelerator
        state = run.state
        factor = run.schedule(planned_steps(run.total_steps, state.step, state.seconds, run.seconds))(state.step)
        for group in run.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        loss_sum = torch.zeros((), device=self.device)
        lazy_from, batches = run.selection.lazy_from, []
        for micro in range(run.accum):
            batch = stream.next_batch(run.micro, stage.english_share).to(self.device)
            if lazy_from is not None:
                batches.append(batch.flatten())
            sync = contextlib.nullcontext() if micro == run.accum - 1 else acc.no_sync(run.wrapped)
            with sync:
                with self._autocast(run.model):
                    loss = run.wrapped(batch)
                acc.backward(loss / run.accum)
            loss_sum += loss.detach()
        apply_row_rules_to_grads(run.selection)
        grad_norm = None
        if cfg.max_grad_norm and isinstance(run.optimizer, OffloadedAdamW):
            grad_norm = run.optimizer.clip(cfg.max_grad_norm)
        elif cfg.max_grad_norm:
            grad_norm = acc.clip_grad_norm_(run.selection.parameters, cfg.max_grad_norm)
        with NewRowsStep(run.selection, self._present(batches, lazy_from)):
            run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return acc.reduce(loss_sum / run.accum, reduction="mean").item(), grad_norm

    def _present(self, batches: list[torch.Tensor], lazy_from: int | None) -> torch.Tensor | None:
        """The new rows (from 0) of the tokens in the step's blocks on any process (lazy head rows), else None."""
        if lazy_from is None:
            return None
        ids = torch.cat(batches)
        ids = ids[ids >= lazy_from] - lazy_from
        if self.accelerator.num_processes > 1:  # every process steps the rows any process's blocks held
            size = self.model.get_input_embeddings().weight.shape[0] - lazy_from
            mask = torch.zeros(size, dtype=torch.int32, device=self.device)
            mask[ids] = 1
            ids = torch.nonzero(self.accelerator.reduce(mask, reduction="sum")).flatten()
        return torch.unique(ids)

    def _run_stage(
        self, index: int, stream: BlockStream, previous: ckpt.TrainState, resume_from: Path | None
    ) -> ckpt.TrainState:
        run = self._setup_stage(index, stream, previous, resume_from)
        stage, state = self.cfg.stages[index], run.state
        log.info(
            "stage %d/%d %s: %s trainable parameters, %d steps of %d tokens%s (micro-batch %d x %d), %s",
            index + 1, len(self.cfg.stages), stage.name, f"{run.selection.count():,}", run.total_steps,
            run.per_step, "" if run.seconds is None else f" or {run.seconds:.0f} s, whichever ends first", run.micro,
            run.accum, self.precision.describe(),
        )  # fmt: skip
        run.wrapped.train()
        started, losses, start_step = time.perf_counter(), [], state.step
        clock = started - state.seconds  # a resumed stage goes on counting from the seconds it had trained
        with PeakMemory(self.device) as peak, self._stage_progress(run) as bar:
            while state.step < run.total_steps and not self._out_of_time(run, time.perf_counter() - clock):
                tic = time.perf_counter()
                loss, grad_norm = self._step(run, stream)
                seconds = time.perf_counter() - tic
                state.step += 1
                state.tokens += run.per_step
                state.total_tokens += run.per_step
                state.data = stream.state.as_dict()
                state.seconds = time.perf_counter() - clock
                losses.append(loss)
                self._record(run, loss, grad_norm, seconds, peak, bar)
                if state.step % self.cfg.checkpoint_every == 0 and state.step < run.total_steps:
                    self._checkpoint(run.model, run.optimizer, state)
        return self._end_stage(run, time.perf_counter() - started, losses, start_step, peak)

    def _out_of_time(self, run: StageRun, elapsed: float) -> bool:
        """Whether the stage's wall-clock cap is spent: stop before a step that would end more than half a step past
        it (at the mean step so far), so that the stage ends as near its cap as whole steps allow. Every process
        decides on the slowest one's clock, so all stop at the same step."""
        if run.seconds is None or run.state.step == 0:
            return False
        if self.accelerator.num_processes > 1:
            elapsed = self.accelerator.reduce(torch.tensor(elapsed, device=self.device), reduction="max").item()
        return elapsed + 0.5 * elapsed / run.state.step > run.seconds

    def _stage_progress(self, run: StageRun):
        stage = self.cfg.stages[run.index]
        if not self.accelerator.is_main_process:
            return contextlib.nullcontext()
        return Progress(
            f"stage {run.index + 1}/{len(self.cfg.stages)} {stage.name}",
            total=run.total_steps * run.per_step,
            unit="tok",
            file=self.work / PROGRESS_FILE,
            log_every_s=float("inf"),
            initial=run.state.step * run.per_step,
        )

    def _record(self, run: StageRun, loss: float, grad_norm, seconds: float, peak: PeakMemory, bar) -> None:
        state, cfg = run.state, self.cfg
        lr = run.optimizer.param_groups[0]["lr"]
        memory = peak.now_mib()
        if state.step % cfg.log_every == 0 or state.step == run.total_steps:
            self.metrics.log(
                {
                    "stage": cfg.stages[run.index].name,
                    "stage_index": run.index,
                    "step": state.step,
                    "global_step": state.total_tokens,
                    "tokens": state.total_tokens,
                    "loss": loss,
                    "lr": lr,
                    "grad_norm": float(grad_norm) if grad_norm is not None else None,
                    "tokens_per_s": run.per_step / seconds,
                    "memory_mb": memory,
                    "seconds": seconds,
                    "time": time.time(),
                }
            )
        if bar is not None:
            smoothed = bar.figures.get("loss", loss) * 0.9 + loss * 0.1 if state.step - 1 else loss
            rate = run.per_step / seconds
            left = sum(self.cfg.stage_tokens()) - state.total_tokens
            if self.cfg.seconds is not None:  # a stage's cap may end it first
                left = min(left, (sum(self.cfg.stage_seconds()[run.index :]) - state.seconds) * rate)
            bar.update(
                run.per_step,
                log_now=state.step % cfg.log_every == 0,
                step=state.step,
                loss=round(smoothed, 4),
                lr=f"{lr:.2e}",
                **{"tok/s": round(rate), "mem GiB": round(memory / 1024, 2), "ETA all": format_seconds(left / rate)},
            )

    def _end_stage(self, run: StageRun, elapsed: float, losses: list[float], start_step: int, peak: PeakMemory):
        stage, state, acc = self.cfg.stages[run.index], run.state, self.accelerator
        model = run.model
        model.get_input_embeddings().sparse = False
        if stage.lora is not None:
            model = merge_lora(model, self.precision.frozen)
        self.model = model
        for param in self.model.parameters():
            param.requires_grad_(False)
        apply_dtypes(self.model, self.precision)
        state.stage_done = True
        stepped = state.step - start_step
        plan = self.plans[run.index]
        summary = {
            "stage": stage.name,
            "index": run.index,
            "steps": state.step,
            "tokens": state.tokens,
            "micro_batch_size": run.micro,
            "grad_accum": run.accum,
            "trainable_parameters": run.selection.count(),
            "seconds": round(elapsed, 2),
            "tokens_per_s": (stepped * run.per_step / elapsed) if stepped else None,
            "peak_memory_mb": peak.mib - self.baseline_mib if stepped else None,
            "memory_measure": peak.measure,
            "plan_gib": plan["total_gib"],
            "plan_full_gib": plan["full_finetune_gib"],
            "precision": self.precision.describe(),
            "final_loss": self._final_loss(run.index, losses),
            "resumed_at_step": start_step or None,
        }
        if run.seconds is not None:
            summary["seconds_cap"] = round(run.seconds, 2)
            summary["stopped_by"] = "tokens" if state.step >= run.total_steps else "seconds"
        self.summaries = [s for s in self.summaries if s["index"] != run.index] + [summary]
        if acc.is_main_process:
            atomic_write_json(self.work / "stages.json", self.summaries)
            if self.cfg.save_each_stage:
                self._save_model(self.work / "stages" / stage.name, {"stages": self.summaries, "after": stage.name})
        self._checkpoint(self.model, None, state)
        log.info("stage %s done: %d tokens in %.0f s%s", stage.name, state.tokens, elapsed,
                 f" (stopped by its {summary['stopped_by']})" if "stopped_by" in summary else "")  # fmt: skip
        return state

    def _final_loss(self, index: int, losses: list[float]) -> float | None:
        """Mean loss of the stage's last 10 steps, from the metrics file when there is one (a resumed stage has only
        the losses of the steps since the resume in memory)."""
        logged = [r["loss"] for r in read_metrics(self.work / "logs" / "metrics.jsonl") if r["stage_index"] == index]
        tail = (logged if len(logged) >= len(losses) else losses)[-10:]
        return sum(tail) / len(tail) if tail else None

    @staticmethod
    def _tied(model) -> bool:
        head = model.get_output_embeddings()
        return head is not None and head.weight is model.get_input_embeddings().weight

    def _checkpoint(self, model, optimizer, state: ckpt.TrainState) -> None:
        """Save ``model`` (the plain or peft model, never a DDP or loss wrapper) with the training state."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            ckpt.save(self.checkpoints, model, optimizer, state, self.cfg.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _save_model(self, out: Path, summary: dict[str, Any]) -> None:
        """Save the model in the saved dtype with the tokenizer files of the model it started from and ``summary``
        (``training_summary.json``, in the same atomic write: a folder with the init report but without it would read
        as an untrained extension to ``merge_with_base: auto``)."""
        with atomic_dir(out) as tmp:
            atomic_write_json(tmp / "training_summary.json", summary)
            saved = self.model.to(self.precision.saved) if self.model.dtype != self.precision.saved else self.model
            saved.save_pretrained(tmp)
            for path in self.model_dir.iterdir():
                if path.is_file() and (
                    path.name.startswith(("tokenizer", "special_tokens", "chat_template"))
                    or path.name in ("vocab.json", "merges.txt", "added_tokens.json", "init_report.json")
                ):
                    shutil.copy2(path, tmp / path.name)

    def _finish(self) -> dict[str, Any]:
        summary = {
            "stages": self.summaries,
            "tokens": sum(s["tokens"] for s in self.summaries),
            "seconds": sum(s["seconds"] for s in self.summaries),
            "precision": self.precision.describe(),
            "saved_dtype": str(self.precision.saved).removeprefix("torch."),
            "malloc": malloc_loaded(),
            "processes": self.accelerator.num_processes,
            "config": self.cfg.model_dump(mode="json"),
        }
        if self.schedule:
            summary["schedule"] = self.schedule
        if self.accelerator.is_main_process:  # the process that saves merges (the others' copies are not used)
            if self.cfg.merge_with_base == "auto":
                reference = self.english_reference
                search = merge_within_tolerance(self.model, self.model_dir, self.base_rows, self._english_bpb,
                                                reference["reference_english_bpb"], self.cfg.english_tolerance,
                                                reference=reference["reference"])  # fmt: skip
                summary["merge_search"] = {**reference, **search}
                if search["merged"] is not None:
                    summary["merge_with_base"], summary["merged"] = search["weight"], search["merged"]
            elif self.cfg.merge_with_base > 0:
                summary["merge_with_base"] = self.cfg.merge_with_base
                summary["merged"] = merge_with_start(
                    self.model, self.model_dir, self.cfg.merge_with_base, self.base_rows
                )
            self._save_model(self.work / "model", summary)
        self.accelerator.wait_for_everyone()
        return summary
