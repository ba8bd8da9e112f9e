"""``redwhale tokenizer merge``: append a new language's tokens to a base tokenizer without changing any base id.

The output is a Hugging Face tokenizer folder (``AutoTokenizer.from_pretrained`` loads it) that keeps the base's
special tokens, chat template and post-processor; for a SentencePiece base it also holds the merged
``tokenizer.model``. The merge plan comes from :mod:`redwhale.tokenizer.bpe` or :mod:`redwhale.tokenizer.sp`; this
module turns a plan into files and checks the guarantees (:mod:`redwhale.tokenizer.audit`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sentencepiece import sentencepiece_model_pb2 as model_pb2
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from redwhale.core.errors import TokenizerError
from redwhale.core.io import atomic_dir, atomic_write_json
from redwhale.core.scripts import Script, get_script
from redwhale.core.source import LoadOptions
from redwhale.tokenizer.audit import audit
from redwhale.tokenizer.base import BaseTokenizer, detect_kind, load_base
from redwhale.tokenizer.bpe import MergePlan, plan_bytelevel
from redwhale.tokenizer.sp import PiecePlan, merges_for, new_scores, plan_sentencepiece

log = logging.getLogger(__name__)
PAD_TEMPLATE = "<|redwhale_reserved_{}|>"


@dataclass
class NewTokenizer:
    """A trained standalone tokenizer for the target language, as the merge reads it."""

    kind: str
    data: dict[str, Any]  # its tokenizer.json
    sp_model: Path | None = None

    @classmethod
    def load(cls, folder: str | Path) -> NewTokenizer:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError(f"{folder} has no tokenizer.json (train one with `redwhale tokenizer train`)")
        data = json.loads(path.read_text(encoding="utf-8"))
        sp_model = folder / "tokenizer.model"
        return cls(detect_kind(data), data, sp_model if sp_model.is_file() else None)

    @property
    def size(self) -> int:
        return len(self.data["model"]["vocab"])

    def candidates(self) -> list:
        """The new tokenizer's tokens in creation order: merge pairs (byte-level) or pieces (SentencePiece: single
        characters first, then longer pieces by descending score)."""
        if self.kind == "bytelevel":
            return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in self.data["model"]["merges"]]
        return sentencepiece_candidates(self.sp_model, self.data)

    def candidates_for_size(self, size: int) -> int:
        """How many candidates a tokenizer of ``size`` tokens holds (the alphabet, specials and bytes come first)."""
        total = len(self.candidates())
        return max(0, min(total, total - (self.size - size)))


def sentencepiece_candidates(sp_model: Path | None, data: dict[str, Any]) -> list[str]:
    """Normal pieces of a SentencePiece model: characters first, then multi-character pieces by score."""
    if sp_model is not None:
        proto = model_pb2.ModelProto()
        proto.ParseFromString(sp_model.read_bytes())
        normal = [(p.piece, p.score) for p in proto.pieces if p.type == 1]
    else:
        vocab = data["model"]["vocab"]
        normal = [(p, -float(i)) for p, i in sorted(vocab.items(), key=lambda kv: kv[1]) if not _is_byte(p)]
    chars = [p for p, _ in sorted(normal, key=lambda x: -x[1]) if len(p) == 1]
    longer = [p for p, _ in sorted(normal, key=lambda x: -x[1]) if len(p) > 1]
    return chars + longer


def _is_byte(piece: str) -> bool:
    return len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">")


@dataclass
class MergedTokenizer:
    """A merged tokenizer before it is written: its ``tokenizer.json`` data and, for SentencePiece, proto bytes."""

    data: dict[str, Any]
    added: list[str]
    padding: list[str]
    base_size: int
    sp_proto: bytes | None = None

    @property
    def size(self) -> int:
        return self.base_size + len(self.added) + len(self.padding)

    def backend(self):

        return Tokenizer.from_str(json.dumps(self.data, ensure_ascii=False))


def plan(base: BaseTokenizer, new: NewTokenizer, script: Script, limit: int | None = None) -> MergePlan | PiecePlan:
    """The merge plan for the first ``limit`` candidates of ``new`` (all when None); prefixes of a plan serve
    smaller sizes."""
    if new.kind != base.kind:
        raise TokenizerError(f"the new tokenizer is {new.kind} but the base is {base.kind}: train it for this base")
    candidates = new.candidates()[:limit]
    if base.kind == "bytelevel":
        return plan_bytelevel(base.vocab, base.merges, candidates, script)
    return plan_sentencepiece(_base_scores(base), candidates, script)


def _base_scores(base: BaseTokenizer) -> dict[str, float]:
    if base.sp_model is not None:
        proto = model_pb2.ModelProto()
        proto.ParseFromString(base.sp_model.read_bytes())
        return {p.piece: p.score for p in proto.pieces if p.type in (1, 4)}
    # no .model file: the fast tokenizer's vocabulary order is the score order (what the converter produced)
    return {p: -float(i) for p, i in base.vocab.items() if not _is_byte(p)}


def build(
    base: BaseTokenizer,
    merge_plan: MergePlan | PiecePlan,
    candidates: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> MergedTokenizer:
    """The merged tokenizer that the first ``candidates`` candidates of the plan give (all when None)."""
    count = len(merge_plan.progress) - 1 if candidates is None else candidates
    # copies of what changes (the vocabulary, the added tokens); the rest of the base's tokenizer.json is shared, not
    # copied: a deep copy of it was a fifth of each size's cost in the sweep
    data = {**base.data, "model": {**base.data["model"], "vocab": dict(base.data["model"]["vocab"])}}
    if "added_tokens" in data:
        data["added_tokens"] = [dict(t) for t in data["added_tokens"]]
    model = data["model"]
    start = base.size
    if isinstance(merge_plan, MergePlan):
        tokens, merges = merge_plan.prefix(count)
        for i, token in enumerate(tokens):
            model["vocab"][token] = start + i
        encoded = [f"{a} {b}" for a, b in merges] if base.merges_as_strings else [[a, b] for a, b in merges]
        model["merges"] = model["merges"] + encoded
        proto = None
    else:
        tokens = merge_plan.prefix(count)
        for i, token in enumerate(tokens):
            model["vocab"][token] = start + i
        pairs = merges_for(tokens, model["vocab"])
        encoded = [f"{a} {b}" for a, b in pairs] if base.merges_as_strings else [[a, b] for a, b in pairs]
        model["merges"] = model["merges"] + encoded
        proto = _merged_proto(base, tokens)
    padding = _padding(start + len(tokens), pad_to_multiple_of)
    for i, content in enumerate(padding):
        data.setdefault("added_tokens", []).append(
            {
                "id": start + len(tokens) + i,
                "content": content,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
        )
    if proto is not None and padding:
        proto = _merged_proto(base, tokens, padding)
    return MergedTokenizer(data=data, added=list(tokens), padding=padding, base_size=start, sp_proto=proto)


def _padding(size: int, multiple: int | None) -> list[str]:
    if not multiple or size % multiple == 0:
        return []
    return [PAD_TEMPLATE.format(i) for i in range(multiple - size % multiple)]


def _merged_proto(base: BaseTokenizer, pieces: list[str], padding: list[str] | None = None) -> bytes | None:
    if base.sp_model is None:
        return None

    proto = model_pb2.ModelProto()
    proto.ParseFromString(base.sp_model.read_bytes())
    if len(proto.pieces) != base.size:
        raise TokenizerError(
            f"the base's tokenizer.model has {len(proto.pieces)} pieces but its tokenizer.json uses {base.size} ids"
        )
    scores = new_scores({p.piece: p.score for p in proto.pieces if p.type in (1, 4)}, len(pieces))
    for piece, score in zip(pieces, scores, strict=True):
        proto.pieces.append(model_pb2.ModelProto.SentencePiece(piece=piece, score=score, type=1))
    for content in padding or []:
        proto.pieces.append(model_pb2.ModelProto.SentencePiece(piece=content, score=0.0, type=3))
    return proto.SerializeToString()


def write(merged: MergedTokenizer, base_hf, out: Path, report: dict[str, Any], trust_remote_code: bool = False) -> Path:
    """Write the merged tokenizer as a Hugging Face folder (atomically) beside its report (a base tokenizer with
    remote code keeps its ``auto_map``, so reading it back needs the same ``trust_remote_code``)."""

    with atomic_dir(out) as tmp:
        base_hf.save_pretrained(tmp)
        (tmp / "tokenizer.json").write_text(json.dumps(merged.data, ensure_ascii=False, indent=2), encoding="utf-8")
        if merged.sp_proto is not None:
            (tmp / "tokenizer.model").write_bytes(merged.sp_proto)
        atomic_write_json(tmp / "merge_report.json", report)
        loaded = AutoTokenizer.from_pretrained(str(tmp), trust_remote_code=trust_remote_code)
        if len(loaded) != merged.size:
            raise TokenizerError(f"the written tokenizer has {len(loaded)} tokens, expected {merged.size}")
    return out


def merge_tokenizers(
    base_spec: str,
    new_dir: str | Path,
    out: str | Path,
    script_name: str = "hangul",
    pad_to_multiple_of: int | None = None,
    size: int | None = None,
    load: LoadOptions | None = None,
    audit_texts: dict[str, list[str]] | None = None,
    full_plan: MergePlan | PiecePlan | None = None,
) -> dict[str, Any]:
    """Merge the tokenizer in ``new_dir`` (or its first ``size`` tokens) into the base; write and audit the result.
    ``full_plan``: the plan of every candidate of ``new_dir`` for this base and script (the sweep's), whose prefix
    serves ``size`` instead of planning again (the plan is a few seconds at 80,000 tokens)."""
    script = get_script(script_name)
    new = NewTokenizer.load(new_dir)  # before the base: a folder without a tokenizer fails at once
    base_hf, base = load_base(base_spec, load)
    total = len(new.candidates())
    candidates = new.candidates_for_size(size) if size else total
    if full_plan is None:
        merge_plan = plan(base, new, script, candidates)
        counts = merge_plan.counts
    else:
        if len(full_plan.progress) != total + 1:
            raise TokenizerError(f"the plan given covers {len(full_plan.progress) - 1} candidates, not {new_dir}'s")
        merge_plan, counts = full_plan, full_plan.prefix_counts(candidates)
    merged = build(base, merge_plan, candidates, pad_to_multiple_of)
    checks = audit(base_hf, merged, script, texts=audit_texts)
    report = {
        "base": base_spec,
        "kind": base.kind,
        "script": script.name,
        "new_tokenizer": str(new_dir),
        "new_tokenizer_size": size or new.size,
        "base_size": merged.base_size,
        "added_tokens": len(merged.added),
        "padding_tokens": len(merged.padding),
        "merged_size": merged.size,
        "rec": merged.size / merged.base_size,
        "candidates": dict(counts),
        "audit": checks,
    }
    write(merged, base_hf, Path(out), report, (load or LoadOptions()).trust_remote_code)
    if checks["dead_tokens"]:
        log.warning("%d added tokens can never be produced: %s", checks["dead_tokens"], checks["dead_examples"])
    return report
