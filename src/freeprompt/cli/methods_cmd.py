"""``freeprompt methods``: every editing method and its options, read from the methods' declarations (the README's
table is this command's ``--markdown`` output)."""

from __future__ import annotations

import typer

from ..editing.methods import METHODS, method_choices, option_table, preset_table


def methods(markdown: bool = typer.Option(False, "--markdown", help="the README's Markdown tables")):
    """List the editing methods and every option: flag, default, what it does and where the default comes from."""
    typer.echo(methods_markdown() if markdown else methods_text())


def methods_text() -> str:
    lines = []
    for name, cls in METHODS.items():
        lines.append(f"{name}" + (f" ({cls.reference})" if cls.reference else "") + f": the target takes {cls.summary}")
        for method, declared in option_table():
            if method == name:
                lines.append(f"  {declared.flag:<22} [default: {declared.shown_default()}] {declared.help}")
                lines.append(f"  {'':<22} default from {declared.source}")
        for method, preset, declared in preset_table():
            if method == name:
                lines.append(f"  --preset {preset:<13} {declared.flags(_owners())}: {declared.help}")
                lines.append(f"  {'':<22} from {declared.source}")
    return "\n".join(lines)


def _owners() -> dict:
    return {d.param: d for _, d in option_table()}


def methods_markdown() -> str:
    """The methods table (what the target takes, options with defaults) and the options table (every option's
    default, meaning and source)."""
    rows = ["| method | what the target takes from the source | options (defaults) |", "|---|---|---|"]
    for name, cls in METHODS.items():
        flags = ", ".join(f"`{d.flag}` (`{d.shown_default()}`)" for m, d in option_table() if m == name)
        rows.append(f"| `{name}`{f' ({cls.reference})' if cls.reference else ''} | {cls.summary} | {flags} |")
    for combination in method_choices()[len(METHODS):]:
        parts = combination.split("+")
        beside = "; ".join(f"{k} `{v}`" for k, v in METHODS[parts[-1]].combined.get(parts[0], {}).items())
        rows.append(f"| `{combination}` | what {' and '.join(parts)} take, in one run"
                    f"{f' (beside {parts[0]}, {parts[-1]} has {beside})' if beside else ''} | both methods' options |")
    rows += ["", "| option | method | default | what it does | where the default comes from |", "|---|---|---|---|---|"]
    for name, declared in option_table():
        rows.append(f"| `{declared.flag}` | {name} | `{declared.shown_default()}` | {declared.help} | "
                    f"{declared.source} |")
    if preset_table():
        rows += ["", "| preset | method | the options it gives | for | where it comes from |", "|---|---|---|---|---|"]
        for name, preset, declared in preset_table():
            rows.append(f"| `--preset {preset}` | {name} | `{declared.flags(_owners())}` | {declared.help} | "
                        f"{declared.source} |")
    return "\n".join(rows)
