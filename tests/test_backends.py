"""The three backends (CPU kernels, CUDA kernels, Dask graphs of CPU calls) are reached by one
placement step and keep one contract: one set of cases through all three gives the float64
oracle's numbers, Dask's whatever the chunking; and the import graph has no loop, with no
backend importing an API module."""
import ast
import pathlib

import numpy as np
import pytest

import numbanorm as nbn
from numbanorm import _device
from conftest import assert_close
import oracle

da = pytest.importorskip("dask.array")
cuda = _device.cuda()  # the simulator stands in when there is no GPU

ROOT = pathlib.Path(nbn.__file__).parent
API = {"numbanorm", "numbanorm.functional", "numbanorm.layers", "numbanorm.scaling",
       "numbanorm.stats", "numbanorm.preprocessing"}


def _on_cpu(x):
    return x


def _on_gpu(x):
    return cuda.to_device(x)


def _on_dask(x, chunks):
    return da.from_array(x, chunks=chunks)


def _back(y):
    if _device.is_dask_array(y):
        return y.compute()
    return y if isinstance(y, np.ndarray) else y.copy_to_host()


# (name, call, oracle): every data function, a few deep-learning ops
CASES = [
    ("zscore", lambda x: nbn.zscore(x, (0, 2)), lambda x: oracle.zscore(x, (0, 2))),
    ("zscore_omit", lambda x: nbn.zscore(x, 1, nan_policy="omit"),
     lambda x: oracle.zscore(x, 1, omit=True)),
    ("minmax_scale", lambda x: nbn.minmax_scale(x, axis=(1, 2)),
     lambda x: oracle.minmax_scale(x, axis=(1, 2))),
    ("normalize", lambda x: nbn.normalize(np.nan_to_num(x) if isinstance(x, np.ndarray) else x,
                                         2.0, 0),
     lambda x: oracle.normalize(np.nan_to_num(x), 2.0, 0)),
    ("layer_norm", lambda x: nbn.layer_norm(x, (5, 4)), lambda x: oracle.layer_norm(
        x, (5, 4))["y"]),
    ("batch_norm", lambda x: nbn.batch_norm(x, training=True),
     lambda x: oracle.batch_norm_train(x)["y"]),
    ("group_norm_channels_last", lambda x: nbn.group_norm(x, 2, channel_axis=-1),
     lambda x: oracle.group_norm(x.transpose(0, 2, 1), 2)["y"].transpose(0, 2, 1)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_three_backends_one_set_of_cases(rng, name, dtype):
    _, call, ref = next(c for c in CASES if c[0] == name)
    x = (rng.standard_normal((6, 5, 4)) * 2.0 + 3.0).astype(dtype)
    if name in ("zscore_omit", "minmax_scale"):
        x[2, 3, 1] = np.nan
    if name == "normalize":
        x = np.nan_to_num(x)
    expected = ref(x)
    results = {"cpu": call(_on_cpu(x)), "cuda": call(_on_gpu(x))}
    for chunks in ((6, 5, 4), (2, 3, 4), (5, 2, 3)):
        results[f"dask{chunks}"] = call(_on_dask(x, chunks))
    for where, y in results.items():
        y = _back(y)
        assert y.dtype == dtype, where
        assert_close(y, expected, dtype, name=f"{name} on {where}")


def test_moments_on_three_backends(rng):
    x = rng.standard_normal((7, 3, 5))
    x[1, 1, 1] = np.nan
    ref = nbn.moments(x, (0, 2), "omit")
    for m in (nbn.moments(_on_gpu(x), (0, 2), "omit"),
              nbn.moments(_on_dask(x, (3, 2, 2)), (0, 2), "omit").compute()):
        for f in ("count", "mean", "m2", "min", "max"):
            np.testing.assert_allclose(getattr(m, f), getattr(ref, f), rtol=1e-12, err_msg=f)


def _imports():
    """{module: the numbanorm modules it imports, at the top or inside functions}."""
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = list(f.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = f
    graph = {}
    for mod, f in mods.items():
        pkg = mod.split(".") if f.name == "__init__.py" else mod.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg[:len(pkg) - node.level + 1] if node.level else []
                name = ".".join(base + ([node.module] if node.module else []))
                for a in node.names:
                    deps.add(f"{name}.{a.name}" if f"{name}.{a.name}" in mods else name)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names)
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
                deps.update(a.value for a in node.args[:1] if isinstance(a, ast.Constant))
        graph[mod] = {d for d in deps if d in mods and d != mod}
    return graph


def test_import_graph_has_no_loop_and_backends_stay_below_the_api():
    graph = _imports()
    assert {"numbanorm.cpu._host", "numbanorm.cuda._host", "numbanorm.dask._host"} <= set(graph)
    state, path = {}, []

    def visit(m):
        state[m] = "open"
        path.append(m)
        for d in sorted(graph[m]):
            assert state.get(d) != "open", "import loop: " + " -> ".join(
                path[path.index(d):] + [d])
            if d not in state:
                visit(d)
        path.pop()
        state[m] = "done"
    for m in sorted(graph):
        if m not in state:
            visit(m)
    # the backends and the layers they stand on (the private modules); the bench and the CLI
    # are users of the API
    below = [m for m in graph if m.split(".")[1:2] in (["cpu"], ["cuda"], ["dask"])
             or (m.split(".")[-1].startswith("_") and not m.endswith("__main__"))]
    assert "numbanorm._placement" in below and "numbanorm.dask" in below
    for m in below:
        assert not graph[m] & API, f"{m} imports the API module(s) {graph[m] & API}"


@pytest.mark.parametrize("shape,axis", [((4, 0), 0), ((0, 5), 0), ((4, 0), 1), ((7,), None),
                                        ((3, 1, 4), (0, 1))])
def test_empty_and_degenerate_shapes_on_three_backends(shape, axis):
    """Empty reduced or kept axes, 1-d input and size-1 axes: the same results everywhere (the
    column kernels once divided by a zero column count)."""
    x = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) * 0.5 - 1.0
    dim = tuple(range(len(shape))) if axis is None else axis
    for name, f in (("zscore", lambda a: nbn.zscore(a, axis)),
                    ("minmax_scale", lambda a: nbn.minmax_scale(a, axis=axis)),
                    ("normalize", lambda a: nbn.normalize(a, 2.0, dim))):
        ref = f(x)
        assert ref.shape == shape
        for where, a in (("cuda", _on_gpu(x)), ("dask", _on_dask(x, x.shape))):
            np.testing.assert_allclose(_back(f(a)), ref, equal_nan=True, err_msg=f"{name} {where}")
    m = nbn.moments(x, axis)
    for got in (nbn.moments(_on_gpu(x), axis), nbn.moments(_on_dask(x, x.shape), axis).compute()):
        for f in ("count", "mean", "m2", "min", "max"):
            np.testing.assert_array_equal(getattr(got, f), getattr(m, f), err_msg=f)
