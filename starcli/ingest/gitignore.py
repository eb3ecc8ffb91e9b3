"""A small matcher for ``.gitignore`` rules, for directories outside a git work tree.

Inside a work tree git itself answers what is ignored; this module covers plain
directories (an unpacked tarball, a copied project) that still carry
``.gitignore`` files, so that build output and dependencies stay out of the
document in both cases.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One compiled pattern line.

    ``base`` is the directory holding the ``.gitignore`` it came from, relative
    to the walk root with ``/`` separators (``""`` for the root); the pattern
    only ever applies below it.
    """

    base: str
    regex: re.Pattern[str]
    negated: bool
    dir_only: bool

    def matches(self, rel_path: str, is_dir: bool) -> bool:
        """Whether this rule's pattern matches ``rel_path`` (relative to the walk root)."""
        if self.dir_only and not is_dir:
            return False
        if self.base:
            prefix = self.base + "/"
            if not rel_path.startswith(prefix):
                return False
            rel_path = rel_path[len(prefix):]
        return self.regex.fullmatch(rel_path) is not None


def parse_gitignore(text: str, base: str) -> list[Rule]:
    """Compile the lines of a ``.gitignore`` found in directory ``base``."""
    rules = []
    for line in text.splitlines():
        rule = _parse_line(line, base)
        if rule is not None:
            rules.append(rule)
    return rules


def is_ignored(rules: list[Rule], rel_path: str, is_dir: bool) -> bool:
    """Apply ``rules`` in order; the last one that matches decides.

    Rules from shallower ``.gitignore`` files must come first so that deeper
    files override them, as in git. Exclusion of a parent directory is not
    checked here: the walker never descends into an ignored directory, which is
    also why git cannot re-include a file whose directory is ignored.
    """
    ignored = False
    for rule in rules:
        if rule.matches(rel_path, is_dir):
            ignored = not rule.negated
    return ignored


def _parse_line(line: str, base: str) -> Rule | None:
    line = _strip_trailing_spaces(line)
    if not line or line.startswith("#"):
        return None
    negated = line.startswith("!")
    if negated:
        line = line[1:]
    elif line.startswith("\\!") or line.startswith("\\#"):
        line = line[1:]
    dir_only = line.endswith("/")
    line = line.rstrip("/")
    if not line:
        return None
    # A slash anywhere but at the end ties the pattern to the .gitignore's
    # directory; without one it matches a name at any depth below it.
    anchored = "/" in line
    line = line.lstrip("/")
    if not line:
        return None
    body = _glob_to_regex(line)
    if not anchored:
        body = "(?:.*/)?" + body
    try:
        regex = re.compile(body, re.DOTALL)
    except re.error:
        # e.g. a reversed range "[z-a]"; git ignores such a line too.
        return None
    return Rule(base=base, regex=regex, negated=negated, dir_only=dir_only)


def _strip_trailing_spaces(line: str) -> str:
    """Drop trailing spaces unless escaped with a backslash, as git does."""
    end = len(line)
    while end > 0 and line[end - 1] == " ":
        if end >= 2 and line[end - 2] == "\\":
            break
        end -= 1
    return line[:end]


def _glob_to_regex(pattern: str) -> str:
    """Translate a gitignore glob (``*``, ``?``, ``[...]``, ``**``) to a regex body."""
    out = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "*":
            if pattern.startswith("**", i) and (i == 0 or pattern[i - 1] == "/"):
                after = i + 2
                if after == n:
                    # "dir/**" matches everything inside dir; a lone "**" everything.
                    out.append(".*")
                    i = after
                    continue
                if pattern[after] == "/":
                    # "**/" matches zero or more whole directories.
                    out.append("(?:.*/)?")
                    i = after + 1
                    continue
            # Any other run of asterisks acts as a single one.
            while i < n and pattern[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if ch == "?":
            out.append("[^/]")
        elif ch == "[":
            end, cls = _char_class(pattern, i)
            if cls is None:
                out.append(re.escape("["))
            else:
                out.append(cls)
                i = end
                continue
        elif ch == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def _char_class(pattern: str, start: int) -> tuple[int, str | None]:
    """Parse ``[...]`` at ``start``; return (index after it, regex) or (start, None) if unclosed."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] in "!^"
    if negate:
        i += 1
    items = []
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            body = "".join(items)
            # A class never matches the path separator, negated or not.
            return i + 1, f"[^/{body}]" if negate else f"(?!/)[{body}]"
        if ch == "\\" and i + 1 < len(pattern):
            i += 1
            ch = pattern[i]
        if ch == "-" and items and i + 1 < len(pattern) and pattern[i + 1] != "]":
            items.append("-")
        else:
            items.append(re.escape(ch) if ch != "-" else r"\-")
        first = False
        i += 1
    return start, None
