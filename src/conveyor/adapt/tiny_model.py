"""A tiny random Gemma 3 causal LM with a BPE tokenizer trained on given texts.

The same code paths as the real model (config, chat template, tokenizer files, generation),
built in seconds: for tests and benchmarks, never for answers worth reading.
"""

from __future__ import annotations

from pathlib import Path

from conveyor.adapt.models import GEMMA_CHAT_TEMPLATE

SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]


def build_tiny_model(folder: Path, texts: list[str]) -> Path:
    """Save into `folder` a Gemma 3 LM with hidden size 64 and 2 layers, and a byte-level BPE
    tokenizer (800 tokens) trained on `texts`, with the Gemma chat template; return `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=800, special_tokens=SPECIAL_TOKENS, show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>",
                                        eos_token="<eos>", bos_token="<bos>", unk_token="<unk>")
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
        sliding_window=128, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        initializer_range=0.2,  # with the default 0.02 the tied embeddings cap logits near zero
    )
    torch.manual_seed(0)
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
