"""The `numbanorm` command: bench on a small custom shape (JSON output parsed), and info."""
import json

import pytest

from numbanorm.__main__ import main


def test_bench_json(capsys):
    main(["bench", "--op", "layer_norm", "--op", "batch_norm", "--shape", "16,24",
          "--repeats", "1", "--min-run", "0.001", "--json"])
    report = json.loads(capsys.readouterr().out)
    rows = report["rows"]
    assert [(r["op"], r["pass"]) for r in rows] == [
        ("layer_norm", "forward"), ("layer_norm", "backward"),
        ("batch_norm", "forward"), ("batch_norm", "backward")]
    for r in rows:
        assert r["median_s"] > 0 and r["gb_per_s"] > 0
        assert r["min_s"] <= r["median_s"] <= r["p90_s"] <= r["max_s"]
        assert r["max_rel_err"] < 1e-5  # accuracy column against float64
        assert r["vs_numpy"] > 0
    assert report["triad_gb_per_s"] > 0


def test_bench_out_json(capsys):
    """--out: numbanorm writes into preallocated out=/dx_out= arrays, still checked against
    float64 (the accuracy column comes from the timed call)."""
    main(["bench", "--op", "group_norm", "--shape", "4,64,5", "--dtype", "float64",
          "--repeats", "1", "--min-run", "0.001", "--no-torch", "--json", "--out"])
    report = json.loads(capsys.readouterr().out)
    assert report["outputs_preallocated"] is True
    assert [r["pass"] for r in report["rows"]] == ["forward", "backward"]
    assert all(r["max_rel_err"] < 1e-12 for r in report["rows"])


def test_bench_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--shape", "0,3"])
    with pytest.raises(SystemExit):
        main(["bench", "--device", "tpu"])


def test_bench_half_json(capsys):
    """16-bit cases: numbanorm's own float32 and NumPy's route through float32 beside NumPy in
    16 bits, the errors at 16-bit rounding."""
    pytest.importorskip("ml_dtypes")
    main(["bench", "--op", "rms_norm", "--shape", "8,24", "--dtype", "bfloat16", "--dtype",
          "float16", "--repeats", "1", "--min-run", "0.001", "--no-torch", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["dtype"], r["pass"]) for r in rows] == [
        ("bfloat16", "forward"), ("bfloat16", "backward"), ("float16", "forward"),
        ("float16", "backward")]
    for r in rows:
        assert r["vs_f32"] > 0 and r["vs_np-f32"] > 0 and r["vs_numpy"] > 0
        assert r["max_rel_err"] < (2 ** -8 if r["dtype"] == "bfloat16" else 2 ** -11)


def test_bench_cuda_json(capsys):
    """The GPU table's machinery, on a tiny shape (in the simulator when there is no GPU)."""
    main(["bench", "--device", "cuda", "--op", "layer_norm", "--op", "batch_norm", "--shape",
          "4,8", "--dtype", "float32", "--dtype", "float16", "--repeats", "1", "--min-run", "0",
          "--no-torch", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["gpu"] and report["copy_gb_per_s"] > 0
    assert [(r["op"], r["dtype"], r["pass_"]) for r in report["rows"]] == [
        (op, dt, p) for op in ("layer_norm", "batch_norm") for dt in ("float32", "float16")
        for p in ("forward", "backward")]
    assert all(r["median_s"] > 0 for r in report["rows"])
    main(["bench", "--device", "cuda", "--op", "zscore_axis0", "--shape", "4,8", "--repeats",
          "1", "--min-run", "0", "--no-torch", "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [(r["op"], r["pass_"]) for r in rows] == [("zscore_axis0", "forward")]


def test_info(capsys):
    main(["info"])
    out = capsys.readouterr().out
    assert "numba" in out and "threads" in out and "gpu" in out


def test_load_warning(monkeypatch):
    """bench warns when the load average exceeds the cores (issue 29), and only then."""
    import os

    from numbanorm.bench import load_warning
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0 * (os.cpu_count() or 1), 0.0, 0.0))
    assert "load average" in load_warning(2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert load_warning(2) is None


def test_warmup_refuses_unknown_names(capsys):
    from numbanorm.warmup import warmup
    with pytest.raises(ValueError, match="unknown op or dtype 'float8'"):
        warmup(["layer_norm"], ["float8"])
    with pytest.raises(SystemExit):
        main(["warmup", "--ops", "softmax"])
    assert "invalid choice" in capsys.readouterr().err


def test_info_reports_the_threading_layer_in_use():
    """`numbanorm info` names the layer Numba runs parallel kernels on, not the request
    (issue 33: 'threadsafe' was shown where 'omp' ran)."""
    from numbanorm import info
    facts = info()
    assert facts["threading_layer"] in ("omp", "tbb", "workqueue")
    assert "threading_layer_requested" in facts
