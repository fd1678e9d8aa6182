"""edge.android: the adb script and the benchmark_model output parser.

There is no Android device here. `data/benchmark_model_session.log` is written in the exact line format that
LiteRT's benchmark_model prints (as in its source and in public logs: an `INFO: ` prefix, a warm-up `count=`
line, a timed `count=` line with optional p5/median/p95, the "Inference timings in us" summary, exponent
notation for large values, a delegate line, a failed NNAPI run); its figures are illustrative, not a
measurement of any phone.
"""

import os
import stat

import pytest

from edge import android

from edge_support import run_module

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "benchmark_model_session.log")


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
    text = ("count=50 first=249042 curr=250889 min=247067 max=254474 avg=249684 std=1442\n"
            "Inference timings in us: Init: 16242, First inference: 360262, Warmup (avg): 304586, Inference (avg): 249684\n")
    out = android.parse_benchmark_output(text)
    assert out["runs"] == 50 and out["avg_us"] == 249684 and "warmup_runs" not in out
    out = android.parse_benchmark_output(
        "Inference timings in us: Init: 1.20412e+06, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06")
    assert out["init_us"] == pytest.approx(1204120) and out["inference_avg_us"] == pytest.approx(2950340)


def test_parse_log_splits_runs_and_keeps_failures():
    rows = android.parse_log(open(LOG).read())
    assert [(r["file"], r["config"]) for r in rows] == [
        ("model_int8.tflite", "cpu_1t_xnnpack"), ("model_int8.tflite", "gpu"), ("model_int8.tflite", "nnapi")]
    assert rows[0]["median_us"] == 5262
    gpu = rows[1]
    assert gpu["delegate"] == "TfLiteGpuDelegateV2" and (gpu["delegated_nodes"], gpu["total_nodes"]) == (66, 68)
    assert gpu["runs"] == 50 and gpu["warmup_runs"] == 1 and gpu["avg_us"] == pytest.approx(2950340)
    assert "Benchmarking failed" in rows[2]["error"]
    table = android.format_rows(rows)
    assert "| model_int8.tflite | cpu_1t_xnnpack | 5.26 | 5.19-5.90 | 0.08 | 190 | 4.8 | - |" in table
    assert "| model_int8.tflite | gpu | 2950.34 |" in table and "FAILED" in table


def test_not_benchmark_output_is_an_error():
    with pytest.raises(ValueError, match="not a completed benchmark_model run"):
        android.parse_benchmark_output("Segmentation fault")
    with pytest.raises(ValueError, match="not the output of an edge.android script"):
        android.parse_log("hello\n")


def test_script_pushes_and_runs_every_config(tmp_path):
    model = tmp_path / "model_int8.tflite"
    model.write_bytes(b"x")
    out = tmp_path / "run.sh"
    android.write_script([str(model)], str(out), benchmark_binary="/opt/bm/benchmark_model", threads=(1, 4))
    text = out.read_text()
    assert os.stat(out).st_mode & stat.S_IXUSR
    assert f"adb push /opt/bm/benchmark_model {android.DEVICE_DIR}/benchmark_model" in text
    assert f"adb push {model} {android.DEVICE_DIR}/model_int8.tflite" in text
    for config, flag in (("cpu_1t_xnnpack", "--num_threads=1 --use_xnnpack=true"), ("cpu_4t_xnnpack", "--num_threads=4"),
                         ("gpu", "--use_gpu=true"), ("nnapi", "--use_nnapi=true")):
        assert f"{android.MARKER} file=model_int8.tflite config={config}" in text and flag in text


def test_script_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        android.write_script([str(tmp_path / "nope.tflite")], str(tmp_path / "s.sh"))
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="not .tflite"):
        android.write_script([str(tmp_path / "m.onnx")], str(tmp_path / "s.sh"))
    with pytest.raises(ValueError, match="at least one"):
        android.write_script([], str(tmp_path / "s.sh"))


def test_command_line_parse():
    proc = run_module("edge.android", f"--parse={LOG}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| model_int8.tflite | gpu |" in proc.stdout
