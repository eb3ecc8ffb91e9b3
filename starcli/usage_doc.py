"""docs/usage.md, generated from the commands' own options (`python -m starcli.usage_doc`)."""

from __future__ import annotations

import typer.main

INTRO = """# Usage

Generated from the command definitions by `python -m starcli.usage_doc > docs/usage.md`; a test
checks it is current. Every option also shows with `starcli COMMAND --help`.

Results go to stdout; progress, notes and the timing report to stderr. Exit status: 0 success,
1 bad input or a failed run, 2 bad options, 130 interrupted. Options marked with an environment
variable can be set through it (`STARCLI_MODEL`, `STARCLI_DEVICE`, ...).

Examples:

```sh
starcli ask repo/ "where is the retry logic?"
git log -p | starcli ask "what changed in auth?"
starcli ask book.pdf -q "who is the narrator?" -q "how does it end?"
starcli summarize book.pdf --words 300 --json
starcli ask big-repo/ "..." --gpus 4 --block-size 16384
starcli ask logs/ "..." --device cpu --procs 2
starcli count repo/ --gpus 4
starcli bench --shape llama3-8b --lengths 32k,128k --modes dense,star,ring
starcli eval --tasks niah_single,vt --lengths 8k --attention dense,star
```
"""


def _option_row(param) -> str:
    names = ", ".join(f"`{n}`" for n in (*param.opts, *param.secondary_opts))
    help_text = (getattr(param, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    default = param.default
    shown = "" if default in (None, False, (), []) or callable(default) else f" (default: `{default}`)"
    env = f" [env `{param.envvar}`]" if getattr(param, "envvar", None) else ""
    return f"| {names} | {help_text}{shown}{env} |"


def render_usage() -> str:
    from .cli import app

    group = typer.main.get_command(app)
    out = [INTRO]
    for name, command in group.commands.items():
        if command.hidden:
            continue
        arguments = " ".join(p.metavar or p.name.upper() + "..." * (p.nargs == -1) for p in command.params if p.param_type_name == "argument")
        out.append(f"## `starcli {name}{' ' + arguments if arguments else ''}`\n")
        out.append((command.help or "").strip() + "\n")
        rows = [_option_row(p) for p in command.params if p.param_type_name == "option" and p.name != "help"]
        if rows:
            out.append("| option | meaning |\n| --- | --- |")
            out.extend(rows)
            out.append("")
    return "\n".join(out).rstrip() + "\n"


if __name__ == "__main__":
    print(render_usage(), end="")
