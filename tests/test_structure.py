"""The layering that keeps the method readable: losses and samplers ask the SDE instead of testing its
type, and no sampler imports another (they meet only through `score_fn`; shared numerics live in
`samplers/integrators.py`, names in `samplers/registry.py`)."""

import ast
import pathlib

import pytest

from helpers import ROOT

SDE_CLASSES = {"SDE", "VESDE", "VPSDE", "SubVPSDE", "ReverseSDE"}
SHARED = {"scorejax.samplers.registry", "scorejax.samplers.integrators"}


def modules(folder):
  return sorted(p for p in pathlib.Path(ROOT, folder).glob("*.py") if p.name != "__init__.py")


def imported_modules(tree):
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f"{node.module}.{alias.name}" for alias in node.names)


def sde_type_references(tree):
  """Names of SDE classes used anywhere (`isinstance(sde, VESDE)`, `sde_lib.VPSDE`, `type(sde) is ...`)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Name) and node.id in SDE_CLASSES:
      yield node.id
    elif isinstance(node, ast.Attribute) and node.attr in SDE_CLASSES:
      yield node.attr


@pytest.mark.parametrize("path", modules("samplers") + modules("losses"), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_loss_or_sampler_tests_the_type_of_an_sde(path):
  assert not list(sde_type_references(ast.parse(path.read_text()))), "ask the SDE (sde_lib) instead"


@pytest.mark.parametrize("path", modules("samplers"), ids=lambda p: p.name)
def test_no_sampler_imports_another_sampler(path):
  samplers = {f"scorejax.samplers.{p.stem}" for p in modules("samplers")} - SHARED
  imported = set(imported_modules(ast.parse(path.read_text()))) & samplers
  assert not imported - {f"scorejax.samplers.{path.stem}"}, imported


def test_the_checks_catch_what_they_look_for():
  assert list(sde_type_references(ast.parse("isinstance(sde, sde_lib.VESDE)")))
  assert list(sde_type_references(ast.parse("if type(sde) is VPSDE: pass")))
  assert "scorejax.samplers.pc" in set(imported_modules(ast.parse("from scorejax.samplers.pc import x")))
  assert "scorejax.samplers.pc" in set(imported_modules(ast.parse("from scorejax.samplers import pc")))


def test_losses_and_samplers_never_import_a_model():
  for path in modules("samplers") + modules("losses"):
    assert not [m for m in imported_modules(ast.parse(path.read_text())) if m.startswith("scorejax.models")], path


@pytest.mark.parametrize("path", modules("control"), ids=lambda p: p.name)
def test_control_builds_on_score_functions_and_the_sde_only(path):
  # Conditional score functions and constraints wrap a `score_fn`: no network, sampler or loss inside.
  imported = set(imported_modules(ast.parse(path.read_text())))
  assert not {m for m in imported if m.startswith(("scorejax.models", "scorejax.samplers", "scorejax.losses"))}
  assert not list(sde_type_references(ast.parse(path.read_text()))), "ask the SDE (sde_lib) instead"


# The run layer reads the config; below it, functions take the plain values they need (ARCHITECTURE.md, "One
# config field, end to end"). A config is read as `config.<section>` or `config["<section>"]`, or taken as an
# argument named `config`; the library never imports ml_collections.
LIBRARY = ("samplers", "losses", "models", "control", "evaluation", "datasets")
TOP_LEVEL = sorted(p for p in pathlib.Path(ROOT).glob("*.py") if p.name not in ("main.py", "__init__.py"))
SECTIONS = {"training", "sampling", "model", "data", "eval", "optim"}


def config_reads(tree):
  """Where a module reads a config object: an argument named config or cfg, an attribute of a name so called,
  a config section of an attribute so called (`exp.config.sampling`), or an import of ml_collections."""
  for node in ast.walk(tree):
    if isinstance(node, ast.arg) and node.arg in ("config", "cfg"):
      yield f"argument {node.arg}"
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("config", "cfg"):
      yield f"{node.value.id}.{node.attr}"
    elif isinstance(node, ast.Attribute) and node.attr in SECTIONS:
      if isinstance(node.value, ast.Attribute) and node.value.attr == "config":  # exp.config.sampling
        yield f"config.{node.attr}"
  yield from (m for m in imported_modules(tree) if m.split(".")[0] == "ml_collections")


@pytest.mark.parametrize(
  "path", [p for folder in LIBRARY for p in modules(folder)] + TOP_LEVEL, ids=lambda p: f"{p.parent.name}/{p.name}"
)
def test_only_the_run_layer_reads_a_config(path):
  assert not list(config_reads(ast.parse(path.read_text()))), "take the values as arguments; run/ reads the config"


def sde_type_tests(tree):
  """Tests of an SDE's type: `isinstance(x, <SDE class>)` or `type(x) is/== <SDE class>` (a network may build an
  SDE of its own, as EDM's VP preconditioning does, but never branches on the type of the one it is given)."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "isinstance":
      if list(sde_type_references(node.args[1])):
        yield ast.unparse(node)
    elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Call) and ast.unparse(node.left.func) == "type":
      if any(list(sde_type_references(c)) for c in node.comparators):
        yield ast.unparse(node)


@pytest.mark.parametrize("path", modules("models"), ids=lambda p: p.name)
def test_no_network_tests_the_type_of_an_sde(path):
  assert not list(sde_type_tests(ast.parse(path.read_text()))), "ask the SDE (sde_lib) instead"


def test_the_config_check_catches_what_it_looks_for():
  for code in ("def f(config): pass", "config.training.n_iters", "import ml_collections", "cfg.model", "e.config.eval"):
    assert list(config_reads(ast.parse(code))), code
  assert not list(config_reads(ast.parse("def f(sde, eps): return sde.T - eps")))
  assert list(sde_type_tests(ast.parse("isinstance(sde, sde_lib.VPSDE)")))
  assert list(sde_type_tests(ast.parse("type(sde) == VESDE")))
  assert not list(sde_type_tests(ast.parse("EDM_VP = sde_lib.VPSDE(0.1, 20.0, 1000)")))
