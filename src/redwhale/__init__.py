"""redwhale: adapt an English-centric LLM to Korean (or any language) by efficient continual pretraining.

The method follows RedWhale (arXiv 2408.11294): corpus preprocessing, a Korean tokenizer merged losslessly into the
base tokenizer, decomposition initialisation of the new embeddings, and four training stages (embeddings + head, odd
layers, even layers, LoRA merged), with evaluation and a report.
"""

__version__ = "0.1.0"
