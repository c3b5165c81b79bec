"""Chat formatting shared by training and evaluation, with a tokenizer built in the test."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from conveyor.adapt.formatting import (
    DEFAULT_INSTRUCTION,
    ChatFormat,
    render_example,
    render_prompt,
)

GEMMA_LIKE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def tiny_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    core = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1, "<bos>": 2}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>",
                                        bos_token="<bos>", unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    return tokenizer


def test_chat_template_prompt_and_example():
    tokenizer = tiny_tokenizer(GEMMA_LIKE)
    prompt = render_prompt(tokenizer, " FOB란? ")
    assert prompt == f"<bos><start_of_turn>user\n{DEFAULT_INSTRUCTION}\nFOB란?<end_of_turn>\n" \
                     "<start_of_turn>model\n"
    train_prompt, completion = render_example(tokenizer, "FOB란?", "본선인도조건입니다. ")
    assert train_prompt == prompt, "training and evaluation ask the same way"
    assert completion == "본선인도조건입니다.<end_of_turn>\n<eos>"


def test_without_a_chat_template_the_plain_template_is_used():
    tokenizer = tiny_tokenizer(None)
    fmt = ChatFormat(instruction="Answer:", plain_template="Q: {user}\nA: ")
    assert render_prompt(tokenizer, "What is CIF?", fmt) == "Q: Answer:\nWhat is CIF?\nA: "
    prompt, completion = render_example(tokenizer, "What is CIF?", "Cost, insurance, freight", fmt)
    assert prompt + completion == "Q: Answer:\nWhat is CIF?\nA: Cost, insurance, freight<eos>"


def test_no_instruction_and_no_double_eos():
    template_with_eos = GEMMA_LIKE.replace("<end_of_turn>\n{% endfor %}",
                                           "<end_of_turn>\n{% endfor %}"
                                           "{% if not add_generation_prompt %}<eos>{% endif %}")
    tokenizer = tiny_tokenizer(template_with_eos)
    prompt, completion = render_example(tokenizer, "Q", "A", ChatFormat(instruction=""))
    assert "user\nQ<end_of_turn>" in prompt
    assert completion.count("<eos>") == 1 and completion.endswith("<eos>")
