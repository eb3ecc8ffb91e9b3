"""Where a document's text breaks naturally, in token positions: paragraph, line and sentence starts.

Star blocks cut at these positions (``partition.snap_cuts``) instead of at raw token counts, so a
block does not end in the middle of a line or sentence whose second half would then be encoded
without its first. Everything is read off the token ids with the tokenizer: no second pass over the
text and nothing that depends on the question.
"""

from __future__ import annotations

_SENTENCE_ENDS = (". ", "? ", "! ", ".\t")


def natural_boundaries(tokenizer, ids: list[int]) -> list[list[int]]:
    """``[paragraph starts, line starts, sentence starts]``: positions ``i`` such that the text of
    tokens ``< i`` ends a paragraph (blank line), a line, or a sentence."""
    texts = {}
    for token in set(ids):
        texts[token] = tokenizer.decode([token])
    paragraphs, lines, sentences = [], [], []
    previous = ""
    for i, token in enumerate(ids[:-1], start=1):
        text = texts[token]
        if "\n" in text:
            # "\n\n" inside one token, or a newline token right after a line that ended with one
            if "\n\n" in text or (previous.endswith("\n") and text.lstrip(" \t").startswith("\n")):
                paragraphs.append(i)
            lines.append(i)
        elif (previous + text).endswith(_SENTENCE_ENDS) or text.endswith((".", "?", "!")):
            sentences.append(i)
        previous = text
    return [paragraphs, lines, sentences]
