"""edge.gpu_delegate: the GPU delegate verdict on models with an op it refuses and on ones it takes whole."""

import numpy as np
import pytest

from edge import gpu_delegate


def _convert(fn, spec, representative=None, int16x8=False):
    import tensorflow as tf

    f = tf.function(fn, input_signature=[spec])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if representative is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        if int16x8:
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            ]
    return converter.convert()


@pytest.fixture(scope="module")
def models():
    """A small conv + softmax model as float32 and int16x8, and one with SEGMENT_SUM (not in the GPU delegate)."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    kernel = tf.constant(rng.normal(size=(3, 3, 3, 4)).astype("float32"))
    spec = tf.TensorSpec([1, 8, 8, 3], tf.float32)

    def conv(x):
        y = tf.nn.relu(tf.nn.conv2d(x, kernel, 1, "SAME"))
        return tf.nn.softmax(tf.reduce_mean(y, axis=[1, 2]))

    def segment(x):
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
        return tf.math.segment_sum(tf.reshape(y, [-1]), tf.repeat(tf.range(4), 64))

    def rep():
        for _ in range(4):
            yield [rng.uniform(0, 1, (1, 8, 8, 3)).astype("float32")]

    return {
        "float32": _convert(conv, spec),
        "int16x8": _convert(conv, spec, rep, int16x8=True),
        "segment": _convert(segment, spec),
    }


def test_an_op_the_delegate_refuses_is_named(models):
    v = gpu_delegate.verdict(models["segment"])
    assert not v["gpu_compatible"]
    assert [o["op"] for o in v["not_on_gpu"]] == ["SEGMENT_SUM"] and "SEGMENT_SUM" in v["not_on_gpu"][0]["why"]
    assert "SEGMENT_SUM" in gpu_delegate.summary(v) and v["source"] in (gpu_delegate.ANALYZER, gpu_delegate.RULES)


def test_int16_activations_are_refused_and_float_is_taken_whole(models):
    assert gpu_delegate.verdict(models["float32"]) == {
        "gpu_compatible": True,
        "not_on_gpu": [],
        "source": gpu_delegate.verdict(models["float32"])["source"],
    }
    v = gpu_delegate.verdict(models["int16x8"])
    assert not v["gpu_compatible"] and {"CONV_2D", "QUANTIZE"} <= {o["op"] for o in v["not_on_gpu"]}


def test_the_checker_in_use_is_the_analyzer_when_it_checks(models):
    """When this TensorFlow's Analyzer flags SEGMENT_SUM, it is the source; when it says every model is
    compatible (TF 2.21 wheels), the rules are, and the Analyzer's printout of the canary says so."""
    text = gpu_delegate.analyzer_text(models["segment"])
    assert "SEGMENT_SUM" in text and "Op#" in text
    flagged = [o["op"] for o in gpu_delegate.parse(text)]
    assert gpu_delegate.analyzer_checks() == ("SEGMENT_SUM" in flagged)
    expected = gpu_delegate.ANALYZER if gpu_delegate.analyzer_checks() else gpu_delegate.RULES
    assert gpu_delegate.verdict(models["float32"])["source"] == expected


def test_parse_reads_the_warning_under_its_op():
    """The Analyzer's format (tensorflow/lite/python/analyzer_wrapper/model_analyzer.cc): a warning line under
    the op it concerns, and a subgraph summary that is not an op."""
    text = (
        "Subgraph#0 main(T#0) -> [T#3]\n  Op#0 CONV_2D(T#0, T#1, T#2) -> [T#4]\n"
        "  Op#1 SEGMENT_SUM(T#4, T#5) -> [T#3]\nGPU COMPATIBILITY WARNING: Not supported op SEGMENT_SUM\n\n"
        "GPU COMPATIBILITY WARNING: Subgraph#0 has GPU delegate compatibility issues at nodes 1 with TFLite "
        "runtime version 2.21.0\n"
    )
    assert gpu_delegate.parse(text) == [{"index": 1, "op": "SEGMENT_SUM", "why": "Not supported op SEGMENT_SUM"}]


def test_recommend_prefers_float16_and_never_a_refused_format():
    ok = {"gpu_compatible": True, "not_on_gpu": []}
    bad = {"gpu_compatible": False, "not_on_gpu": [{"index": 0, "op": "X", "why": "y"}]}
    assert gpu_delegate.recommend({"float32": ok, "float16": ok, "int8": ok})["format"] == "float16"
    assert gpu_delegate.recommend({"float32": ok, "float16": bad, "int16x8": bad})["format"] == "float32"
    assert gpu_delegate.recommend({"int16x8": bad})["format"] is None
