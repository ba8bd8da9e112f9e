"""Planning the merges that append a new language's tokens to a byte-level BPE, losslessly.

Why a plan and not a plain append: a BPE encoder applies merges by rank, so appended merges only ever act on what the
base merges have left. Appending the Korean tokenizer's own merges ("naive append") fails in two ways: a base merge
that fires first (``Ġ`` + a lead byte, say) leaves the Korean merge that expected the bare byte unreachable, and
Korean merges over digits or ASCII change how English is tokenised.

The plan replays the new tokenizer's tokens in its own creation order against the merged tokenizer as it grows: for
each token it encodes the token's bytes with the current merges (a faithful simulation of the ``tokenizers`` BPE:
lowest rank first, leftmost on ties) and adds the merges that join the resulting pieces into the token, so the token
is produced on its own text by construction. Every new merge must *prove* the target script
(:meth:`Script.proven_by_bytes`), so text without that script never fires one. Because each token's plan depends only
on the tokens before it, the plans for every vocabulary size are prefixes of one plan (one pass serves a sweep). New
tokens start at a character boundary: a byte-level BPE also learns tokens that begin inside a character (the last
byte of one syllable joined to the next), which the merged tokenizer, building whole characters first, would never
emit.

This is written by hand because no library does it: ``tokenizers`` can train a BPE and ``add_tokens`` can add
unmerged tokens, but nothing extends a trained BPE's merges.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from redwhale.core.scripts import Script
from redwhale.tokenizer.base import token_bytes
from redwhale.tokenizer.sp import Outcomes

MAX_STEPS = 64


class MergeTable:
    """BPE merge ranks, and the encoder of one pre-tokenised word that ``tokenizers`` uses."""

    def __init__(self, merges: Iterable[tuple[str, str]]):
        self.rank: dict[tuple[str, str], int] = {}
        for pair in merges:
            self.rank.setdefault(pair, len(self.rank))

    def add(self, pair: tuple[str, str]) -> None:
        self.rank.setdefault(pair, len(self.rank))

    def encode(self, symbols: list[str], extra: dict[tuple[str, str], int] | None = None) -> list[str]:
        """Apply merges lowest rank first (leftmost on ties) until none applies; ``extra`` ranks act as appended."""
        pieces = list(symbols)
        rank = self.rank
        while len(pieces) > 1:
            best = None
            best_at = -1
            for i in range(len(pieces) - 1):
                pair = (pieces[i], pieces[i + 1])
                r = rank.get(pair)
                if r is None and extra:
                    r = extra.get(pair)
                if r is not None and (best is None or r < best):
                    best, best_at = r, i
            if best is None:
                break
            pieces[best_at : best_at + 2] = [pieces[best_at] + pieces[best_at + 1]]
        return pieces


@dataclass
class MergePlan(Outcomes):
    """New tokens and merges in order; ``progress[i]`` is how many new tokens the first ``i`` candidates gave."""

    tokens: list[str] = field(default_factory=list)
    merges: list[tuple[str, str]] = field(default_factory=list)
    merge_progress: list[int] = field(default_factory=lambda: [0])
    progress: list[int] = field(default_factory=lambda: [0])

    def prefix(self, candidates: int) -> tuple[list[str], list[tuple[str, str]]]:
        """The tokens and merges that the first ``candidates`` candidate tokens produce."""
        return self.tokens[: self.progress[candidates]], self.merges[: self.merge_progress[candidates]]


def plan_bytelevel(
    base_vocab: dict[str, int],
    base_merges: list[tuple[str, str]],
    candidates: list[tuple[str, str]],
    script: Script,
) -> MergePlan:
    """Plan the merges that make each candidate token ``a + b`` (given as the new tokenizer's merge pairs, in order)
    reachable in the base BPE, adding only merges whose result proves ``script``."""
    table = MergeTable(base_merges)
    vocab = set(base_vocab)
    plan = MergePlan()
    for left, right in candidates:
        token = left + right
        if token in vocab:
            plan.note("already in the vocabulary")
        elif not script.proven_by_bytes(token_bytes(token)):
            plan.note("not of the target script")
        elif _is_continuation(token_bytes(token)[0]):
            # a byte-level artifact that starts inside a character (the tail of one character + the next ones): the
            # merged tokenizer builds whole characters first, so such a token would almost never be produced
            plan.note("starts inside a character")
        else:
            steps = _steps_for(token, len(left), table, script)
            if steps is None:
                plan.note("unreachable without a non-target intermediate")
            else:
                if len(steps) > 1:
                    plan.note("needed intermediate tokens")
                for pair in steps:
                    table.add(pair)
                    plan.merges.append(pair)
                    joined = pair[0] + pair[1]
                    if joined not in vocab:
                        vocab.add(joined)
                        plan.tokens.append(joined)
                plan.note("added")
        plan.progress.append(len(plan.tokens))
        plan.merge_progress.append(len(plan.merges))
        plan.candidate_done()
    return plan


def _steps_for(token: str, boundary: int, table: MergeTable, script: Script) -> list[tuple[str, str]] | None:
    """The merges (in order) that turn the current encoding of ``token`` into ``token``, each proving the script, or
    None. ``boundary`` is where the new tokenizer split the token; joins that do not cross it go first."""
    symbols = list(token)
    extra: dict[tuple[str, str], int] = {}
    steps: list[tuple[str, str]] = []
    next_rank = len(table.rank) + 1_000_000_000
    for _ in range(MAX_STEPS):
        pieces = table.encode(symbols, extra)
        if len(pieces) == 1:
            return steps if pieces[0] == token else None
        pair = _next_join(pieces, boundary, script)
        if pair is None or pair in table.rank or pair in extra:
            return None
        extra[pair] = next_rank
        next_rank += 1
        steps.append(pair)
    return None


def _next_join(pieces: list[str], boundary: int, script: Script) -> tuple[str, str] | None:
    """Pick two adjacent pieces to join whose result proves the script, preferring joins within one side of the
    new tokenizer's own split, then joins that absorb the smallest neighbour."""
    options = []
    offset = 0
    for i in range(len(pieces) - 1):
        left, right = pieces[i], pieces[i + 1]
        joined_end = offset + len(left) + len(right)
        crosses = offset < boundary < joined_end
        if script.proven_by_bytes(token_bytes(left + right)) and not _is_continuation(token_bytes(left)[0]):
            options.append((crosses, len(left) + len(right), i))
        offset += len(left)
    if not options:
        return None
    _, _, i = min(options)
    return pieces[i], pieces[i + 1]


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte <= 0xBF
