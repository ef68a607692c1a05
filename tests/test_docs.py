"""The documentation cannot rot: every public name has a numpydoc docstring (its sections and
every parameter checked here; the docs build renders them with numpydoc, warnings as errors)
whose examples run as doctests, and the README's code blocks run as written."""
import doctest
import importlib.util
import inspect
import os
import re
import types

import numpy as np
import pytest

import numbanorm

PUBLIC = sorted(n for n in dir(numbanorm) if not n.startswith("_")
                and not isinstance(getattr(numbanorm, n), types.ModuleType))

# The forward records are built by the forward functions, never by users: their docstrings
# document attributes, not constructor arguments.
RECORDS = ("Saved", "ScalingSaved", "MixSaved")
SECTION = re.compile(r"^(\w[\w ]*)\n-+\n", re.M)


def _sections(doc):
    """{title: body} of a numpydoc docstring (the summary under '')."""
    doc = inspect.cleandoc(doc)
    parts = SECTION.split(doc)
    out = {"": parts[0]}
    for title, body in zip(parts[1::2], parts[2::2]):
        out[title] = body
    return out


def _documented(body):
    """The names a Parameters section documents: 'a, b : type' or 'a' lines at its margin."""
    names = set()
    for line in body.splitlines():
        if line and not line[0].isspace():
            names.update(n.strip().lstrip("*") for n in line.split(" : ")[0].split(","))
    return names


@pytest.mark.parametrize("name", PUBLIC)
def test_numpydoc_docstring(name):
    """numpydoc's sections (the docs build renders them with numpydoc, warnings as errors):
    a summary, every parameter of the signature documented and none that is not, a Returns
    section for functions, an Examples section."""
    obj = getattr(numbanorm, name)
    doc = obj.__doc__
    assert doc and doc.strip(), name
    sections = _sections(doc)
    assert sections[""].strip(), name
    assert "Examples" in sections, name
    is_class = isinstance(obj, type)
    if not is_class:
        assert "Returns" in sections, name
    if is_class and (name in RECORDS or issubclass(obj, Exception)):
        return
    params = [p.name for p in inspect.signature(obj).parameters.values()
              if p.name != "self"]
    documented = _documented(sections.get("Parameters", ""))
    assert set(params) == documented, (name, set(params) - documented,
                                       documented - set(params))


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples_run(name):
    """The examples of the name and of its methods, as doctests (np and nbn imported)."""
    obj = getattr(numbanorm, name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = finder.find(obj, f"numbanorm.{name}", module=False,
                        globs={"np": np, "nbn": numbanorm})
    assert tests and sum(len(t.examples) for t in tests) > 0, name
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    lines = []
    for test in tests:
        runner.run(test, out=lines.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(lines)


def _readme_blocks():
    text = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_code_blocks_run(tmp_path, monkeypatch):
    """Every python block of the README, in order, in one namespace (later blocks use
    earlier blocks' names). Blocks whose optional dependency is missing are skipped, and the
    GPU block runs only on a real GPU (the simulator would take minutes on its shapes)."""
    monkeypatch.chdir(tmp_path)
    blocks = _readme_blocks()
    assert len(blocks) >= 10
    needs = {"import torch": "torch", "import ml_dtypes": "ml_dtypes", "sklearn": "sklearn",
             "scipy.sparse": "scipy", "dask.array": "zarr", "from numba import cuda": "gpu"}
    ran, skipped = 0, []
    namespace = {}
    for block in blocks:
        missing = [mod for key, mod in needs.items() if key in block and not (
            _real_gpu() if mod == "gpu" else importlib.util.find_spec(mod))]
        if missing:
            skipped.append(missing)
            continue
        if "da.from_zarr" in block:  # the block's input, small, where it reads it
            import dask.array as da
            da.from_array(np.random.default_rng(0).standard_normal((1000, 8)), chunks=250
                          ).astype(np.float32).to_zarr("measurements.zarr")
        exec(compile(block, "README.md", "exec"), namespace)
        ran += 1
    assert ran >= len(blocks) - 2, skipped


def _real_gpu():
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    try:
        numbanorm._device.cuda()
    except numbanorm.CudaUnavailableError:
        return False
    return True
