"""Language models: unlearn facts from a causal LM (TOFU-style data, OpenUnlearning's methods and
metrics) and delete fine-tuning data exactly through sharded adapters (SAFE).

Needs the ``llm`` extra (transformers, tokenizers, safetensors, peft, rouge-score; gguf and
accelerate to convert the SmolLM2 GGUF). ``import obliviate`` never imports this package.
Modules: ``data`` (fictitious QA, JSONL loader), ``models`` (load / build / trainable part /
frozen-prefix cache), ``train``, ``methods`` (registry), ``metrics``, ``sharded`` (SAFE),
``run`` (``LLMSpec`` + ``run``).
"""
