"""The prompt's two parts: a question's document part carries the answer instruction as its system
message where the template has one; a summary's does not; a template without a system role works."""

import pytest

from starcli.ingest.prompt import ANSWER_INSTRUCTION, build_prompt
from starcli.tools.random_model import byte_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


def test_a_question_gets_the_answer_instruction_before_the_document(tokenizer):
    parts = build_prompt(tokenizer, "THE DOCUMENT", "where?")
    text = tokenizer.decode(parts.document_ids)
    assert text.index(ANSWER_INSTRUCTION) < text.index("THE DOCUMENT")
    assert ANSWER_INSTRUCTION not in tokenizer.decode(parts.question_ids)  # the question part stays the question's


def test_a_summary_goes_without_it(tokenizer):
    text = tokenizer.decode(build_prompt(tokenizer, "THE DOCUMENT", "summarize", None).document_ids)
    assert ANSWER_INSTRUCTION not in text and "THE DOCUMENT" in text


def test_a_template_without_a_system_role_still_gives_a_prompt(tokenizer):
    strict = byte_tokenizer()
    strict.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
                            "{% endif %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    text = strict.decode(build_prompt(strict, "THE DOCUMENT", "where?").document_ids)
    assert text.startswith("<|im_start|>user\nTHE DOCUMENT") and ANSWER_INSTRUCTION not in text
