"""Imports flow one way through gan3d's layers (every import, including those inside functions).

    config, errors, draws -> render -> storage -> data -> nn -> metrics, track -> training
        -> tools (evaluate, visualize, bench, report, inversion, ...) -> orchestrate -> cli -> the package's API (gan3d/__init__)

render (pure camera, ray, tri-plane and volume functions) sits under data because datasets use the same
camera convention (the synthetic scenes are ray-traced with it, EG3D poses are converted into it).
"""
import ast
from pathlib import Path

from conftest import ROOT

LAYERS = [("config", "errors", "draws"), ("render",), ("storage",), ("data",), ("nn",), ("metrics", "track"), ("training",),
          ("tools",), ("orchestrate",), ("cli",)]
RANK = {name: i for i, group in enumerate(LAYERS) for name in group}
API = len(LAYERS)  # gan3d/__init__.py


def _rank(module: str) -> int:
    parts = module.split(".")
    return API if len(parts) == 1 else RANK[parts[1]]


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "gan3d")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "gan3d":
            if node.module == "gan3d":  # `from gan3d import config` names a submodule or the API
                yield from ((f"gan3d.{a.name}" if a.name in RANK else "gan3d", node.lineno) for a in node.names)
            else:
                yield node.module, node.lineno


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in sorted((ROOT / "gan3d").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module == "gan3d":
            continue  # the API re-exports everything
        for target, line in _imports(path):
            if _rank(target) > _rank(module):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    assert not upward, "\n".join(upward)


def test_every_package_module_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in (ROOT / "gan3d").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert names <= set(RANK), names - set(RANK)


def test_no_module_imports_another_modules_private_names():
    """A leading underscore means: this module's own. Another module that needs it gets a public name."""
    private = []
    for path in sorted((ROOT / "gan3d").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gan3d"):
                private += [f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not private, "\n".join(private)


def test_both_sessions_offer_everything_the_loop_may_ask_of_a_session():
    """training.session.Session is the whole interface between the loop and where it runs (Ray or not)."""
    from gan3d.training.session import LocalSession, RaySession, Session

    asked = [n for n, v in vars(Session).items() if callable(v) and not n.startswith("_")]
    assert {"load_latest", "report", "should_stop", "placement", "progress"} <= set(asked)
    for cls in (LocalSession, RaySession):
        assert [n for n in asked if not callable(getattr(cls, n, None))] == [], cls.__name__
