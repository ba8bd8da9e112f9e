"""Text that is on every machine with no download: English from Python's own documentation, Korean from konlpy.

* English: ``pydoc_data.topics`` ships the Python language reference (about 0.7 MB of English prose, part of every
  CPython install). It is the default English text for measuring forgetting when a run names none.
* Korean: ``konlpy`` ships the Constitution of the Republic of Korea and ten National Assembly bills (about 140 KB).
  It is the demo's default corpus. konlpy is located without importing it (its import starts a JVM).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from pydoc_data.topics import topics

from redwhale.core.errors import DataError


def python_docs_english(min_chars: int = 200, unit: str = "topic") -> list[str]:
    """The English of the Python reference: one document per topic, or per paragraph (blank-line separated), keeping
    those of at least ``min_chars`` characters."""

    texts = [text.strip() for _, text in sorted(topics.items())]
    if unit == "paragraph":
        texts = [p.strip() for text in texts for p in text.split("\n\n")]
    return [text for text in texts if len(text) >= min_chars]


def konlpy_corpus_dir() -> Path:
    """The folder of Korean text files shipped by konlpy."""
    spec = importlib.util.find_spec("konlpy")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the bundled Korean corpus needs konlpy: pip install konlpy")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "corpus"
    if not folder.is_dir():
        raise DataError(f"konlpy is installed but has no corpus folder at {folder}")
    return folder


def konlpy_texts() -> list[str]:
    """Every Korean text file konlpy ships, one string each."""
    return [path.read_text(encoding="utf-8") for path in sorted(konlpy_corpus_dir().rglob("*.txt"))]
