"""The package's layers, read from the source: no import circles, no import up the layers, and the
graph docs/architecture.md shows is the one the code has."""

from pathlib import Path

from starcli.tools import imports

ROOT = Path(__file__).resolve().parents[1]


def test_no_module_imports_itself_back():
    assert imports.cycles(imports.import_graph()) == []


def test_no_layer_imports_one_above_it():
    assert imports.upward_imports(imports.import_graph()) == []


def test_the_checks_see_a_circle_and_an_upward_import():
    graph = {"starcli.model.a": {"starcli.model.b"}, "starcli.model.b": {"starcli.model.a"},
             "starcli.run.worker": {"starcli.cli.render"}, "starcli.cli.render": set()}
    assert imports.cycles(graph) == [["starcli.model.a", "starcli.model.b"]]
    assert imports.upward_imports(graph) == [("starcli.run.worker", "starcli.cli.render")]


def test_architecture_doc_shows_the_layer_graph():
    graph = imports.package_graph(imports.import_graph())
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for layer in imports.LAYERS:
        used = ", ".join(sorted(graph.get(layer, set()), key=imports.LAYERS.index)) or "-"
        assert f"{layer:<8} -> {used}\n" in doc, f"regenerate the graph: python -m starcli.tools.imports ({layer})"
