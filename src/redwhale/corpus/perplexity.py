"""An optional perplexity filter: a reference model scores each document in bits per byte (its own module, because
it imports torch, which datatrove's workers should load only when the filter is used)."""

from __future__ import annotations

from datatrove.pipeline.filters.base_filter import BaseFilter

from redwhale.core.bpb import bits_per_byte
from redwhale.core.source import load_model, load_tokenizer


class PerplexityFilter(BaseFilter):
    """Drops documents the reference model finds too surprising (bits per byte above the threshold)."""

    name = "📉 perplexity"

    def __init__(self, spec: str, max_bpb: float, exclusion_writer=None):
        super().__init__(exclusion_writer, batch_size=16)
        self.spec, self.max_bpb = spec, max_bpb
        self._model = None

    def filter_batch(self, batch):
        if self._model is None:
            self._model = (load_model(self.spec, dtype="float32"), load_tokenizer(self.spec))
        model, tokenizer = self._model
        results = []
        for doc in batch:
            score = bits_per_byte(model, tokenizer, [doc.text], window=512, stride=256).bits_per_byte
            doc.metadata["reference_bpb"] = round(score, 3)
            results.append(True if score <= self.max_bpb else (False, "perplexity"))
        return results
