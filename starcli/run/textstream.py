"""Turn generated token ids into text deltas that are always whole UTF-8 characters, and apply
user stop strings."""

from __future__ import annotations


class TextStream:
    """Feed token ids one at a time; get back the new text to print (possibly empty).

    Byte-level tokenizers split characters across tokens; decoding the whole answer and holding
    back a trailing replacement character avoids printing half a character. Stop strings are held
    back while they might still be completing, and cut off (not printed) once complete.
    """

    def __init__(self, tokenizer, stop_strings: list[str] | None = None):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in (stop_strings or []) if s]
        self.ids: list[int] = []
        self.emitted = ""
        self.stopped = False

    def _decoded(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def _holdback(self, text: str) -> int:
        """How many trailing characters could be the start of a stop string."""
        longest = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    longest = max(longest, n)
                    break
        return longest

    def feed(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._decoded()
        if text.endswith("\ufffd"):
            return ""
        for stop in self.stop_strings:
            cut = text.find(stop, max(0, len(self.emitted) - len(stop)))
            if cut != -1:
                self.stopped = True
                final = text[:cut]
                delta = final[len(self.emitted):]
                self.emitted = final if len(final) > len(self.emitted) else self.emitted
                return delta
        visible = text[: len(text) - self._holdback(text)]
        delta = visible[len(self.emitted):] if visible.startswith(self.emitted) else ""
        if delta:
            self.emitted = visible
        return delta

    def flush(self) -> str:
        """Whatever was held back, once generation has ended without completing a stop string."""
        if self.stopped:
            return ""
        text = self._decoded().rstrip("\ufffd")
        delta = text[len(self.emitted):] if text.startswith(self.emitted) else ""
        self.emitted = text
        return delta
