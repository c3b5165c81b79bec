"""The domain-adaptation recipe: prepare a Q/A dataset, LoRA-tune a model, evaluate it."""
