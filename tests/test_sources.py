"""Tests for the ingestion package: files, directories, stdin and PDFs into a Document."""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter

from starcli.ingest.document import Document, Part, Skip
from starcli.ingest.errors import SourceError
from starcli.ingest.loader import load_sources
from starcli.ingest.options import IngestOptions
from starcli.ingest.decoding import NotText, decode, decode_text
from starcli.ingest.gitignore import is_ignored, parse_gitignore

HAVE_GIT = shutil.which("git") is not None
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- helpers -----------------------------------------------------------------


def make_pdf(pages: list[str | None]) -> bytes:
    """A minimal valid PDF, one page per entry; ``None`` makes a page with no text.

    Built by hand because the PDF library can write structure but not text.
    """
    objects: list[bytes] = []  # object i+1 is objects[i]
    page_ids = [4 + 2 * i for i in range(len(pages))]
    kids = " ".join(f"{pid} 0 R" for pid in page_ids)
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for pid, text in zip(page_ids, pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {pid + 1} 0 R >>".encode()
        )
        if text is None:
            stream = b""
        else:
            escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            stream = f"BT /F1 12 Tf 72 712 Td ({escaped}) Tj ET".encode("latin-1")
        objects.append(
            b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream"
        )
    return assemble_pdf(objects)


def assemble_pdf(objects: list[bytes]) -> bytes:
    """A PDF file from its object bodies (object i+1 is objects[i], object 1 the catalog)."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref_at = len(out)
    out += f"xref\n0 {len(objects) + 1}\n".encode()
    out += b"0000000000 65535 f \n"
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)


def encrypt_pdf(data: bytes, user_password: str, owner_password: str = "owner-secret") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    path.write_bytes(data)
    return path


def load(sources, stdin: bytes | None = None, **options) -> Document:
    skips: list[Skip] = []
    document = load_sources(
        [str(s) for s in sources],
        IngestOptions(**options),
        stdin=io.BytesIO(stdin) if stdin is not None else None,
        on_skip=skips.append,
    )
    assert skips == document.skipped  # every skip is both reported and recorded
    return document


def paths(document: Document) -> list[str]:
    return [part.path for part in document.parts]


def skip_reasons(document: Document) -> dict[str, str]:
    return {skip.path: skip.reason for skip in document.skipped}


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def snapshot(root: Path) -> dict[str, tuple[int, bytes | None]]:
    """Modification times and contents of everything under ``root``, without following links."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st_ = os.lstat(path)
            content = None
            if os.path.isfile(path) and not os.path.islink(path) and os.access(path, os.R_OK):
                with open(path, "rb") as handle:
                    content = handle.read()
            state[path] = (st_.st_mtime_ns, content)
    return state


@pytest.fixture(autouse=True)
def isolated_git(tmp_path, monkeypatch):
    """Keep git from finding repositories above the test directory or reading user config."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", os.devnull)
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)


# --- single files and stdin ----------------------------------------------------


def test_single_file_is_rendered_with_its_path(tmp_path):
    note = write(tmp_path / "notes.txt", "The planted fact is 42.\n")
    document = load([note])
    assert document.parts == [Part(str(note), "The planted fact is 42.\n", "file")]
    assert document.render() == f"=== {note} ===\nThe planted fact is 42.\n"
    assert document.total_chars == len("The planted fact is 42.\n")
    assert document.skipped == []


def test_several_sources_keep_their_order(tmp_path):
    b = write(tmp_path / "b.txt", "bee")
    a = write(tmp_path / "a.txt", "ay")
    document = load([b, a])
    assert paths(document) == [str(b), str(a)]
    assert document.render() == f"=== {b} ===\nbee\n\n=== {a} ===\nay\n"


def test_stdin_alone_renders_without_header():
    document = load(["-"], stdin=b"piped text\r\nsecond line")
    assert document.parts == [Part("<stdin>", "piped text\nsecond line", "stdin")]
    assert document.render() == "piped text\nsecond line\n"


def test_stdin_is_read_once_and_mixes_with_files(tmp_path):
    note = write(tmp_path / "n.txt", "file text")
    document = load(["-", note, "-"], stdin=b"stdin text")
    assert paths(document) == ["<stdin>", str(note)]
    assert document.render().startswith("=== <stdin> ===\nstdin text\n")


def test_empty_stdin_is_an_error():
    with pytest.raises(SourceError, match=r"^no text found in the input: standard input is empty$"):
        load(["-"], stdin=b"  \n\t ")


def test_binary_stdin_is_an_error():
    with pytest.raises(SourceError, match="standard input is binary"):
        load(["-"], stdin=b"\x00\x01\x02binary")


def test_pdf_on_stdin_is_extracted():
    document = load(["-"], stdin=make_pdf(["Hello planted fact"]))
    assert document.parts[0].kind == "pdf"
    assert "Hello planted fact" in document.parts[0].text


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(SourceError, match=r"^no such file or directory: .*nope\.txt$"):
        load([missing])


def test_empty_file_alone_is_an_error(tmp_path):
    empty = write(tmp_path / "empty.txt", "\n\n")
    with pytest.raises(SourceError, match=r"no text found in the input: .*empty\.txt is empty"):
        load([empty])


def test_no_sources_is_an_error():
    with pytest.raises(SourceError, match="no text found"):
        load([])


def test_explicit_binary_file_is_an_error(tmp_path):
    blob = write(tmp_path / "blob.bin", b"\x7fELF\x00\x00\x01\x02")
    with pytest.raises(SourceError, match=r"blob\.bin is binary \(NUL bytes\)"):
        load([blob])


def test_explicit_file_ignores_size_cap(tmp_path):
    big = write(tmp_path / "big.txt", "x" * 5000)
    assert load([big], max_file_bytes=100).total_chars == 5000


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_explicit_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    outcome: list[BaseException | Document] = []

    def run() -> None:
        try:
            outcome.append(load([fifo]))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            outcome.append(error)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        # Unblock the reader so the test process can exit, then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_sources blocked on a FIFO")
    assert isinstance(outcome[0], SourceError)
    assert "not a regular file (FIFO)" in str(outcome[0])


def test_explicit_device_is_refused():
    if not os.path.exists(os.devnull) or os.name != "posix":
        pytest.skip("needs a POSIX null device")
    with pytest.raises(SourceError, match=r"not a regular file \(character device\)"):
        load([os.devnull])


def test_explicit_unreadable_file(tmp_path):
    secret = write(tmp_path / "secret.txt", "hidden")
    secret.chmod(0)
    try:
        if IS_ROOT:
            # root reads anything; the file must then simply load.
            assert load([secret]).parts[0].text == "hidden"
        else:
            denied = r"^cannot read .*secret\.txt: permission denied$"
            with pytest.raises(SourceError, match=denied):
                load([secret])
    finally:
        secret.chmod(0o644)


# --- decoding ------------------------------------------------------------------


def test_utf8_bom_is_stripped():
    assert decode_text(b"\xef\xbb\xbfhello") == "hello"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom(codec):
    bom = {"utf-16": b"", "utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[codec]
    data = bom + "héllo wörld\n".encode(codec)
    assert decode_text(data) == "héllo wörld\n"


def test_utf16_file_in_directory(tmp_path):
    write(tmp_path / "d" / "wide.txt", "\ufeffwide text".encode("utf-16-le"))
    document = load([tmp_path / "d"])
    assert document.parts[0].text == "wide text"


def test_ascii_with_a_legacy_letter_is_read_in_the_legacy_encoding():
    data = ("plain ascii text " * 20).encode() + b"caf\xe9"
    decoded = decode(data)
    assert decoded.text.endswith("caf\u00e9") and "cp1252" in decoded.note


def test_utf8_with_a_few_bad_bytes_stays_utf8_with_replacements():
    decoded = decode("Grüße aus Köln\n".encode() * 3 + b"bad \xff\xfe\xe9\n")
    assert decoded.text.startswith("Grüße aus Köln\n") and decoded.text.count("\ufffd") == 3
    assert "3 undecodable" in decoded.note


def test_plain_utf8_needs_no_note():
    assert decode("Grüße".encode()).note is None


def test_undecodable_bytes_are_binary():
    with pytest.raises(NotText) as verdict:
        decode_text(bytes(range(0x80, 0x100)) * 4)
    assert verdict.value.reason == "binary (undecodable)"


def test_nul_bytes_are_binary():
    with pytest.raises(NotText) as verdict:
        decode_text(b"text\x00more text")
    assert verdict.value.reason == "binary (NUL bytes)"


# --- directories outside git -----------------------------------------------------


def test_directory_paths_are_cited_relative_to_the_current_directory_and_sorted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel in ["repo/z.txt", "repo/src/b.py", "repo/src/a.py", "repo/A.md"]:
        write(tmp_path / rel, f"content of {rel}")
    expected = ["repo/A.md", "repo/src/a.py", "repo/src/b.py", "repo/z.txt"]
    assert paths(load(["repo"])) == expected
    assert paths(load(["repo/"])) == expected
    # one citation however the directory is named, so the prompt (and its cache entry) is the same
    assert paths(load(["./repo"])) == expected
    assert paths(load([str(tmp_path / "repo")])) == expected
    monkeypatch.chdir(tmp_path / "repo")
    assert paths(load(["."])) == ["A.md", "src/a.py", "src/b.py", "z.txt"]


def test_order_does_not_depend_on_creation_order(tmp_path):
    names = ["m.txt", "b/x.txt", "a.txt", "b/a.txt", "c.txt"]
    write_order_1, write_order_2 = tmp_path / "one", tmp_path / "two"
    for name in names:
        write(write_order_1 / name, name)
    for name in reversed(names):
        write(write_order_2 / name, name)
    rel1 = [p[len(str(write_order_1)) + 1:] for p in paths(load([write_order_1]))]
    rel2 = [p[len(str(write_order_2)) + 1:] for p in paths(load([write_order_2]))]
    assert rel1 == rel2 == sorted(names)
    assert load([write_order_1]).render() == load([write_order_1]).render()


def test_nested_gitignore_with_negation(tmp_path):
    root = tmp_path / "plain"
    write(root / ".gitignore", "# comment\n\n*.log\n!keep.log\nbuild/\n/top-only.txt\n")
    write(root / "app.py", "print('hi')")
    write(root / "debug.log", "noise")
    write(root / "keep.log", "kept log")
    write(root / "build" / "out.txt", "built")
    write(root / "top-only.txt", "ignored at the top")
    write(root / "sub" / "top-only.txt", "kept below the top")
    write(root / "sub" / ".gitignore", "secret*\n!keep.log\nkeep.log\n")
    write(root / "sub" / "secret.txt", "ignored by the nested file")
    write(root / "sub" / "keep.log", "later rule wins: ignored")
    write(root / "sub" / "deep" / "other.log", "ignored by the parent rule")
    write(root / "sub" / "deep" / "ok.txt", "kept")
    write(root / ".git" / "config", "never read")
    document = load([root])
    rel = [p[len(str(root)) + 1:] for p in paths(document)]
    assert rel == [
        ".gitignore",
        "app.py",
        "keep.log",
        "sub/.gitignore",
        "sub/deep/ok.txt",
        "sub/top-only.txt",
    ]
    assert document.skipped == []  # ignored files are not reported


def test_dependency_and_tool_folders_outside_git_are_skipped_and_said(tmp_path):
    root = tmp_path / "plain"
    write(root / "app.py", "print('hi')")
    write(root / "node_modules" / "left-pad" / "index.js", "module.exports = 1")
    write(root / ".venv" / "lib" / "site.py", "import os")
    write(root / "pkg" / "__pycache__" / "app.cpython-311.pyc", "cached")
    document = load([root])
    assert [p[len(str(root)) + 1:] for p in paths(document)] == ["app.py"]
    assert sorted(s.path[len(str(root)) + 1:] for s in document.skipped) == [".venv/", "node_modules/", "pkg/__pycache__/"]
    assert all("dependency or tool folder" in reason for reason in skip_reasons(document).values())
    included = load([root], include=["node_modules/**"])
    assert [p[len(str(root)) + 1:] for p in paths(included)] == ["node_modules/left-pad/index.js"]
    named = load([root / "node_modules"])  # a folder given itself is read
    assert len(paths(named)) == 1


def test_walk_without_git_installed(tmp_path, monkeypatch):
    root = tmp_path / "plain"
    write(root / ".gitignore", "*.tmp\n")
    write(root / "a.txt", "a")
    write(root / "b.tmp", "b")
    empty_bin = tmp_path / "empty-bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert [Path(p).name for p in paths(load([root]))] == [".gitignore", "a.txt"]


def test_skips_are_reported_with_reasons(tmp_path):
    root = tmp_path / "mixed"
    write(root / "good.txt", "good")
    write(root / "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(root / "big.txt", "y" * 2100)
    write(root / "latin.txt", bytes(range(0x80, 0x100)))
    document = load([root], max_file_bytes=1000)
    assert [Path(p).name for p in paths(document)] == ["good.txt"]
    assert skip_reasons(document) == {
        f"{root}/big.txt": "over size cap (2.1 kB > 1.0 kB)",
        f"{root}/image.png": "binary (NUL bytes)",
        f"{root}/latin.txt": "binary (undecodable)",
    }


def test_all_files_skipped_explains_why(tmp_path):
    root = tmp_path / "junk"
    write(root / "a.bin", b"\x00\x01")
    write(root / "b.bin", b"\x00\x02")
    write(root / "c.txt", "z" * 3000)
    with pytest.raises(SourceError) as error:
        load([root], max_file_bytes=1000)
    assert str(error.value) == (
        "no text found in the input: 3 files skipped (2 binary, 1 over size cap)"
    )


def test_empty_directory_explains_why(tmp_path):
    (tmp_path / "void").mkdir()
    with pytest.raises(SourceError, match="void holds no files to read"):
        load([tmp_path / "void"])


def test_symlink_loop_and_escape_are_skipped(tmp_path):
    root = tmp_path / "links"
    outside = write(tmp_path / "outside.txt", "outside secret")
    write(root / "real.txt", "real")
    (tmp_path / "outside-dir").mkdir()
    os.symlink(outside, root / "escape.txt")
    os.symlink(tmp_path / "outside-dir", root / "escape-dir")
    os.symlink(root / "loop-b", root / "loop-a")
    os.symlink(root / "loop-a", root / "loop-b")
    os.symlink("real.txt", root / "alias.txt")  # inside: its content is read once, as real.txt
    os.symlink(".", root / "self")  # a directory link inside: not followed, not reported
    os.symlink("missing.txt", root / "dangling.txt")
    document = load([root])
    assert paths(document) == [f"{root}/real.txt"]
    assert "outside secret" not in document.render()
    assert skip_reasons(document) == {
        f"{root}/dangling.txt": "broken symlink",
        f"{root}/escape-dir": "symlink leaves the directory",
        f"{root}/escape.txt": "symlink leaves the directory",
        f"{root}/loop-a": "symlink loop",
        f"{root}/loop-b": "symlink loop",
    }


def test_symlink_to_file_outside_the_listing_is_read(tmp_path):
    root = tmp_path / "links"
    write(root / "data" / "real.txt", "real")
    os.symlink("data/real.txt", root / "alias.txt")
    document = load([root], exclude=["data"])
    assert paths(document) == [f"{root}/alias.txt"]


def test_explicit_symlink_loop_is_an_error(tmp_path):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    with pytest.raises(SourceError, match="symlink loop"):
        load([tmp_path / "a"])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_in_directory_is_skipped_without_blocking(tmp_path):
    root = tmp_path / "withfifo"
    write(root / "a.txt", "a")
    os.mkfifo(root / "pipe")
    outcome: list = []
    worker = threading.Thread(target=lambda: outcome.append(load([root])), daemon=True)
    worker.start()
    worker.join(timeout=10)
    if worker.is_alive():
        os.close(os.open(root / "pipe", os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load_sources blocked on a FIFO")
    assert skip_reasons(outcome[0]) == {f"{root}/pipe": "not a regular file (FIFO)"}


def test_unreadable_file_in_directory(tmp_path):
    root = tmp_path / "perm"
    write(root / "ok.txt", "ok")
    locked = write(root / "locked.txt", "locked")
    locked.chmod(0)
    try:
        document = load([root])
    finally:
        locked.chmod(0o644)
    if IS_ROOT:
        assert len(document.parts) == 2  # root reads anything
    else:
        assert skip_reasons(document) == {f"{root}/locked.txt": "unreadable (permission denied)"}


def test_include_and_exclude(tmp_path):
    root = tmp_path / "proj"
    for rel in ["src/a.py", "src/b.txt", "tests/test_a.py", "vendor/x/y.py", "README.md"]:
        write(root / rel, rel)

    def rel_paths(**options) -> list[str]:
        return [p[len(str(root)) + 1:] for p in paths(load([root], **options))]

    assert rel_paths(include=["*.py"]) == ["src/a.py", "tests/test_a.py", "vendor/x/y.py"]
    assert rel_paths(include=["src/*"]) == ["src/a.py", "src/b.txt"]
    assert rel_paths(exclude=["vendor", "tests/*"]) == ["README.md", "src/a.py", "src/b.txt"]
    assert rel_paths(include=["*.py"], exclude=["test_*.py", "vendor"]) == ["src/a.py"]


def test_nothing_given_is_modified(tmp_path):
    root = tmp_path / "tree"
    write(root / ".gitignore", "*.log\n")
    write(root / "a.txt", "a")
    write(root / "b.log", "b")
    write(root / "doc.pdf", make_pdf(["Hello planted fact"]))
    before = snapshot(tmp_path)
    load([root, root / "a.txt"])
    assert snapshot(tmp_path) == before


# --- git work trees --------------------------------------------------------------


@pytest.mark.skipif(not HAVE_GIT, reason="git is not installed")
def test_git_repository_lists_tracked_and_untracked_but_not_ignored(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.name", "Test User")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "commit.gpgsign", "false")
    write(repo / ".gitignore", "*.log\nbuild/\n")
    write(repo / "tracked.py", "tracked")
    write(repo / "sub" / "deep.py", "deep tracked")
    write(repo / "forced.log", "tracked despite the ignore rule")
    write(repo / "gone.txt", "deleted after commit")
    git(repo, "add", ".gitignore", "tracked.py", "sub/deep.py", "gone.txt")
    git(repo, "add", "-f", "forced.log")
    git(repo, "commit", "-q", "-m", "initial")
    (repo / "gone.txt").unlink()
    write(repo / "untracked.md", "untracked but not ignored")
    write(repo / "debug.log", "ignored")
    write(repo / "build" / "artifact.txt", "ignored directory")
    write(repo / "sub" / "blob.bin", b"\x00\x01\x02")
    index_before = (repo / ".git" / "index").read_bytes()
    before = snapshot(repo)

    monkeypatch.chdir(tmp_path)
    document = load(["repo"])
    assert paths(document) == [
        "repo/.gitignore",
        "repo/forced.log",
        "repo/sub/deep.py",
        "repo/tracked.py",
        "repo/untracked.md",
    ]
    assert skip_reasons(document) == {"repo/sub/blob.bin": "binary (NUL bytes)"}
    assert (repo / ".git" / "index").read_bytes() == index_before
    assert snapshot(repo) == before

    # A subdirectory of the work tree lists only its own files.
    assert paths(load(["repo/sub"])) == ["repo/sub/deep.py"]


@pytest.mark.skipif(not HAVE_GIT, reason="git is not installed")
def test_ignored_directory_named_explicitly_is_read(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo / ".gitignore", "build/\n")
    write(repo / "build" / "out.txt", "generated")
    write(repo / "build" / ".gitignore", "*.o\n")
    write(repo / "build" / "obj.o", "object")
    document = load([repo / "build"])
    assert paths(document) == [f"{repo}/build/.gitignore", f"{repo}/build/out.txt"]


@pytest.mark.skipif(not HAVE_GIT, reason="git is not installed")
def test_git_repository_with_include_exclude(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    write(repo / "a.py", "a")
    write(repo / "docs" / "b.md", "b")
    document = load([repo], exclude=["docs"])
    assert paths(document) == [f"{repo}/a.py"]


# --- gitignore matcher -----------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "path", "is_dir", "ignored"),
    [
        ("*.log", "a.log", False, True),
        ("*.log", "deep/dir/a.log", False, True),
        ("*.log\n!keep.log", "x/keep.log", False, False),
        ("!keep.log\n*.log", "keep.log", False, True),  # later rules win
        ("build/", "build", True, True),
        ("build/", "build", False, False),  # dir-only rule, file of that name
        ("/top.txt", "top.txt", False, True),
        ("/top.txt", "sub/top.txt", False, False),
        ("doc/*.txt", "doc/a.txt", False, True),
        ("doc/*.txt", "x/doc/a.txt", False, False),  # a middle slash anchors
        ("doc/*.txt", "doc/sub/a.txt", False, False),  # * stops at /
        ("**/cache", "a/b/cache", True, True),
        ("**/cache", "cache", True, True),
        ("a/**/z", "a/z", False, True),
        ("a/**/z", "a/b/c/z", False, True),
        ("a/**", "a/b/c", False, True),
        ("file?.txt", "file1.txt", False, True),
        ("file?.txt", "file10.txt", False, False),
        ("[abc].md", "b.md", False, True),
        ("[!abc].md", "b.md", False, False),
        ("[!abc].md", "d.md", False, True),
        ("[a-c]x", "bx", False, True),
        ("\\#notes", "#notes", False, True),
        ("\\!bang", "!bang", False, True),
        ("trailing\\ ", "trailing ", False, True),
        ("trailing   ", "trailing", False, True),
        ("# comment\n\n   ", "comment", False, False),
        ("[z-a]", "z", False, False),  # a broken range is dropped, not fatal
    ],
)
def test_gitignore_patterns(patterns, path, is_dir, ignored):
    rules = parse_gitignore(patterns, "")
    assert is_ignored(rules, path, is_dir) is ignored


def test_gitignore_rules_apply_below_their_directory_only():
    rules = parse_gitignore("/x.txt\n*.tmp\n", "sub")
    assert is_ignored(rules, "sub/x.txt", False)
    assert not is_ignored(rules, "sub/deeper/x.txt", False)
    assert is_ignored(rules, "sub/deeper/y.tmp", False)
    assert not is_ignored(rules, "other/y.tmp", False)
    assert not is_ignored(rules, "x.txt", False)


# --- PDFs ------------------------------------------------------------------------


def test_pdf_pages_get_markers(tmp_path):
    pages = ["Hello planted fact", None, "Third page (with parens)"]
    pdf = write(tmp_path / "book.pdf", make_pdf(pages))
    document = load([pdf])
    (part,) = document.parts
    assert part.kind == "pdf"
    assert part.text == (
        "--- page 1 ---\nHello planted fact\n--- page 3 ---\nThird page (with parens)\n"
    )
    assert document.render().startswith(f"=== {pdf} ===\n--- page 1 ---\n")


def test_pdf_detected_by_magic_without_suffix(tmp_path):
    pdf = write(tmp_path / "download", make_pdf(["magic bytes decide"]))
    assert "magic bytes decide" in load([pdf]).parts[0].text


def test_text_mentioning_pdf_magic_is_still_text(tmp_path):
    note = write(tmp_path / "note.py", 'MAGIC = b"%PDF-"\n')
    assert load([note]).parts[0].kind == "file"


def test_encrypted_pdf_needs_password(tmp_path):
    pdf = write(tmp_path / "locked.pdf", encrypt_pdf(make_pdf(["Secret fact"]), "s3cret"))
    with pytest.raises(SourceError, match=r"^.*locked\.pdf is encrypted: pass --password$"):
        load([pdf])
    with pytest.raises(SourceError, match=r"^wrong password for .*locked\.pdf$"):
        load([pdf], password="guess")
    assert "Secret fact" in load([pdf], password="s3cret").parts[0].text


def test_pdf_encrypted_with_empty_user_password_opens(tmp_path):
    pdf = write(tmp_path / "perms.pdf", encrypt_pdf(make_pdf(["Open to all"]), ""))
    assert "Open to all" in load([pdf]).parts[0].text


def test_pdf_without_text_is_an_error(tmp_path):
    pdf = write(tmp_path / "scan.pdf", make_pdf([None, None]))
    with pytest.raises(SourceError) as error:
        load([pdf])
    assert str(error.value) == f"{pdf} has no extractable text (scanned images?); OCR it first"


@pytest.mark.parametrize("keep", [0.5, 0.9, 20])
def test_truncated_pdf_is_a_clean_error(tmp_path, keep, caplog, capfd):
    data = make_pdf(["Hello planted fact", "More"])
    cut = data[: int(len(data) * keep)] if keep < 1 else data[:keep]
    pdf = write(tmp_path / "cut.pdf", cut)
    caplog.set_level(logging.DEBUG)
    try:
        document = load([pdf])
    except SourceError as error:
        assert str(error).startswith(("cannot read PDF", f"{pdf} has no extractable text"))
    else:
        # Lenient parsing may recover some pages; whatever it found is text.
        assert document.parts[0].kind == "pdf"
    assert not [r for r in caplog.records if r.name.startswith("pypdf")]
    assert capfd.readouterr().err == ""


def test_not_a_pdf_despite_suffix(tmp_path):
    pdf = write(tmp_path / "fake.pdf", "just some text, not a PDF")
    with pytest.raises(SourceError, match=r"^cannot read PDF .*fake\.pdf: "):
        load([pdf])


def test_pdf_page_limit(tmp_path):
    pdf = write(tmp_path / "long.pdf", make_pdf(["one", "two", "three"]))
    with pytest.raises(SourceError, match=r"long\.pdf has 3 pages, over the limit of 2"):
        load([pdf], pdf_max_pages=2)


def test_pdf_page_text_limit(tmp_path):
    pdf = write(tmp_path / "bomb.pdf", make_pdf(["short", "x" * 400]))
    with pytest.raises(SourceError, match=r"^page 2 of .*bomb\.pdf yields over 100 characters; "):
        load([pdf], pdf_max_chars_per_page=100)


def test_pdf_problems_inside_directories_are_skips(tmp_path):
    root = tmp_path / "papers"
    write(root / "good.pdf", make_pdf(["Readable paper"]))
    write(root / "scan.pdf", make_pdf([None]))
    write(root / "locked.pdf", encrypt_pdf(make_pdf(["x"]), "pw"))
    write(root / "broken.pdf", make_pdf(["y"])[:30])
    document = load([root])
    assert paths(document) == [f"{root}/good.pdf"]
    reasons = skip_reasons(document)
    assert reasons[f"{root}/scan.pdf"] == "no extractable text (scanned images?)"
    assert reasons[f"{root}/locked.pdf"] == "encrypted (pass --password)"
    assert reasons[f"{root}/broken.pdf"].startswith(("unreadable PDF (", "no extractable text"))


# --- robustness ------------------------------------------------------------------

_NAMES = ["a.txt", "b.pdf", "c", ".gitignore", "sub/d.py", "sub/.gitignore", "sub/e.pdf"]
_CONTENT = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=300).map(lambda tail: b"%PDF-1.4\n" + tail),
    st.binary(max_size=300).map(lambda tail: b"\xff\xfe" + tail),
    st.integers(min_value=0, max_value=2000).map(lambda n: make_pdf(["fact", None])[:n]),
    st.text(max_size=200).map(str.encode),
)


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(files=st.dictionaries(st.sampled_from(_NAMES), _CONTENT, min_size=1, max_size=len(_NAMES)))
def test_random_bytes_never_raise_anything_but_source_error(files):
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "fuzz"
        for name, data in files.items():
            write(root / name, data)
        try:
            document = load_sources([str(root)], IngestOptions(max_file_bytes=1500))
        except SourceError as error:
            assert "\n" not in str(error)
        else:
            assert document.render()
            document.render().encode("utf-8")  # always writable as UTF-8


@settings(max_examples=50, deadline=None, database=None)
@given(data=st.binary(max_size=400))
def test_decode_text_only_ever_says_not_text(data):
    try:
        decode_text(data).encode("utf-8")
    except NotText:
        pass


@settings(max_examples=50, deadline=None, database=None)
@given(text=st.text(max_size=200), path=st.text(max_size=30), is_dir=st.booleans())
def test_gitignore_parser_never_crashes(text, path, is_dir):
    is_ignored(parse_gitignore(text, ""), path, is_dir)
