"""docs/usage.md, generated from the commands' own options (`python -m starcli.tools.usage_doc`)."""

from __future__ import annotations

import typer.main

INTRO = """# Usage

Generated from the command definitions by `python -m starcli.tools.usage_doc > docs/usage.md`; a test
checks it is current. Every option also shows with `starcli COMMAND --help`.

Results go to stdout; progress, notes and the timing report to stderr. Exit status: 0 success,
1 bad input or a failed run, 2 bad options, 130 interrupted (143 and 129 for SIGTERM and SIGHUP,
which end a run's ranks the same way). Options marked with an environment
variable can be set through it (`STARCLI_MODEL`, `STARCLI_DEVICE`, ...). Options are checked before
any work; a usage error is one line on stderr, `starcli: error: ...`, naming the option (or the
environment variable its value came from).

A directory is read as git lists it (its ignored files left out); outside a git repository its
`.gitignore` files are honoured and dependency and tool folders (`node_modules/`, `.venv/`,
`__pycache__/`, ...) are skipped, each named on stderr (`--include` a pattern naming one, or give
the folder itself, to read it). A text file that is not UTF-8 is read in the encoding a detector
finds (stderr names it); UTF-8 with a few invalid bytes stays UTF-8. A file or directory inside the current directory is cited relative
to it in its `=== path ===` header, however it was typed (`doc.txt`, `./doc.txt` or its absolute
path); the header is part of what the model reads, and the document cache (`--cache`) is keyed on
what the model reads, so those give one entry. Each entry's tensor file is checked against the
digest recorded when it was written; a damaged entry is encoded again, never used. `starcli cache
ls` lists each entry with its date and source; `starcli cache rm ID` confirms each removal.

Examples:

```sh
starcli ask repo/ "where is the retry logic?"
git log -p | starcli ask "what changed in auth?"
starcli ask book.pdf -q "who is the narrator?" -q "how does it end?"
starcli summarize book.pdf --words 300 --json
starcli ask book.pdf "which chapters mention the storm?" --long map
starcli ask big-repo/ "..." --gpus 4 --block-size 16384
starcli ask logs/ "..." --device cpu --procs 2
starcli count repo/ --gpus 4
starcli bench --shape llama3-8b --lengths 32k,128k --modes dense,star,ring
starcli eval --tasks niah_single,vt --lengths 8k --attention dense,star
```
"""

DECODING = """## How answers are decoded, and how they end

Unless told otherwise, an answer is sampled the way the model's authors recommend: the sampling
keys of the model folder's `generation_config.json` (`temperature`, `top_p`, `top_k`,
`repetition_penalty`; `do_sample: false` means greedy). A converted GGUF gets its
`general.sampling.*` keys there, or, when it carries none, the defaults its family publishes
(Qwen2 and Qwen2.5: temperature 0.7, top-p 0.8, top-k 20, repetition penalty 1.05; the embedded
models are such GGUFs). A model that names no defaults is decoded greedily. Each of
`--temperature` (0 = greedy), `--top-p`, `--top-k` and `--repetition-penalty` overrides its key
alone. The repetition penalty counts only the tokens of the answer itself, never the document's or
the question's, so an answer can quote its source.

A sampled run draws a random seed unless `--seed` is given; the report's `sampling` line and
`--json` (`sampling.seed`) name it, and `--seed N` repeats the answer on the same machine.

A question (`ask`, `chat`) goes to the model with a system message asking it to give the answer
first, in a sentence or two, and add detail only when asked, where the model's chat template has a
system role; `summarize` asks for its length itself and goes without it. Small models otherwise
answer, then explain at length until the token limit (docs/accuracy.md).

The report names why each answer stopped (`answers[i].stop_reason` in `--json`): `end of turn`
(the model finished), `stop string` (a `--stop` text), `max new tokens` (the limit), or
`repetition`: the loop guard found the answer's latest tokens repeating one n-gram (of up to 200
tokens) three times in a row over at least 48 tokens, and stopped it there.
"""

LONG_INPUTS = """## Inputs longer than the window

Star Attention makes one long pass cheap, but it does not extend the positions a model was
trained on. When the prompt (document + question + answer room) is longer than the window (the
model's, or a smaller `--window N`):

- `summarize` reads the input in sections cut at natural boundaries (files, PDF pages or form
  feeds, headings and chapter titles, paragraphs, then lines; a single line longer than a section
  is cut at token level, and nothing is dropped), summarizes each section in its own pass ("part 3
  of 7"), then combines the section summaries in document order. While they do not fit one pass
  together, consecutive groups are summarized first. Each pass is a normal Star Attention run
  inside the window, in one process or on `--procs`/`--gpus` ranks (one machine).
- `ask` refuses, naming both sizes and the choices: `--long map` (ask every section, then combine
  the partial answers in order; the report says so), `--truncate` (read only the beginning), a
  lower `--max-new-tokens`, a model with a longer window, or `--rope-scaling` when the model
  supports it.
- `--rope-scaling yarn:4` (or `linear:F`) stretches a RoPE model's window by the factor: the
  default model then takes 131072 positions instead of 32768. A model of a family whose authors
  document YaRN (Qwen2 and Qwen2.5, up to x4) is stretched by itself, by the smallest factor that
  fits, whether it is the embedded default, its GGUF named by path, or another folder of that
  family (the report says so; `--rope-scaling none` refuses instead). The model was not trained on those
  positions, so accuracy degrades, the more the larger the factor (linear more than YaRN); where
  answers matter, prefer reading in sections (`--long map`).

Progress is a line per finished section on stderr; the report adds the strategy, the sections and
the passes, and `--json` adds a `long` object (`sections`, `passes`, `pass_counts`,
`section_tokens`, `pass_log`, and `section_summaries` or `partial_answers`).

A real run: five entries of the Python reference manual shipped with Python 3.11 as
`pydoc_data.topics` (the `if`, `while`, `for`, `try` and `with` statements: 14,406 characters;
3,323 tokens with the file header starcli adds) summarized by the default model on CPU with a
1,536-token window. The three sections fell on the manual's own titles: the first holds `if`,
`while`, `for` and the start of `try`, the second starts at the `"except" clause` title, the third
at the `"else" clause` title. The machine had 2 CPU cores shared with other jobs during the run
(9.5 minutes wall clock), so the times are slower than on an idle one.

```sh
python -c "from pydoc_data.topics import topics; print('\\n\\n'.join(topics[k] for k in ('if', 'while', 'for', 'try', 'with')))" > statements.txt
starcli summarize statements.txt --device cpu --window 1536 --max-new-tokens 160
```

stdout (the summary, wrapped here at 100 columns):

```text
This document covers the basic syntax and usage of the "if", "while", "for", and "try" statements in
Python. It also includes information on exception handling and cleanup code. The document also
mentions that exceptions are cleared after the suite is executed, combined into an exception group
along with all exceptions that were raised from within the suite. The "with" statement in Python is
used to wrap the execution of a block with methods defined by a context manager. It ensures that if
an exception occurs during the execution of the block, the suite is exited and the exception is
re-raised. The suite is executed with the statement following the "with" statement.
```

stderr:

```text
starcli: the prompt needs 3545 tokens, more than the window of 1536: summarizing it section by section, then combining the section summaries in order
starcli: loading model: done (1/1, 5.80 s)
starcli: section 1/3 done: read 899 tokens, wrote 54, 86.8 s
starcli: section 2/3 done: read 1253 tokens, wrote 97, 124.6 s
starcli: section 3/3 done: read 1243 tokens, wrote 160, 197.6 s
starcli: combining 3 partials into the answer

--- starcli report ---
model          qwen2.5-coder-0.5b-instruct-q4km (float32, cpu, kernel cpu-flash)
model load     5.73 s
ingest         0 ms (1 parts, 0 skipped)
tokens         document 3323 / question 58 / answer 133
long input     3323 tokens > window 1536: hierarchical summary
sections       3 of up to 1276 tokens, at natural boundaries
passes         4 (3 sections, 1 final); section summaries combined in order
attention      star: 3 blocks of 128, anchor 128, 1 rank(s)
phase 1        133.23 s (28 tokens/s)
answer         first token 450.93 s, decode 1.2 tokens/s, stopped: end of turn
peak memory    4.1 GiB (cpu)
total          558.95 s
```
"""


SERVER = """## A resident server: `starcli serve`

`starcli serve` loads the model once and answers over HTTP until it is stopped: `starcli ask
--server`, a document API for curl or any HTTP client, and OpenAI's chat completions. The documents
it has encoded stay in memory, so a later question about the same document skips phase 1 (the
report says `cache hit: kept encoded by the server`).

### Starting it

```sh
starcli serve                                        # the default model, on http://127.0.0.1:8471
starcli serve --model qwen2.5-coder-1.5b --gpus 4 --doc-memory 16GiB
starcli serve --device cpu --procs 2 --port 0         # any free port
STARCLI_API_KEY=KEY starcli serve --host 0.0.0.0     # reachable from other machines: a key is required
```

Once the model is loaded, stderr says `starcli: serving MODEL on http://HOST:PORT (N rank(s))`; with
`--port 0` that line names the port it got.

- `--host` is 127.0.0.1 by default. Any address other than loopback is refused, before the model
  loads, unless `--api-key` (or `STARCLI_API_KEY`) is set; with a key, every request must carry it
  as `Authorization: Bearer KEY` or `x-api-key: KEY` (docs/security.md).
- The model and engine options (`--model`, `--device`, `--dtype`, `--kernel`, `--eager`,
  `--rope-scaling`, `--trust-remote-code`, `--allow-pickle`) are fixed when the server starts.
  `--gpus N`, or `--procs N` with `--device cpu`, starts N ranks on this machine once; they load the
  model once and serve every request. If a rank dies or fails, the ranks are gone: requests get 503
  and `/health` says `broken` until the server is restarted.
- `--doc-memory` (default 8GiB, `STARCLI_DOC_MEMORY`): how much memory each rank keeps for encoded
  documents, on its device (GPU memory on a GPU). Sizes take K, M, G or T, counted in 1024s
  (`512MiB`, `16G`). Past the budget the least recently used document is dropped; a document larger
  than the whole budget is still answered, then dropped.
- `--max-body` (default 64MiB): the largest request body, documents included; a larger one gets 413.
- `--max-documents` (default 64): how many documents posted to `/v1/documents` are kept for
  questions; past it the least recently used is forgotten, and its id then gets 404 (post it again).
- `--grace` (default 10): on SIGINT (Ctrl-C) or SIGTERM the server stops taking requests, gives
  those in flight `--grace` seconds to finish, then cancels what is left, stops the ranks and exits
  0. A second Ctrl-C stops waiting.

Requests run one at a time, in arrival order: they queue, they are not batched (`/health` says how
many wait). A client that disconnects cancels its request: a waiting one is dropped, a running one
stops within a few tokens (in one process, also between the passes of phase 1).

### From starcli

```sh
starcli ask --server http://127.0.0.1:8471 repo/ "where is the retry logic?"
export STARCLI_SERVER=http://127.0.0.1:8471           # and STARCLI_API_KEY when the server has a key
starcli summarize book.pdf --words 300
```

With `--server URL` (or `STARCLI_SERVER`), `ask` and `summarize` read the files and stdin on the
client, exactly as in one process (the same notes and skips), and send them with the question; the
answer streams back and the report is the one a local run prints (`model load none: the server
keeps it loaded`). `--api-key` (or `STARCLI_API_KEY`) sends the key. The options of the answer and
of the input (`--max-new-tokens`, `--temperature`, `--seed`, `--stop`, `--long`, `--truncate`,
`--window`, `--block-size`, `--cache`, ...) apply to the request. The model and engine options are
the server's: a request that asks for others (another `--model`, `--dtype float32`) is refused
(exit 2), as are `--procs`, `--gpus` and `--nnodes`. A server never stretches the RoPE for one
request: an input over the window of the model as loaded is refused, truncated or read in sections,
as the options ask (start the server with `--rope-scaling` for a longer window). With `--cache` the
server keeps the encoding in the document cache on its own disk.

### From curl: the document API

Send request bodies as JSON (`Content-Type: application/json`).

```sh
S=http://127.0.0.1:8471 J='Content-Type: application/json'
curl -s $S/v1/documents -H "$J" -d '{"text": "Retries live in net/retry.py: 3 tries, 2, 4 and 8 seconds apart."}'
# {"id":"doc-a79f8cfc67e4304869ab9130","object":"document","tokens":59,"window":32768,"encoded":true,"blocks":1,"cached":false,"encode_s":0.53}
curl -s $S/v1/documents/doc-a79f8cfc67e4304869ab9130/ask -H "$J" \\
  -d '{"questions": ["How many tries?"], "stream": false, "settings": {"temperature": 0}}'
curl -s -X DELETE $S/v1/documents/doc-a79f8cfc67e4304869ab9130
```

- `POST /v1/documents` takes `{"text": "..."}` or `{"parts": [{"path": "src/net.py", "text": "..."},
  ...]}` (each part under its `=== path ===` header, as starcli's own inputs are), encodes it at once
  and returns its `id` (from its content: the same document gets the same id), `tokens`, `blocks`,
  `cached` (true when the server already held it encoded), `window`, `encode_s`, and `encoded`:
  false when the document and the answer room do not fit the window; questions about it are then
  refused, truncated or read in sections, as they ask.
- `POST /v1/documents/{id}/ask` takes `{"questions": [...]}` and optionally `stream` (default true),
  `long` (`refuse`, the default; `map`; `summary`, what `summarize` sends), `words`, `truncate`,
  `window` and `settings`: the run's settings by name (`max_new_tokens`, `temperature`, `top_p`,
  `top_k`, `repetition_penalty`, `seed`, `stop`, `block_size`, `anchor_size`, `relay`, `attention`,
  `cache`, ...). The model and engine settings must be the server's or left out; an unknown name
  is a 400. Without a stream, the answer is the object `ask --json` prints. With one, it is JSON
  lines (`application/x-ndjson`), one event a line (`stage`, `note`, `question`, `token`,
  `answer_end`, `pass`), ending with a `{"type": "result", "result": {...}}` line that holds the same
  object, or, when the request fails after the stream began, a `{"type": "error", "message": ...,
  "status": ..., "exit_code": ...}` line.
- `POST /v1/ask` is the same with the document inline, `{"document": {"text": ...}, "questions":
  [...]}` (or `"parts"`); it is what `starcli ask --server` sends. The document gets no id, but its
  encoding is kept in memory like any other.
- `GET /v1/documents` lists the documents kept, most recently used first. `DELETE
  /v1/documents/{id}` forgets one; its encoding stays in memory until newer ones push it out.
- `GET /health`: `{"status": "ok", "model": ..., "ranks": ..., "waiting": ..., "documents": ...}`,
  or 503 with `"status": "broken"` and the `error` when the ranks are down. `GET /v1/models` names
  the model.

### From an OpenAI client

```python
from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8471/v1", api_key="unused")  # the key, if the server has one
document = open("notes.txt").read()
for question in ["What was decided?", "Who acts next?"]:
    reply = client.chat.completions.create(
        model="",  # or the server's model, as GET /v1/models names it; any other is a 404
        messages=[{"role": "user", "content": document}, {"role": "user", "content": question}],
        temperature=0,
    )
    print(reply.choices[0].message.content)
```

`POST /v1/chat/completions` treats the conversation through the first user message as the
document: it goes through phase 1 and stays encoded, and a later request that opens with the same
messages skips it; the rest of the conversation is the question. So put the long text in the first
user message (or in a system message before it) and the question in a later user message: the
first question pays for phase 1, the next ones do not. A question written into the first message
makes each request a new document. The model needs a chat template (without one, use the document
API), and message content must be text.

Supported fields: `messages`, `model`, `stream` (server-sent events, ending with `data: [DONE]`),
`stream_options.include_usage`, `max_tokens` or `max_completion_tokens` (default 512),
`temperature`, `top_p`, `top_k`, `repetition_penalty`, `seed` and `stop`; sampling not given
follows the model's defaults, as for `ask`. `n` must be 1, and `logprobs` and `tools` are refused;
other fields (`user`, `metadata`, ...) are ignored. A conversation whose prompt and `max_tokens` do
not fit the window is a 400 with code `context_length_exceeded`.

### Errors

Every error is JSON with a 4xx or 5xx status, never a traceback, and the server goes on:
`{"error": {"message": ..., "type": ..., "code": ..., "exit_code": ...}}`, with `type`
`invalid_request_error`, `authentication_error` or `server_error`, and `exit_code` what `starcli ask
--server` exits with. 400: a bad request (`context_length_exceeded` over the window); 401: a
missing or wrong key; 404: an unknown model, document or path; 413: a body over `--max-body`; 503:
the server is stopping or its ranks are down; 500: anything else. A streamed chat completion that
fails after its first token sends such an error object as its last event, before `data: [DONE]`.
"""


def _option_row(param) -> str:
    names = ", ".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))
    help_text = (getattr(param, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    default = param.default
    shown = "" if default in (None, False, (), []) or callable(default) else f" (default: `{default}`)"
    env = f" [env `{param.envvar}`]" if getattr(param, "envvar", None) else ""
    return f"| {names} | {help_text}{shown}{env} |"


def render_usage() -> str:
    from ..cli.main import app

    group = typer.main.get_command(app)
    out = [INTRO]
    with typer.Context(group) as ctx:
        commands = [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    for name, command in commands:
        if command is None or command.hidden:
            continue
        arguments = " ".join(p.metavar or p.name.upper() + "..." * (p.nargs == -1) for p in command.params if p.param_type_name == "argument")
        out.append(f"## `starcli {name}{' ' + arguments if arguments else ''}`\n")
        out.append((command.help or "").strip() + "\n")
        rows = [_option_row(p) for p in command.params if p.param_type_name == "option" and p.name != "help"]
        if rows:
            out.append("| option | meaning |\n| --- | --- |")
            out.extend(rows)
            out.append("")
    out.append(DECODING)
    out.append(LONG_INPUTS)
    out.append(SERVER)
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_usage(), end="")
