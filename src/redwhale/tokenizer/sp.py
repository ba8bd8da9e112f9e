"""Planning the pieces that append a new language to a SentencePiece BPE model (Llama-2, Mistral, SOLAR, Gemma).

SentencePiece's BPE encoder starts from characters and repeatedly joins the adjacent pair whose concatenation is a
piece with the highest score. New pieces get scores below every base piece, so base joins always happen first and
text that never contains a new piece's characters is untouched; each new piece must hold a character of the target
script. As for byte-level BPE (:mod:`redwhale.tokenizer.bpe`), the pieces are replayed in the new model's order against
the growing vocabulary, and a piece whose own text would not come out as itself gets the intermediate pieces it needs.

The fast twin (``tokenizer.json``) lists explicit merges; for each new piece, every split into two pieces of the
merged vocabulary becomes a merge ranked by the piece's score, which is how transformers converts SentencePiece BPE
models, so the slow and fast tokenizers agree.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from redwhale.core.scripts import Script

MAX_STEPS = 64


def sp_encode(chars: list[str], order: dict[str, float]) -> list[str]:
    """SentencePiece BPE on one word: join the adjacent pair whose concatenation has the highest score (leftmost on
    ties) until none is a piece. ``order`` maps piece -> score."""
    pieces = list(chars)
    while len(pieces) > 1:
        best = None
        best_at = -1
        for i in range(len(pieces) - 1):
            score = order.get(pieces[i] + pieces[i + 1])
            if score is not None and (best is None or score > best):
                best, best_at = score, i
        if best is None:
            break
        pieces[best_at : best_at + 2] = [pieces[best_at] + pieces[best_at + 1]]
    return pieces


@dataclass
class Outcomes:
    """What each candidate of a plan gave (``counts``, and in order, so that a prefix of the plan has its own)."""

    counts: Counter = field(default_factory=Counter)
    events: list[str] = field(default_factory=list)
    event_progress: list[int] = field(default_factory=lambda: [0])

    def note(self, outcome: str) -> None:
        self.counts[outcome] += 1
        self.events.append(outcome)

    def candidate_done(self) -> None:
        self.event_progress.append(len(self.events))

    def prefix_counts(self, candidates: int) -> Counter:
        """``counts`` of the first ``candidates`` candidates (what planning those alone would count)."""
        return Counter(self.events[: self.event_progress[candidates]])


@dataclass
class PiecePlan(Outcomes):
    """New pieces in order (their scores follow from the order); ``progress[i]`` as in :class:`MergePlan`."""

    pieces: list[str] = field(default_factory=list)
    progress: list[int] = field(default_factory=lambda: [0])

    def prefix(self, candidates: int) -> list[str]:
        return self.pieces[: self.progress[candidates]]


def new_scores(base_scores: dict[str, float], count: int) -> list[float]:
    """Scores for ``count`` appended pieces: below every base score, decreasing by one."""
    floor = min(base_scores.values(), default=0.0)
    return [floor - 1.0 - i for i in range(count)]


def plan_sentencepiece(base_scores: dict[str, float], candidates: list[str], script: Script) -> PiecePlan:
    """Plan the pieces that make each candidate (in the new model's order) come out of the merged model."""
    order = dict(base_scores)
    floor = min(base_scores.values(), default=0.0)
    plan = PiecePlan()

    def append(piece: str) -> None:
        order[piece] = floor - 1.0 - len(plan.pieces)
        plan.pieces.append(piece)

    for piece in candidates:
        if piece in order:
            plan.note("already in the vocabulary")
        elif not script.in_text(piece):
            plan.note("not of the target script")
        elif len(piece) == 1:
            append(piece)  # a single character is a symbol from the start: no join needed
            plan.note("added")
        else:
            steps = _steps_for(piece, order, script)
            if steps is None:
                plan.note("unreachable without a non-target intermediate")
            else:
                if len(steps) > 1:
                    plan.note("needed intermediate tokens")
                for step in steps:
                    append(step)
                plan.note("added")
        plan.progress.append(len(plan.pieces))
        plan.candidate_done()
    return plan


def _steps_for(piece: str, order: dict[str, float], script: Script) -> list[str] | None:
    """The pieces to append (intermediates first, ``piece`` last) so that ``piece`` encodes to itself."""
    trial = dict(order)
    floor = min(order.values(), default=0.0) - 1.0
    steps: list[str] = []
    for _ in range(MAX_STEPS):
        current = sp_encode(list(piece), trial)
        if current == [piece]:
            return steps
        if len(current) == 2:
            joined = piece
        else:
            joined = next(
                (
                    current[i] + current[i + 1]
                    for i in range(len(current) - 1)
                    if script.in_text(current[i] + current[i + 1])
                ),
                None,
            )
        if joined is None or joined in trial:
            return None
        trial[joined] = floor - len(steps)
        steps.append(joined)
    return None


def merges_for(pieces: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split of each new piece into two pieces of ``vocab`` (the fast tokenizer's merges), in piece order."""
    merges: list[tuple[str, str]] = []
    for piece in pieces:
        splits = [(piece[:i], piece[i:]) for i in range(1, len(piece)) if piece[:i] in vocab and piece[i:] in vocab]
        splits.sort(key=lambda pair: (vocab[pair[0]], vocab[pair[1]]))
        merges.extend(splits)
    return merges
