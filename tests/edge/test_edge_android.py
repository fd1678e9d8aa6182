"""edge.android: the adb script (benchmark_model and benchmark_litert_model) and the output parser.

There is no Android device here. `data/litert_benchmark_session.log` is real output: LiteRT's
`litert-benchmark` (the Python build of benchmark_litert_model in ai-edge-litert) run on this host between the
marker lines an edge.android script prints (`data/make_litert_benchmark_session.sh` made it), including a run
that is not fully accelerated and a failed one. No benchmark_model binary runs on this host, so
`data/benchmark_model_session.log` is written in the line format LiteRT's benchmark_model prints (its source and
public logs: an `INFO: ` prefix, a warm-up `count=` line, a timed `count=` line with optional p5/median/p95, the
"Inference timings in us" summary, exponent notation, a delegate line, a failed NNAPI run); its figures are
illustrative, not a measurement of any phone.
"""

import os
import stat

import pytest

from edge import android

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
LOG = os.path.join(DATA, "benchmark_model_session.log")
LITERT_LOG = os.path.join(DATA, "litert_benchmark_session.log")


def test_parse_one_run():
    text = open(LOG).read().split("config=gpu")[0]
    out = android.parse_benchmark_output(text)
    assert out["init_us"] == 4785 and out["first_inference_us"] == 7331
    assert out["warmup_avg_us"] == 5321.3 and out["inference_avg_us"] == 5276.09
    assert out["runs"] == 190 and out["warmup_runs"] == 95
    assert (out["min_us"], out["max_us"], out["avg_us"], out["std_us"]) == (5187, 5902, 5276.09, 81)
    assert (out["p5_us"], out["median_us"], out["p95_us"]) == (5203, 5262, 5410)
    assert out["memory_overall_mb"] == 13.9688


def test_parse_plain_lines_and_exponents():
    text = (
        "count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442\n"
        "Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684\n"
    )
    out = android.parse_benchmark_output(text)
    assert out["runs"] == 50 and out["avg_us"] == 249684 and "warmup_runs" not in out
    out = android.parse_benchmark_output(
        "Inference timings in us: Init: 1.20412e+06, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06"
    )
    assert out["init_us"] == pytest.approx(1204120) and out["inference_avg_us"] == pytest.approx(2950340)


def test_parse_log_splits_runs_and_keeps_failures():
    rows = android.parse_log(open(LOG).read())
    assert [(r["file"], r["config"]) for r in rows] == [
        ("model_int8.tflite", "cpu_1t_xnnpack"),
        ("model_int8.tflite", "gpu"),
        ("model_int8.tflite", "nnapi"),
    ]
    assert rows[0]["median_us"] == 5262
    gpu = rows[1]
    assert gpu["delegate"] == "TfLiteGpuDelegateV2" and (gpu["delegated_nodes"], gpu["total_nodes"]) == (66, 68)
    assert gpu["runs"] == 50 and gpu["warmup_runs"] == 1 and gpu["avg_us"] == pytest.approx(2950340)
    assert "Benchmarking failed" in rows[2]["error"]
    table = android.format_rows(rows)
    assert "| model_int8.tflite | cpu_1t_xnnpack | 5.26 | 5.19-5.90 | 0.08 | 190 | 4.8 | - |" in table
    assert "| model_int8.tflite | gpu | 2950.34 |" in table and "FAILED" in table


def test_not_benchmark_output_is_an_error():
    with pytest.raises(ValueError, match="not a completed benchmark_model / benchmark_litert_model run"):
        android.parse_benchmark_output("Segmentation fault")
    with pytest.raises(ValueError, match="not the output of an edge.android script"):
        android.parse_log("hello\n")


def test_parse_real_litert_benchmark_output():
    rows = android.parse_log(open(LITERT_LOG).read())
    assert [(r["file"], r["config"]) for r in rows] == [
        ("model_int8.tflite", "litert_cpu_1t"),
        ("model_int8.tflite", "litert_cpu_2t"),
        ("model_int8_uint8io.tflite", "litert_cpu_1t"),
        ("model_int8_uint8io.tflite", "litert_cpu_2t"),
        ("missing.tflite", "litert_cpu_1t"),
    ]
    text = open(LITERT_LOG).read()
    first = text.split("config=litert_cpu_1t")[1]
    median_ms = float(first.split("Inference (median):")[1].split("ms")[0])
    assert rows[0]["median_us"] == pytest.approx(median_ms * 1e3)
    for r in rows[:4]:
        assert r["tool"] == "litert-benchmark" and r["runs"] == 20 and r["warmup_runs"] == 3
        assert 0 < r["min_us"] <= r["p5_us"] <= r["median_us"] <= r["p95_us"] <= r["max_us"]
    assert [r["fully_accelerated"] for r in rows[:4]] == [True, True, False, False]  # uint8 I/O: one op off XNNPACK
    assert "Model file not found: missing.tflite" in rows[4]["error"]
    table = android.format_rows(rows)
    assert "| model_int8.tflite | litert_cpu_1t |" in table and "| no |" in table and "| yes |" in table


def test_script_pushes_and_runs_every_config(tmp_path):
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"x")
    out = tmp_path / "run.sh"
    android.write_script(
        [str(model)],
        str(out),
        benchmark_binary="/opt/bm/benchmark_model",
        litert_benchmark_binary="/opt/bm/benchmark_litert_model",
        threads=(1, 4),
    )
    text = out.read_text()
    assert os.stat(out).st_mode & stat.S_IXUSR
    for binary in ("benchmark_model", "benchmark_litert_model"):
        assert f"adb push /opt/bm/{binary} {android.DEVICE_DIR}/{binary}" in text
    assert f"adb push {model} {android.DEVICE_DIR}/model_int8.tflite" in text
    for config, flag in (
        ("cpu_1t_xnnpack", "benchmark_model --graph"),
        ("cpu_4t_xnnpack", "--num_threads=4"),
        ("gpu", "--use_gpu=true"),
        ("nnapi", "--use_nnapi=true"),
        ("litert_cpu_1t", "benchmark_litert_model --graph"),
        ("litert_cpu_4t", "--use_cpu=true"),
        ("litert_gpu", "--use_cpu=false"),
    ):
        assert f"{android.MARKER} file=model_int8.tflite config={config}" in text and flag in text


def test_script_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        android.write_script([str(tmp_path / "nope.tflite")], str(tmp_path / "s.sh"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="not .tflite"):
        android.write_script([str(tmp_path / "m.onnx")], str(tmp_path / "s.sh"))
    with pytest.raises(ValueError, match="at least one"):
        android.write_script([], str(tmp_path / "s.sh"))


def test_command_line(tmp_path, capsys):
    assert android.main([f"--parse={LITERT_LOG}"]) == 0
    assert "| model_int8.tflite | litert_cpu_2t |" in capsys.readouterr().out
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    assert android.main([f"--model={model}", f"--out={tmp_path / 'run.sh'}", "--threads=2"]) == 0
    assert "config=litert_cpu_2t" in (tmp_path / "run.sh").read_text()


@pytest.mark.parametrize(
    "argv,message",
    [
        ([], "--model (to write a script) or --parse=LOG"),
        (["--parse=/nonexistent/log"], "--parse=/nonexistent/log: expected a saved output"),
        (["--model=/nonexistent/m.tflite"], "--model=/nonexistent/m.tflite: expected an existing .tflite file"),
        (["--model=m.tflite", "--threads=0"], "--threads=0: expected a positive integer"),
    ],
)
def test_bad_input_is_one_line_exit_2(argv, message, capsys):
    assert android.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_parse_of_a_file_that_is_not_a_log(tmp_path, capsys):
    (tmp_path / "x.log").write_text("hello\n")
    assert android.main([f"--parse={tmp_path / 'x.log'}"]) == 2
    assert "not the output of an edge.android script" in capsys.readouterr().err
