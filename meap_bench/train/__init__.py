"""The bundled MEAP trainer: masking collators, recipes, model and tokenizer building, the default-pair
corpus and a transformers `Trainer` entry point. Nothing here imports pydantic, so it runs on machines
that have only torch, transformers, accelerate and pyyaml."""
