"""Every ```python sample in docs/ and README.md is checked; the marker convention is in
docs/README.md ("Code samples") and repeated here.

By default a sample runs as a script of its own in a fresh temporary directory (the repository
root on ``PYTHONPATH``, so ``tests.handlers...`` and ``examples...`` import) and must exit 0.
A marker comment on the line just before the opening fence changes that:

* ``<!-- sample: with-engine -->``: runs after a prelude that provides ``engine`` (a started
  ``TaskEngine`` on a ``MemoryStore``), ``task_id`` (a pending task of type ``"example"`` that
  no handler runs), ``payload`` (a dict), ``log`` (a logger) and ``taskengine``.
* ``<!-- sample: file PATH -->``: the block is the file PATH (relative); it is written into the
  directory of every sample of the same page and compiled, never run on its own.
* ``<!-- sample: continue -->``: runs after the page's previous sample, in the same script.
* ``<!-- sample: fragment -->``: an excerpt of a larger program; only compiled.
* ``<!-- sample: signature -->``: an API signature in the reference; neither compiled nor run.
* ``<!-- sample: postgres -->``: needs PostgreSQL; runs with ``$TASKENGINE_TEST_POSTGRES_DSN``
  set (skipped with the reason without it; failed when ``CI=true``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[2]
_BLOCK = re.compile(
    r"(?:^<!--\s*sample:\s*(?P<marker>[\w-]+)(?:[ \t]+(?P<arg>\S+))?\s*-->[ \t]*\n)?"
    r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$",
    re.M | re.S,
)
MARKERS = {None, "with-engine", "file", "continue", "fragment", "signature", "postgres"}
PRELUDE = """\
import logging

import taskengine

log = logging.getLogger("sample")
engine = taskengine.TaskEngine().start()
payload = {"example": True}
task_id = engine.create("example", payload, retain_for=None)
"""


@attrs.frozen
class Sample:
    page: str
    number: int
    line: int
    marker: str | None
    arg: str | None
    code: str


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def samples() -> list[Sample]:
    found = []
    for path in _pages():
        text = path.read_text()
        for number, match in enumerate(_BLOCK.finditer(text), start=1):
            found.append(
                Sample(
                    page=str(path.relative_to(ROOT)),
                    number=number,
                    line=text.count("\n", 0, match.start("code")) + 1,
                    marker=match.group("marker"),
                    arg=match.group("arg"),
                    code=match.group("code"),
                )
            )
    return found


ALL = samples()


def _chain(sample: Sample) -> list[Sample]:
    """The sample and the earlier samples of its page it continues."""
    page = [s for s in ALL if s.page == sample.page and s.number <= sample.number]
    chain = [page[-1]]
    for earlier in reversed(page[:-1]):
        if chain[0].marker != "continue":
            break
        chain.insert(0, earlier)
    return chain


def _script(chain: list[Sample]) -> str:
    body = "\n".join(part.code for part in chain)
    if chain[0].marker != "with-engine":
        return body
    # Inside a function run under the main guard: worker processes may import __main__.
    inner = textwrap.indent(PRELUDE + "try:\n" + textwrap.indent(body, "    "), "    ")
    inner += "    finally:\n        engine.stop()\n"
    return f"def _sample():\n{inner}\n\nif __name__ == '__main__':\n    _sample()\n"


def test_samples_are_found_and_markers_are_known() -> None:
    assert len(ALL) > 20
    unknown = [f"{s.page}:{s.line} {s.marker}" for s in ALL if s.marker not in MARKERS]
    assert not unknown, f"unknown sample markers {unknown}"
    files = [s for s in ALL if s.marker == "file"]
    assert all(s.arg and not Path(s.arg).is_absolute() for s in files)


def test_the_with_engine_prelude_runs_a_sample(tmp_path: Path) -> None:
    sample = Sample("x.md", 1, 1, "with-engine", None, "print(engine.get(task_id).status)\n")
    script = tmp_path / "s.py"
    script.write_text(_script([sample]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.stdout == "pending\n", done.stderr


@pytest.mark.parametrize("sample", ALL, ids=lambda s: f"{s.page}#{s.number}")
def test_sample(sample: Sample, tmp_path: Path) -> None:
    if sample.marker == "signature":
        return
    chain = _chain(sample)
    code = _script(chain)
    compile(code, f"{sample.page}:{sample.line}", "exec")
    if sample.marker in ("fragment", "file"):
        return
    needs_postgres = any(part.marker == "postgres" for part in chain)
    if needs_postgres and not os.environ.get("TASKENGINE_TEST_POSTGRES_DSN"):
        if os.environ.get("CI"):
            pytest.fail("TASKENGINE_TEST_POSTGRES_DSN is not set in CI")
        pytest.skip("needs TASKENGINE_TEST_POSTGRES_DSN")
    for other in ALL:
        if other.page == sample.page and other.marker == "file" and other.arg:
            target = tmp_path / other.arg
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(other.code)
    script = tmp_path / "sample.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"{sample.page} line {sample.line}:\n{done.stdout}\n{done.stderr}"
