"""New-language tokenizers: training, the vocabulary-size sweep, and the lossless merge into a base tokenizer."""
