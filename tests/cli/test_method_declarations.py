"""Method options are declared once: the README's tables are the declarations' (``freeprompt methods --markdown``),
and a method registered from outside (one dataclass and one ``register`` call) appears everywhere a method's
options are made: ``edit``'s, ``eval``'s and ``bench shapes``' help, ``freeprompt methods``, the one-line errors, the
web UI's method menu and controls, and the edit itself."""

from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from freeprompt.attention.steps import StepRange
from freeprompt.cli.main import build_app, main
from freeprompt.cli.methods_cmd import methods_markdown
from freeprompt.editing import methods as registry
from freeprompt.editing.methods import MethodPlan, build_methods, register
from freeprompt.editing.methods.options import NUMBER, STEPS, Options, option

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_are_the_declarations():
    text = README.read_text()
    start = text.index("<!-- methods-table:start")
    body = text[text.index("\n", start) + 1:text.index("<!-- methods-table:end -->")].strip()
    assert body == methods_markdown(), "run `freeprompt methods --markdown` and paste it between the markers"


@dataclass(frozen=True)
class Toy(Options):
    """A method that edits nothing, with two options of its own."""

    toy_steps: StepRange = option("0:0.5", kind=STEPS, flag="--toy-steps", label="toy steps",
                                  help="steps the toy would edit", source="this test")
    toy_strength: float = option(0.25, kind=NUMBER, flag="--toy-strength", label="toy strength", bounds=(0.0, 1.0),
                                 help="how strongly", source="this test")

    name = "toy"
    title = "Toy"
    summary = "nothing at all"

    def plan(self, ctx) -> MethodPlan:
        return MethodPlan()


@pytest.fixture
def toy():
    register(Toy)
    try:
        yield Toy
    finally:
        registry.METHODS.pop("toy")


def test_a_registered_method_reaches_the_command_line(toy, tmp_path, capsys):
    runner = CliRunner()
    for command in (["edit"], ["eval"], ["bench", "shapes"]):
        out = runner.invoke(build_app(), [*command, "--help"], terminal_width=200).output
        assert "--toy-steps" in out and "--toy-strength" in out and "[default: 0:0.5]" in out, command
        assert "toy" in out.split("\n  --method ")[1].split("\n  --")[0]  # the --method help names it
    listed = runner.invoke(build_app(), ["methods"]).output
    assert "toy: the target takes nothing at all" in listed and "default from this test" in listed
    assert build_methods("toy,fpe", {"toy_strength": "0.5"})["toy"] == Toy(toy_strength=0.5)
    argv = ["edit", "-s", "a red circle", "-t", "a blue circle", "-o", str(tmp_path / "x"), "--method", "toy"]
    for extra, message in ((["--toy-strength", "2"], "Toy's toy strength: 2.0 is outside 0..1"),
                           (["--toy-steps", "0.9:0.1"], "Toy's toy steps: step range 0.9:0.1 starts after it ends"),
                           (["--method", "fpe", "--toy-steps", "0:1"], "--toy-steps belong(s) to method toy")):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, *extra])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists()


def test_a_registered_method_reaches_the_web_ui(toy, tiny_pipe):
    pytest.importorskip("gradio", reason="the web UI needs the ui extra")
    from freeprompt.models.loading import LoadedModel
    from freeprompt.ui.app import Editor, build

    editor = Editor(LoadedModel(tiny_pipe, {"id": "tiny", "revision": None}, {"steps": 2, "guidance": 3.0}))
    blocks = build(editor).blocks.values()
    menus = [b for b in blocks if getattr(b, "label", None) == "Method"]
    assert menus and all("toy" in [choice[0] for choice in menu.choices] for menu in menus)
    labels = [getattr(b, "label", None) for b in blocks]
    assert labels.count("Toy steps (Toy)") == 2 and labels.count("Toy strength (Toy)") == 2  # one per tab
    shown = editor.generated("a cat", "a dog", "toy", 0, 2, 3.0, {"toy_steps": "0:1"}, "")
    assert shown[-1] == "" and len(shown[0]) == 2  # no error; source and target
    refused = editor.generated("a cat", "a dog", "toy", 0, 2, 3.0, {"toy_strength": 7}, "")
    assert "toy strength" in refused[-1] and not refused[0]
