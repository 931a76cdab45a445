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
