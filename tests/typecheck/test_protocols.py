"""The connector protocols and the two engines are held together, by mypy and by pytest.

The functions whose names start with ``_static`` are never called: ``make typecheck`` runs
``mypy --strict`` on this file, and they fail it when an engine no longer satisfies its
protocol in the right form (``TaskEngine`` the sync one, ``AsyncTaskEngine`` the async one).
The ``# type: ignore[return-value]`` lines assert the opposite: mypy (``--strict`` warns about
unused ignores) fails if an engine ever satisfies the protocol of the other form.

The tests below check at run time what mypy cannot see: the two protocols list the same
methods with the same parameters and defaults, each engine's methods have its protocol's
parameters and defaults, and ``AsyncTaskEngine`` uses only the public or declared internal
interface of the engine it wraps.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskengine
from taskengine import (
    AsyncBackgroundTaskConnector,
    AsyncTaskEngine,
    BackgroundTaskConnector,
    TaskEngine,
    aio,
)

# -- static: checked by mypy --strict, never run ------------------------------------------------


def _static_engine_is_a_connector(engine: TaskEngine) -> BackgroundTaskConnector:
    return engine


def _static_async_engine_is_an_async_connector(
    engine: AsyncTaskEngine,
) -> AsyncBackgroundTaskConnector:
    return engine


def _static_engine_is_not_an_async_connector(engine: TaskEngine) -> AsyncBackgroundTaskConnector:
    return engine  # type: ignore[return-value]


def _static_async_engine_is_not_a_sync_connector(
    engine: AsyncTaskEngine,
) -> BackgroundTaskConnector:
    return engine  # type: ignore[return-value]


# -- run time -----------------------------------------------------------------------------------


def _methods(protocol: type) -> list[str]:
    members = vars(protocol).items()
    return sorted(name for name, value in members if not name.startswith("_") and callable(value))


METHODS = _methods(BackgroundTaskConnector)


def _parameters(function: object) -> list[tuple[str, object, object, object]]:
    """(name, kind, default, annotation) of each parameter but ``self``, and the return type.

    The annotations are the source text (``from __future__ import annotations``), so equal
    entries mean the same spelling of the same types.
    """
    signature = inspect.signature(function)  # type: ignore[arg-type]
    listed = [
        (p.name, p.kind, p.default, p.annotation)
        for p in signature.parameters.values()
        if p.name != "self"
    ]
    return [*listed, ("return", None, None, signature.return_annotation)]


def test_both_protocols_list_the_same_methods() -> None:
    assert METHODS
    assert _methods(AsyncBackgroundTaskConnector) == METHODS
    assert "create" in METHODS
    assert "wait" in METHODS


@pytest.mark.parametrize("name", METHODS)
def test_the_async_protocol_has_the_sync_signature_as_a_coroutine(name: str) -> None:
    sync = getattr(BackgroundTaskConnector, name)
    asynchronous = getattr(AsyncBackgroundTaskConnector, name)
    assert not inspect.iscoroutinefunction(sync)
    assert inspect.iscoroutinefunction(asynchronous)
    assert _parameters(asynchronous) == _parameters(sync)


@pytest.mark.parametrize("name", METHODS)
def test_each_engine_has_its_protocols_parameters_and_defaults(name: str) -> None:
    """mypy checks the types; this also catches a default that drifted (mypy ignores values)."""
    engine_method = getattr(TaskEngine, name)
    async_method = getattr(AsyncTaskEngine, name)
    assert not inspect.iscoroutinefunction(engine_method)
    assert inspect.iscoroutinefunction(async_method)
    expected = [entry[:3] for entry in _parameters(getattr(BackgroundTaskConnector, name))]
    assert [entry[:3] for entry in _parameters(engine_method)] == expected
    assert [entry[:3] for entry in _parameters(async_method)] == expected


def test_the_engines_are_instances_of_their_protocols() -> None:
    engine = TaskEngine()
    try:
        assert isinstance(engine, BackgroundTaskConnector)
        wrapped = AsyncTaskEngine(engine)
        assert isinstance(wrapped, AsyncBackgroundTaskConnector)
        # runtime_checkable looks at names only: it cannot tell sync from async (mypy can,
        # and calls this check unreachable when it sees the type).
        anything: object = wrapped
        assert isinstance(anything, BackgroundTaskConnector)
    finally:
        engine.stop()


def test_the_protocols_are_public() -> None:
    assert "BackgroundTaskConnector" in taskengine.__all__
    assert "AsyncBackgroundTaskConnector" in taskengine.__all__


# -- AsyncTaskEngine uses only public or declared internal interfaces ---------------------------

AIO = Path(aio.__file__)
#: How a method of ``TaskEngine`` declares itself an internal interface for the other faces.
DECLARED = "Internal interface"


def _private_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, name) of each ``x._name`` where ``x`` is not ``self``, and private imports."""
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
            and not (isinstance(node.value, ast.Name) and node.value.id in {"self", "cls"})
        ):
            yield node.lineno, node.attr
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name.startswith("_"):
                    yield node.lineno, alias.name


def _declared_internal(name: str) -> bool:
    member = vars(TaskEngine).get(name)
    return member is not None and (inspect.getdoc(member) or "").startswith(DECLARED)


def test_the_async_engine_uses_only_declared_interfaces_of_the_engine() -> None:
    undeclared = [
        f"aio.py:{line} uses {name}"
        for line, name in _private_uses(ast.parse(AIO.read_text()))
        if not _declared_internal(name)
    ]
    assert undeclared == []


def test_the_interface_check_sees_a_private_use() -> None:
    """Not vacuous: the way aio.py reached into the engine before is reported."""
    tree = ast.parse("engine._publisher.subscribe(task_id)\nengine_module._announced(x, box)\n")
    found = [name for _, name in _private_uses(tree)]
    assert sorted(found) == ["_announced", "_publisher"]
    assert not _declared_internal("_publisher")
    assert not _declared_internal("_check_open")
    assert _declared_internal("_open_wait")
