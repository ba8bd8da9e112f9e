"""The training loop: one loop runs every stage of the schedule, on accelerate.

Read top to bottom: for each stage, choose what trains (:mod:`redwhale.train.select`; a LoRA stage wraps the model
with peft first), build AdamW and a warmup + cosine schedule, then step: forward, loss, backward over the
micro-batches, clip, optimizer step, schedule step, log, checkpoint. A LoRA stage ends by merging its adapters into
the weights. The model after the last stage is saved as a plain Hugging Face folder.

bf16 autocast on a GPU that supports it (weights and optimizer state stay fp32), fp32 on CPU. ``accelerate launch``
runs the same loop on several processes (DDP; FSDP and DeepSpeed through accelerate configs): each process reads its
own share of every step's blocks.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from redwhale.config.schema import StageSection, TrainSection
from redwhale.errors import ConfigError, RedwhaleError, missing_extra
from redwhale.train import checkpoint as ckpt
from redwhale.train.data import BlockStream, PackedBlocks, StreamState
from redwhale.train.loss import CausalLMLoss
from redwhale.train.metrics import MetricsLogger, memory_mb, peak_memory_mb
from redwhale.train.select import NewRowsStep, apply_row_rules_to_grads, select

log = logging.getLogger(__name__)


def warmup_cosine(total_steps: int, warmup_fraction: float, min_ratio: float):
    """LR multiplier: linear warmup over ``round(warmup_fraction * total)`` steps, then cosine to ``min_ratio``."""
    warmup = round(warmup_fraction * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def stage_steps(stage: StageSection, cfg: TrainSection, world_size: int) -> tuple[int, int]:
    """(steps, tokens per step) of a stage: the budget rounded up to whole optimizer steps."""
    per_step = cfg.micro_batch_size * cfg.grad_accum * cfg.sequence_length * world_size
    return math.ceil(stage.tokens / per_step), per_step


def use_bf16(cfg: TrainSection) -> bool:
    if cfg.precision == "fp32":
        return False
    available = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if cfg.precision == "bf16" and not available:
        raise ConfigError("train.precision: bf16 needs a GPU that supports it; use auto or fp32")
    return available


def make_optimizer(groups: list[dict], cfg: TrainSection, device: torch.device):
    betas = tuple(cfg.betas)
    if cfg.optimizer == "adamw8bit":
        if device.type != "cuda":
            raise ConfigError("train.optimizer: adamw8bit needs CUDA (bitsandbytes); use adamw on CPU")
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise missing_extra("bitsandbytes", "cuda") from None
        return bnb.optim.AdamW8bit(groups, betas=betas)
    fused = device.type == "cuda"
    return torch.optim.AdamW(groups, betas=betas, fused=fused, foreach=None if fused else True)


def wrap_lora(model, stage: StageSection):
    from peft import LoraConfig, get_peft_model

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
    ):
        from accelerate import Accelerator
        from transformers import AutoModelForCausalLM

        self.cfg, self.work, self.seed = cfg, Path(work), seed
        self.bf16 = use_bf16(cfg)
        self.accelerator = Accelerator(mixed_precision="bf16" if self.bf16 else "no", cpu=not torch.cuda.is_available())
        self.device = self.accelerator.device
        self.model_dir = Path(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
        self.model.config.use_cache = False
        if cfg.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.model.to(self.device)
        self.base_rows = self._base_rows()
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
        return self.model.get_input_embeddings().weight.shape[0]

    # ------------------------------------------------------------------------------------------------- schedule
    def run(self, resume: bool = False) -> dict[str, Any]:
        """Run (or continue) every stage; returns the summary. The final model goes to ``work/model``."""
        state, resume_from = ckpt.TrainState(), None
        if resume:
            resume_from = ckpt.latest(self.checkpoints)
        elif ckpt.latest(self.checkpoints) is not None:
            raise RedwhaleError(f"{self.checkpoints} already holds checkpoints: pass --resume to continue from them")
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
        for index in range(first, len(self.cfg.stages)):
            mid_stage = resume_from if (resume_from and not state.stage_done and index == state.stage_index) else None
            state = self._run_stage(index, stream, state, mid_stage)
        self.metrics.close()
        return self._finish()

    def _read_summaries(self) -> list[dict[str, Any]]:
        path = self.work / "stages.json"
        return json.loads(path.read_text()) if path.is_file() else []

    # ---------------------------------------------------------------------------------------------------- stage
    def _run_stage(
        self, index: int, stream: BlockStream, previous: ckpt.TrainState, resume_from: Path | None
    ) -> ckpt.TrainState:
        cfg, stage, acc = self.cfg, self.cfg.stages[index], self.accelerator
        model = wrap_lora(self.model, stage) if stage.lora is not None else self.model
        if resume_from is not None:
            ckpt.load_weights(resume_from, model)
        selection = select(model, stage, self.base_rows)
        from accelerate.utils import DistributedType

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
        embedding.sparse = bool(embedding.weight.requires_grad and self._tied(model) and acc.num_processes == 1)
        optimizer = make_optimizer(selection.groups, cfg, self.device)
        total_steps, per_step = stage_steps(stage, cfg, acc.num_processes)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine(total_steps, stage.warmup_fraction, stage.min_lr_ratio)
        )
        wrapped, optimizer = acc.prepare(CausalLMLoss(model), optimizer)
        if cfg.compile:
            wrapped = torch.compile(wrapped)
        state = ckpt.TrainState(index, stage.name, 0, 0, False, stream.state.as_dict(), previous.total_tokens)
        if resume_from is not None:
            state = ckpt.TrainState.read(resume_from)
            ckpt.load_optimizer(resume_from, optimizer, scheduler)
            stream.state = StreamState.from_dict(state.data)
            ckpt.restore_rng(resume_from)
        else:
            torch.manual_seed(self.seed * 1000 + index)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        log.info(
            "stage %d/%d %s: %s trainable parameters, %d steps of %d tokens",
            index + 1,
            len(cfg.stages),
            stage.name,
            f"{selection.count():,}",
            total_steps,
            per_step,
        )
        wrapped.train()
        peak_rss, started, losses = 0.0, time.perf_counter(), []
        start_step = state.step
        progress = _progress(total_steps, start_step, stage.name, acc.is_main_process)
        while state.step < total_steps:
            tic = time.perf_counter()
            loss_sum = torch.zeros((), device=self.device)
            for micro in range(cfg.grad_accum):
                batch = stream.next_batch(cfg.micro_batch_size, stage.english_share).to(self.device)
                sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(wrapped)
                with sync:
                    with acc.autocast():
                        loss = wrapped(batch)
                    acc.backward(loss / cfg.grad_accum)
                loss_sum += loss.detach()
            apply_row_rules_to_grads(selection)
            grad_norm = acc.clip_grad_norm_(selection.parameters, cfg.max_grad_norm) if cfg.max_grad_norm else None
            with NewRowsStep(selection):
                optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            seconds = time.perf_counter() - tic
            mean_loss = acc.reduce(loss_sum / cfg.grad_accum, reduction="mean").item()
            state.step += 1
            state.tokens += per_step
            state.total_tokens += per_step
            state.data = stream.state.as_dict()
            rss = memory_mb(self.device)
            peak_rss = max(peak_rss, rss)
            losses.append(mean_loss)
            if state.step % cfg.log_every == 0 or state.step == total_steps:
                self.metrics.log(
                    {
                        "stage": stage.name,
                        "stage_index": index,
                        "step": state.step,
                        "global_step": state.total_tokens,
                        "tokens": state.total_tokens,
                        "loss": mean_loss,
                        "lr": scheduler.get_last_lr()[0],
                        "grad_norm": float(grad_norm) if grad_norm is not None else None,
                        "tokens_per_s": per_step / seconds,
                        "memory_mb": rss,
                        "seconds": seconds,
                        "time": time.time(),
                    }
                )
            progress.set_postfix(loss=f"{mean_loss:.3f}", tok_s=f"{per_step / seconds:,.0f}")
            progress.update()
            if state.step % cfg.checkpoint_every == 0 and state.step < total_steps:
                self._checkpoint(model, optimizer, scheduler, state)
        progress.close()
        elapsed = time.perf_counter() - started
        training_peak = peak_memory_mb(self.device) or peak_rss  # before merging adapters and saving
        embedding.sparse = False
        if stage.lora is not None:
            model = model.merge_and_unload()
        self.model = model
        for param in self.model.parameters():
            param.requires_grad_(False)
        state.stage_done = True
        stepped = state.step - start_step
        summary = {
            "stage": stage.name,
            "index": index,
            "steps": total_steps,
            "tokens": state.tokens,
            "trainable_parameters": selection.count(),
            "seconds": round(elapsed, 2),
            "tokens_per_s": (stepped * per_step / elapsed) if stepped else None,
            "peak_memory_mb": training_peak,
            "memory_measure": "cuda max_memory_allocated" if self.device.type == "cuda" else "process RSS",
            "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
            "resumed_at_step": start_step or None,
        }
        self.summaries = [s for s in self.summaries if s["index"] != index] + [summary]
        if acc.is_main_process:
            from redwhale.rundir import atomic_write_json

            atomic_write_json(self.work / "stages.json", self.summaries)
            if self.cfg.save_each_stage:
                self._save_model(self.work / "stages" / stage.name)
        self._checkpoint(self.model, None, None, state)
        log.info("stage %s done: %d tokens in %.0f s", stage.name, state.tokens, elapsed)
        return state

    @staticmethod
    def _tied(model) -> bool:
        head = model.get_output_embeddings()
        return head is not None and head.weight is model.get_input_embeddings().weight

    def _checkpoint(self, model, optimizer, scheduler, state: ckpt.TrainState) -> None:
        """Save ``model`` (the plain or peft model, never a DDP or loss wrapper) with the training state."""
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            ckpt.save(self.checkpoints, model, optimizer, scheduler, state, self.cfg.keep_checkpoints)
        self.accelerator.wait_for_everyone()

    def _save_model(self, out: Path) -> None:
        """Save the model with the tokenizer files of the model it started from."""
        import shutil

        from redwhale.rundir import atomic_dir

        with atomic_dir(out) as tmp:
            self.model.save_pretrained(tmp)
            for path in self.model_dir.iterdir():
                if path.is_file() and (
                    path.name.startswith(("tokenizer", "special_tokens", "chat_template"))
                    or path.name in ("vocab.json", "merges.txt", "added_tokens.json")
                ):
                    shutil.copy2(path, tmp / path.name)

    def _finish(self) -> dict[str, Any]:
        summary = {
            "stages": self.summaries,
            "tokens": sum(s["tokens"] for s in self.summaries),
            "seconds": sum(s["seconds"] for s in self.summaries),
            "precision": "bf16" if self.bf16 else "fp32",
            "processes": self.accelerator.num_processes,
            "config": self.cfg.model_dump(mode="json"),
        }
        if self.accelerator.is_main_process:
            from redwhale.rundir import atomic_write_json

            self._save_model(self.work / "model")
            atomic_write_json(self.work / "model" / "training_summary.json", summary)
        self.accelerator.wait_for_everyone()
        return summary


def _progress(total: int, initial: int, name: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=f"stage {name}", unit="step", disable=not enabled or None, dynamic_ncols=True
    )
