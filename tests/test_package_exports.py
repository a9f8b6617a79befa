"""The package's public names: ``__all__`` is a short front door that resolves, every name in it is used by a
notebook, every other name a notebook takes is written ``helpers.<module>.<name>`` and exists there, and the heavy
submodules (peft, seaborn, ipywidgets) load only when one of their names is first used."""

from __future__ import annotations

import json
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest
from run_notebooks import course_notebooks

import helpers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = course_notebooks(ROOT / "notebooks")

# `from helpers import a` / `from helpers.plots import (a,\n b)` / `import helpers`, whole statements.
IMPORT = re.compile(
    r"^[ \t]*(?:from[ \t]+helpers(?P<module>\.\w+)?[ \t]+import[ \t]+(?P<names>\([^)]*\)|[^\n]*)"
    r"|import[ \t]+helpers\b[^\n]*)",
    re.MULTILINE,
)
ATTRIBUTE = re.compile(r"(?<![\w.])helpers\.(\w+)(?:\.(\w+))?")


def notebook_code(path: Path) -> str:
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")


def used_names(code: str) -> set[str]:
    """Names the code takes from the package: ``helpers.x``, ``helpers.<submodule>.x``, ``from helpers... import x``."""
    submodules = {module.name for module in pkgutil.iter_modules(helpers.__path__)}
    names = set()
    for statement in IMPORT.finditer(code):
        if statement["names"] is not None:
            listed = re.sub(r"#[^\n]*", "", statement["names"]).strip().strip("()")  # comments are not names
            imported = [name.strip() for name in listed.split(",")]
            names |= {re.split(r"\s+as\s+", name)[0] for name in imported if name}
    for first, second in ATTRIBUTE.findall(IMPORT.sub("", code)):
        names.add(second if first in submodules and second else first)
    return names


def in_fresh_interpreter(script: str) -> dict:
    """Run ``script`` (which prints one JSON object) in a new Python, with this checkout's package first on the path."""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_heavy_dependencies_load_on_first_use_only():
    found = in_fresh_interpreter(
        "import json, sys\n"
        "import helpers\n"
        "before = sorted(m for m in ('peft', 'seaborn', 'ipywidgets') if m in sys.modules)\n"
        "heal = helpers.heal_with_lora\n"
        "import helpers.healing\n"
        "print(json.dumps({'file': helpers.__file__, 'before': before, 'same': heal is helpers.healing.heal_with_lora,"
        " 'peft_after': 'peft' in sys.modules, 'seaborn_after': 'seaborn' in sys.modules}))\n"
    )
    assert Path(found["file"]) == ROOT / "helpers" / "__init__.py"  # this checkout, not an installed copy
    assert found["before"] == []
    assert found["same"] and found["peft_after"]
    assert not found["seaborn_after"]  # healing needs peft, not the plots


def test_every_exported_name_resolves_once():
    assert len(helpers.__all__) == len(set(helpers.__all__))
    missing = [name for name in helpers.__all__ if not hasattr(helpers, name)]
    assert missing == []
    assert helpers.plot_block_profiles is sys.modules["helpers.plots"].plot_block_profiles
    assert helpers.LivePanel is sys.modules["helpers.widgets"].LivePanel
    assert {"heal_with_lora", "plots", "LivePanel"} <= set(dir(helpers))
    assert helpers.plots.plot_speedup is sys.modules["helpers.plots"].plot_speedup  # a submodule on first use


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no_such_helper"):
        helpers.no_such_helper  # noqa: B018
    assert not hasattr(helpers, "plots_of_nothing")


def test_the_parser_finds_attributes_submodule_paths_and_imports():
    code = (
        "import helpers\nfrom helpers.plots import (plot_a,\n    plot_b)\nfrom helpers import fmt as f\n"
        "from helpers import fmt_pct  # percentages\nx = helpers.load_model(m)  # see helpers.tied_order\n"
        "y = helpers.hooks.input_device(model)\nz = myhelpers.not_ours\n"
    )
    assert used_names(code) == {"plot_a", "plot_b", "fmt", "fmt_pct", "load_model", "tied_order", "input_device"}


FRONT_DOOR_LIMIT = 50
"""At most this many names in ``helpers.__all__``: what a learner meets without naming a module."""


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_a_notebook_takes_front_door_names_or_names_through_their_module(path):
    for statement in IMPORT.finditer(notebook_code(path)):
        if statement["names"] is not None and statement["module"] is None:  # from helpers import a, b
            listed = re.sub(r"#[^\n]*", "", statement["names"]).strip().strip("()")
            names = {re.split(r"\s+as\s+", name.strip())[0] for name in listed.split(",") if name.strip()}
            assert names <= set(helpers.__all__), f"from helpers import {sorted(names - set(helpers.__all__))}"
    code = IMPORT.sub("", notebook_code(path))
    submodules = {module.name for module in pkgutil.iter_modules(helpers.__path__)}
    pairs = ATTRIBUTE.findall(code)
    assert pairs, f"no helpers names found in {path.name}: has the parser stopped matching?"
    wrong = []
    for first, second in pairs:
        if first in submodules and second:
            module = getattr(helpers, first)
            if second.startswith("_") or not hasattr(module, second):
                wrong.append(f"helpers.{first}.{second} (not a public name of helpers.{first})")
        elif first not in helpers.__all__ and first not in submodules:
            wrong.append(f"helpers.{first} (not in helpers.__all__: write helpers.<module>.{first})")
    assert wrong == []


def test_the_front_door_is_short_and_every_name_in_it_is_used_by_a_notebook():
    used = set().union(*(used_names(notebook_code(path)) for path in NOTEBOOKS))
    assert len(helpers.__all__) <= FRONT_DOOR_LIMIT
    assert sorted(set(helpers.__all__) - used) == []


def test_the_notebooks_use_names_from_every_kind_of_import():
    used = set().union(*(used_names(notebook_code(path)) for path in NOTEBOOKS))
    # One of each, by hand: a front-door name, names through a submodule (plain and lazy), a lazy front-door name.
    assert {"load_model", "fmt", "plot_angular_distance", "heal_with_lora", "Lab"} <= used
