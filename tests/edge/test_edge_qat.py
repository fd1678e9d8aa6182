"""edge.qat: the pre-check, the QAT model of B0 and Lite0 (weights copied by name), the fine-tune command."""

import json
import os

import numpy as np
import pytest
from edge_support import CLASSES, SIZE, run_module

import keras_effnet
from edge import convert, litert, qat
from keras_effnet import keras_versions
from keras_effnet import twin as twin_lib
from training import data as training_data


def _b0():
    return keras_effnet.build(0, input_shape=(SIZE, SIZE, 3), classes=CLASSES)


def test_rejected_layers_lists_every_unsupported_layer_of_b0_by_name_and_type():
    rejected = qat.rejected_layers(twin_lib.twin(_b0()))
    by_type = {}
    for name, kind, _ in rejected:
        by_type.setdefault(kind, []).append(name)
    assert by_type.pop("Rescaling") == ["rescaling"]
    assert by_type.pop("Normalization") == ["normalization"]
    excites = by_type.pop("Multiply")
    assert len(excites) == 16 and all(n.endswith("_se_excite") for n in excites)  # one per MBConv block of B0
    assert by_type == {}


def test_quantization_error_names_every_layer():
    K = keras_versions.tf_keras()
    inp = K.layers.Input((8, 8, 3))
    inner = K.Sequential([K.layers.Conv2D(2, 1)], name="inner")
    x = K.layers.LayerNormalization(name="ln")(inp)
    x = K.layers.Activation("elu", name="elu")(x)
    x = inner(x)
    model = K.Model(inp, x)
    rejected = qat.rejected_layers(model)
    assert [(n, k) for n, k, _ in rejected] == [
        ("ln", "LayerNormalization"),
        ("elu", "Activation"),
        ("inner", "Sequential"),
    ]
    message = str(qat.QuantizationError("m", rejected))
    for text in (
        "3 layer(s)",
        "ln (LayerNormalization)",
        "elu (Activation): activation 'elu'",
        "inner (Sequential): a model nested",
    ):
        assert text in message


@pytest.mark.parametrize(
    "family,phi", [("efficientnet", 0), ("lite", 0), ("efficientnet", 0.5), ("lite", 2), ("v2", 0)]
)
def test_every_family_member_is_quantizable(family, phi):
    model = keras_effnet.build(phi, family=family, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    assert qat.quantize(model, check_only=True) == []


@pytest.mark.slow  # about a minute on 2 cores; V2-B0 above covers the same code path in the default suite
def test_efficientnetv2_s_quantizes_with_rescaling_only_preprocessing():
    """V2-S/M/L scale to [-1, 1] with Rescaling alone (no Normalization), V2-B0..B3 hold constant statistics
    in the Normalization's config rather than as weights: both go through quantize."""
    model = keras_effnet.build_variant("efficientnetv2-s", input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    q = qat.quantize(model)
    assert sum(type(layer).__name__ == "QuantizeWrapperV2" for layer in q.layers) > 100


def test_quantize_copies_the_float_weights_by_name():
    model = _b0()
    q = qat.quantize(model)
    by_layer = {}
    for v in q.weights:  # the wrapped layer's own variables keep their names; quantizer variables are quant_*
        by_layer.setdefault(v.name.split("/")[0], []).append(v.numpy())
    checked = 0
    for layer in model.layers:
        want = layer.get_weights()
        if layer.name == "normalization":  # re-expressed as a 1x1 DepthwiseConv2D: 1/std and -mean/std
            mean, var = want[0], want[1]
            kernel, bias = by_layer["normalization"][:2]
            np.testing.assert_allclose(kernel.ravel(), 1 / np.sqrt(var), rtol=1e-6)
            np.testing.assert_allclose(bias, -mean / np.sqrt(var), rtol=1e-6)
            checked += len(want)
        elif want:
            got = by_layer[layer.name]
            assert len(got) == len(want), layer.name
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b, err_msg=layer.name)
            checked += len(want)
    assert checked == len(model.weights) > 300
    assert sum(type(layer).__name__ == "QuantizeWrapperV2" for layer in q.layers) > 100


@pytest.mark.parametrize("family", ["efficientnet", "lite", "v2"])
def test_qat_model_normalises_with_the_float_models_statistics(family):
    """tfmot's clone + set_weights skips Normalization.finalize_state; quantize must not (mean 0 / var 1 otherwise)."""
    keras = keras_versions.keras3()
    K = keras_versions.tf_keras()
    model = keras_effnet.build(0, family=family, input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    q = qat.quantize(model)
    x = np.random.default_rng(1).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    want = keras.Model(model.input, model.get_layer("normalization").output)(x).numpy()
    probe = K.Model(q.input, q.get_layer("quant_normalization").output)
    probe(x, training=True)  # one training-mode call sets the input, rescaling and normalization ranges
    got = probe(x, training=False).numpy()
    # Three 8-bit fake-quants on the way whose moving-average ranges are still settling after one call; the stale
    # statistics (mean 0, variance 1) would be off by more than 2 everywhere.
    assert np.abs(got - want).max() < 0.25
    assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


def test_calibrate_ranges_sets_activation_ranges_from_data_and_changes_nothing_else():
    """tfmot starts every activation range at [-6, 6] and moves it 0.1% per step; calibration sets it from the
    data, with BatchNormalization inferring from its moving statistics, and changes no other variable."""
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize
    model = keras_effnet.build(0, family="lite", input_shape=(SIZE, SIZE, 3), classes=CLASSES)
    q = qat.quantize(model)
    is_range = lambda v: v.name.endswith(("_min:0", "_max:0"))  # noqa: E731
    before = [(v.name, v.numpy()) for v in q.variables if not is_range(v)]  # names repeat across layers
    rng = np.random.default_rng(3)
    batches = [rng.uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32) for _ in range(2)]
    batches[1][0, 0, 0] = (0.0, 255.0, 0.0)  # the widest input values appear only in the second batch
    assert qat.calibrate_ranges(q, batches) > 50  # one per quantized activation of Lite0
    assert quant_ops.MovingAvgQuantize is original
    after = [(v.name, v.numpy()) for v in q.variables if not is_range(v)]
    assert [n for n, _ in after] == [n for n, _ in before] and len(before) > 300
    for (name, value), (_, now) in zip(before, after):
        np.testing.assert_array_equal(now, value, err_msg=name)
    rescaling = {v.name.split("/")[-1]: float(v.numpy()) for v in q.get_layer("quant_rescaling").weights if is_range(v)}
    assert rescaling == {"output_min:0": 0.0, "output_max:0": 1.0}  # min/max over both batches, not [-6, 6]
    # The ranges are those of the network as it infers: they match the float model's stem BatchNormalization
    # output computed with the moving statistics (within the earlier layers' 8-bit rounding), not the batch
    # statistics' (which would give about [-3, 3] for any input).
    keras = keras_versions.keras3()
    stem = keras.Model(model.input, model.get_layer("stem_bn").output)
    values = np.concatenate([stem(b, training=False).numpy().ravel() for b in batches])
    low, high = (
        float(w.numpy())
        for w in q.get_layer("quant_stem_bn").weights
        if w.name.endswith(("output_min:0", "output_max:0"))
    )
    np.testing.assert_allclose([low, high], [min(values.min(), 0), max(values.max(), 0)], rtol=0.05)


def test_quantize_refuses_models_not_made_by_keras_effnet():
    keras = keras_versions.keras3()
    foreign = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Conv2D(2, 3)], name="foreign")
    with pytest.raises(ValueError, match="not built by keras_effnet"):
        qat.quantize(foreign)
    with pytest.raises(TypeError, match="model must be a Keras model"):
        qat.quantize("model.keras")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"epochs": -1}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"steps_per_epoch": 0}, "steps_per_epoch"),
        ({"calibration_batches": -1}, "calibration_batches"),
    ],
)
def test_fine_tune_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        qat.FineTuneConfig(**kwargs)


def test_qat_command_fine_tunes_lite0_and_the_result_converts_to_full_integer(lite0_probe_path, dataset, tmp_path):
    out = tmp_path / "Q"
    proc = run_module(
        "edge.qat",
        f"--model={lite0_probe_path}",
        f"--data_dir={dataset}",
        "--epochs=1",
        "--steps_per_epoch=2",
        "--batch_size=8",
        f"--out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((out / qat.QAT_INFO).read_text())
    assert info["fine_tune"]["epochs"] == 1 and info["fine_tune"]["steps_per_epoch"] == 2
    assert len(info["history"]["loss"]) == 1 and np.isfinite(info["history"]["loss"][0])
    assert sorted(os.listdir(out)) == sorted([qat.QAT_INFO, qat.QAT_WEIGHTS])  # no temporary files left

    from edge import data

    model = data.load_model(lite0_probe_path)
    q = qat.load(model, str(out))
    untrained = qat.quantize(model)
    moved = [not np.array_equal(a, b) for a, b in zip(q.get_weights(), untrained.get_weights())]
    assert any(moved)  # the fine-tuned weights (or ranges) were loaded, not the float ones
    blob = convert.convert(q, "qat_int8", io_dtype="uint8")
    assert convert.float_ops(blob) == []
    # Every image of the dataset (36): the comparison is between two computations, not an accuracy.
    splits = training_data.load_splits(dataset)
    images = np.concatenate(
        [
            x.numpy()
            for x, _ in training_data.make_dataset(
                list(splits.train_files) + list(splits.val_files),
                list(splits.train_labels) + list(splits.val_labels),
                image_size=SIZE,
                batch_size=64,
                training=False,
                augment="none",
            )
        ]
    )
    probs = litert.TFLiteModel(blob).predict(images)
    want = q.predict(images, verbose=0)
    # The full-integer file must give the QAT Keras model's answers. The probe reads its widest features, and the
    # ranges are calibrated before the two QAT steps. Measured over 6 fresh probes on these 36 images: top-1
    # agreement 0.94-1.00, mean probability error 0.010-0.020. On the 12 validation images alone, 5 probes gave
    # 0.83-1.00 and 0.014-0.037. With tfmot's [-6, 6] starting ranges (no calibration), the same 5 gave 0.50-1.00
    # and 0.037-0.063. With every feature standardised and no calibration, 0.42-1.00 and up to 0.37. A file that
    # computed something else would agree on about 1/3.
    diff = np.abs(probs - want)
    agree = np.mean(probs.argmax(-1) == want.argmax(-1))
    assert agree >= 0.75 and diff.mean() < 0.1, (agree, diff.mean())


def test_load_without_weights_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="qat_dir"):
        qat.load(_b0(), str(tmp_path))


@pytest.mark.parametrize(
    "case", ["no_model", "missing_data", "empty_data", "zero_epochs", "bad_strategy", "negative_calibration"]
)
def test_bad_command_line_is_one_line_exit_2_and_nothing_written(case, lite0_path, dataset, tmp_path, capsys):
    out = tmp_path / "Q"
    args = {"model": lite0_path, "data_dir": dataset, "out": str(out)}
    extra, message = [], None
    if case == "no_model":
        args.pop("model")
        message = "--model is required"
    elif case == "missing_data":
        args["data_dir"] = str(tmp_path / "nodata")
        message = "--data_dir=" + str(tmp_path / "nodata") + ": expected a folder"
    elif case == "empty_data":
        (tmp_path / "empty").mkdir()
        args["data_dir"] = str(tmp_path / "empty")
        message = "has no 'train' folder"
    elif case == "zero_epochs":
        extra, message = ["--epochs=0"], "--epochs=0: expected an integer >= 1"
    elif case == "negative_calibration":
        extra, message = ["--calibration_batches=-1"], "--calibration_batches=-1: expected an integer >= 0"
    else:
        extra, message = ["--strategy=tpu"], "--strategy=tpu: expected one of auto"
    code = qat.main([f"--{k}={v}" for k, v in args.items()] + extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not out.exists()
