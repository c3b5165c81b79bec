"""How a question (and, for training, its answer) is shown to the model.

Training and evaluation both call these functions, so a tuned model is asked
exactly the way it was taught. With a tokenizer that has a chat template, the
question is the user turn and the answer the assistant turn; without one,
`plain_template` is used. The answer always ends with the end-of-turn marker
and the end-of-sequence token, so the model learns to stop.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

DEFAULT_INSTRUCTION = "다음 질문에 대답해주세요:"  # "Please answer the following question:"


class ChatFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instruction: str = DEFAULT_INSTRUCTION  # put before every question; "" for none
    plain_template: str = "{user}\n\n"  # for tokenizers without a chat template; {user} is the turn


def user_turn(question: str, fmt: ChatFormat) -> str:
    question = question.strip()
    return f"{fmt.instruction}\n{question}" if fmt.instruction else question


def render_prompt(tokenizer, question: str, fmt: ChatFormat = ChatFormat()) -> str:
    """The text a model continues to answer `question`."""
    user = user_turn(question, fmt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    return fmt.plain_template.format(user=user)


def render_example(tokenizer, question: str, answer: str,
                   fmt: ChatFormat = ChatFormat()) -> tuple[str, str]:
    """(prompt, completion) for training: the loss falls on the completion only."""
    prompt = render_prompt(tokenizer, question, fmt)
    answer = answer.strip()
    completion = answer
    if getattr(tokenizer, "chat_template", None):
        full = tokenizer.apply_chat_template(
            [{"role": "user", "content": user_turn(question, fmt)},
             {"role": "assistant", "content": answer}],
            tokenize=False,
        )
        if full.startswith(prompt):  # the template's own end-of-turn marker follows the answer
            completion = full[len(prompt):]
    eos = tokenizer.eos_token or ""
    if eos and not completion.rstrip().endswith(eos):
        completion += eos
    return prompt, completion
