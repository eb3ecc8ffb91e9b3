"""The code-question suite: it builds from the pinned package files, every answer can be found in
its document and is not given away by its question, documents stay within their size range, and a
file that is not the pinned one stops the suite with a one-line message."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from starcli.tools.evals import code_questions
from starcli.tools.evals.code_questions import DOCUMENT_TOKENS, code_suite, estimate_tokens
from starcli.tools.evals.tasks import TaskError


@pytest.fixture(scope="module")
def suite():
    return code_suite()


def _document(sample) -> str:
    return sample.id.split("/")[1]


def test_suite_has_enough_questions_on_every_document(suite):
    assert len(suite) >= 32
    per_document = collections.Counter(_document(s) for s in suite)
    assert 6 <= len(per_document) <= 8
    assert all(4 <= count <= 6 for count in per_document.values()), per_document
    assert {s.task for s in suite} == {"code-qa"}
    assert {s.max_new_tokens for s in suite} == {200}
    assert all(s.answers and all(a.strip() for a in s.answers) for s in suite)


def test_ids_are_unique(suite):
    counts = collections.Counter(s.id for s in suite)
    assert [i for i, n in counts.items() if n > 1] == []


def test_every_answer_is_in_its_document(suite):
    missing = [(s.id, a) for s in suite for a in s.answers if a.casefold() not in s.context.casefold()]
    assert missing == []


def test_no_answer_is_in_its_own_question(suite):
    given_away = [(s.id, a) for s in suite for a in s.answers if a.casefold() in s.question.casefold()]
    assert given_away == []


def test_documents_are_within_the_token_range(suite):
    low, high = DOCUMENT_TOKENS
    sizes = {_document(s): estimate_tokens(s.context) for s in suite}
    assert {name: n for name, n in sizes.items() if not low <= n <= high} == {}
    # the nominal length covers the document
    assert all(s.length % 1024 == 0 and s.length >= estimate_tokens(s.context) for s in suite)


def test_documents_render_each_file_under_a_header(suite):
    contexts = {_document(s): s.context for s in suite}
    for document in code_questions._DOCUMENTS:
        context = contexts[document.name]
        headers = [line[4:] for line in context.splitlines() if line.startswith("### ")]
        assert headers == list(document.files)
        assert context.startswith(f"### {document.files[0]}\n")
        for later in document.files[1:]:
            # one blank line between files
            assert f"\n\n### {later}\n" in context and f"\n\n\n### {later}\n" not in context


def test_a_changed_file_stops_the_suite_with_one_line(monkeypatch):
    monkeypatch.setitem(code_questions._SHA256, "rich/bar.py", "0" * 64)
    with pytest.raises(TaskError) as caught:
        code_suite()
    message = str(caught.value)
    assert message == "the code suite is pinned to rich 15.0.0 (rich/bar.py differs); install requirements.lock"


def test_a_missing_file_stops_the_suite_with_one_line(monkeypatch):
    first = code_questions._DOCUMENTS[0]
    gone = dataclasses.replace(first, files=("rich/no_such_file.py",))
    monkeypatch.setattr(code_questions, "_DOCUMENTS", (gone, *code_questions._DOCUMENTS[1:]))
    monkeypatch.setitem(code_questions._SHA256, "rich/no_such_file.py", "0" * 64)
    with pytest.raises(TaskError, match=r"^the code suite is pinned to rich 15\.0\.0 \(rich/no_such_file\.py is missing\)"):
        code_suite()
