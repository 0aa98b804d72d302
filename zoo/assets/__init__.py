"""Data files shipped with zoo (the tiny tokenizer)."""
