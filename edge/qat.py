"""Quantization-aware training of any keras_effnet model with tensorflow-model-optimization.

tfmot accepts only Keras 2 (`tf_keras`) functional models (tensorflow/model-optimization#1119, #1140), so
`quantize` wraps the float model rather than forking it: it rebuilds the same network with tf_keras from the
same architecture definition (`keras_effnet.twin`), copies the weights by layer name, annotates the layers the
default 8-bit registry does not know with the configs of `edge.quantize_configs`, and applies tfmot inside
`quantize_scope`. Before applying, `rejected_layers` lists *every* layer tfmot would refuse, by name and type,
instead of tfmot's one-at-a-time RuntimeError.

    keras-effnet-qat --model=M/model.keras --data_dir=DIR --epochs=N --out=Q
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os

import numpy as np

from common import cli
from common import lock as folder_lock
from common.files import atomic_path, write_json
from keras_effnet import keras_versions
from keras_effnet import twin as twin_lib
from training import data as training_data
from training.data import Splits
from training.strategy import STRATEGIES, get_strategy

QAT_WEIGHTS = "qat.weights.h5"
QAT_INFO = "qat.json"

# Activations tfmot can quantize: inside an `Activation` layer (Default8BitActivationQuantizeConfig) and fused
# into a Conv2D / DepthwiseConv2D / Dense (QuantizeAwareActivation).
_ACTIVATION_LAYER_OK = ("relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh")
_FUSED_ACTIVATION_OK = ("softmax", "sigmoid", "tanh", "gelu", "linear", "relu", "swish")


class QuantizationError(ValueError):
    """A model tfmot cannot quantize; `rejected` lists (layer name, layer type, reason)."""

    def __init__(self, model_name: str, rejected: list[tuple[str, str, str]]):
        self.rejected = rejected
        lines = "\n".join(f"  {name} ({kind}): {why}" for name, kind, why in rejected)
        super().__init__(
            f"tensorflow-model-optimization would reject {len(rejected)} layer(s) of model {model_name!r}:\n{lines}"
        )


def _tfmot():
    import tensorflow_model_optimization as tfmot

    return tfmot


def _configs():
    """`edge.quantize_configs`, imported on first use: it imports tfmot and TensorFlow, which a refused
    command line never needs (its one error line comes before TensorFlow's start-up logging)."""
    from edge import quantize_configs

    return quantize_configs


def _registry():
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def rejected_layers(tf_model, annotations: dict | None = None) -> list[tuple[str, str, str]]:
    """Every layer of a tf_keras model that tfmot's default 8-bit scheme would refuse: (name, type, reason).

    A layer is accepted when `annotations` (layer name -> QuantizeConfig) covers it, when it is a
    BatchNormalization that tfmot folds into the Conv2D / DepthwiseConv2D / Dense before it, or when the default
    registry supports its type and its activation. Nested models are refused outright (tfmot rejects them).
    """
    annotations = annotations or {}
    quantize_configs = _configs()
    registry = _registry()
    K = keras_versions.tf_keras()
    out = []
    for layer in tf_model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer" or layer.name in annotations:
            continue
        if isinstance(layer, K.Model):
            out.append((layer.name, kind, "a model nested inside a model (tfmot accepts flat functional models only)"))
            continue
        if kind == "BatchNormalization":
            sources = quantize_configs.inbound_class_names(layer)
            if sources and all(s in quantize_configs.FUSABLE_INTO for s in sources):
                continue
            out.append((layer.name, kind, "a BatchNormalization not preceded by a convolution or Dense is not folded"))
            continue
        if not registry.supports(layer):
            out.append((layer.name, kind, "no entry in the default 8-bit registry"))
            continue
        act = quantize_configs.activation_name(layer)
        if act is None:
            continue
        allowed = _ACTIVATION_LAYER_OK if kind == "Activation" else _FUSED_ACTIVATION_OK
        if act not in allowed:
            out.append((layer.name, kind, f"activation {act!r} is not quantizable (allowed: {', '.join(allowed)})"))
    return out


def annotations_for(tf_model) -> dict:
    """layer name -> QuantizeConfig for every layer that `edge.quantize_configs` covers."""
    quantize_configs = _configs()
    out = {}
    for layer in tf_model.layers:
        config = quantize_configs.config_for(layer)
        if config is not None:
            out[layer.name] = config
    return out


def to_tf_keras(model):
    """The tf_keras twin of a keras_effnet model (weights copied by name); a tf_keras model is returned as is."""
    K = keras_versions.tf_keras()
    if isinstance(model, K.Model):
        twin_lib.spec_from_model(model)  # raises ValueError naming what is missing for a foreign model
        return model
    keras = keras_versions.keras3()
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"model must be a Keras model built by keras_effnet.build, got {type(model).__name__}: {model!r:.80}"
        )
    return twin_lib.twin(model, "tf_keras")


def quantize(model, *, check_only: bool = False):
    """A QAT (tf_keras) model for a keras_effnet model, from its float weights.

    `model`: a Keras 3 model made by `keras_effnet.build` (B-series or Lite, any phi) or its tf_keras twin.
    Raises `QuantizationError` listing every layer tfmot would reject before anything is applied; with
    `check_only=True` returns that list (empty when the model is quantizable) instead of a model.
    Create the result inside `strategy.scope()` when training it with a distribution strategy.
    """
    return quantize_tf_keras(to_tf_keras(model), check_only=check_only)


def quantize_tf_keras(tf_model, *, check_only: bool = False):
    """`quantize` for any flat functional tf_keras model (no keras_effnet check): replace, annotate, apply.

    Weights are copied layer by layer, by name; a replaced layer gets `quantize_configs.replacement_weights`.
    """
    tfmot, quantize_configs = _tfmot(), _configs()
    K = keras_versions.tf_keras()
    annotations = annotations_for(tf_model)
    replaced = {layer.name for layer in tf_model.layers if quantize_configs.replacement_for(layer) is not None}
    rejected = rejected_layers(tf_model, {**annotations, **dict.fromkeys(replaced)})
    if check_only:
        return rejected
    if rejected:
        raise QuantizationError(tf_model.name, rejected)

    def annotate(layer):
        clone = quantize_configs.replacement_for(layer) or layer.__class__.from_config(layer.get_config())
        if layer.name in annotations:
            return tfmot.quantization.keras.quantize_annotate_layer(clone, annotations[layer.name])
        return clone

    annotated = K.models.clone_model(tf_model, clone_function=annotate)
    for layer in annotated.layers:
        if not layer.weights:
            continue
        name = getattr(layer, "layer", layer).name  # a QuantizeAnnotate wrapper has a name of its own
        source = tf_model.get_layer(name)
        layer.set_weights(quantize_configs.replacement_weights(source) if name in replaced else source.get_weights())
    annotated = tfmot.quantization.keras.quantize_annotate_model(annotated)
    with tfmot.quantization.keras.quantize_scope(quantize_configs.custom_objects()):
        return tfmot.quantization.keras.quantize_apply(annotated)


@dataclasses.dataclass(frozen=True)
class FineTuneConfig:
    """How the QAT model is fine-tuned from the float weights.

    QAT starts from trained weights, so the learning rate is small (the tfmot guide fine-tunes at ~1/10 of the
    training rate) and there is no warm-up.
    """

    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 1e-4
    steps_per_epoch: int | None = None
    seed: int = 0
    augment: str = "none"
    calibration_batches: int = 4

    def __post_init__(self):
        for name in ("epochs", "batch_size", "calibration_batches"):
            value, low = getattr(self, name), 1 if name == "batch_size" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
        if not (isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0):
            raise ValueError(f"learning_rate must be a number > 0, got {self.learning_rate!r}.")
        if self.steps_per_epoch is not None and (not isinstance(self.steps_per_epoch, int) or self.steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch must be None or an integer >= 1, got {self.steps_per_epoch!r}.")


def compile_qat(qat_model, learning_rate: float):
    K = keras_versions.tf_keras()
    qat_model.compile(
        optimizer=K.optimizers.Adam(learning_rate),
        loss=K.losses.SparseCategoricalCrossentropy(),
        metrics=[K.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return qat_model


@contextlib.contextmanager
def _ranges_from_all_values():
    """Inside the block, tfmot's moving-average activation quantizers record the min/max of every value they see
    (starting from the first batch's, not from tfmot's initial [-6, 6]) instead of moving 0.1% towards it.

    tfmot's `MovingAverageQuantizer` starts every activation range at [-6, 6] and moves it with an EMA of decay
    0.999 (hard-coded in `quantizers.MovingAverageQuantizer.__call__`), so a fine-tune of a few hundred steps
    leaves most ranges near [-6, 6]: an image rescaled to [0, 1] gets about 21 of its 256 levels, and the Keras
    QAT model and its integer file, rounding differently, diverge. The block swaps the quant_ops function that
    quantizer calls (looked up on the module at call time), for eager calls only.
    """
    import tensorflow as tf
    from tensorflow_model_optimization.python.core.quantization.keras import quant_ops

    original = quant_ops.MovingAvgQuantize
    started = set()

    def all_values(
        inputs,
        min_var,
        max_var,
        per_channel=False,
        ema_decay=0.999,
        name_prefix="MovingAvgQuantize",
        is_training=True,
        num_bits=8,
        narrow_range=False,
        symmetric=False,
    ):
        if not is_training or per_channel or symmetric:  # tfmot's activation quantizers are per-tensor, asymmetric
            return original(
                inputs,
                min_var,
                max_var,
                per_channel=per_channel,
                ema_decay=ema_decay,
                name_prefix=name_prefix,
                is_training=is_training,
                num_bits=num_bits,
                narrow_range=narrow_range,
                symmetric=symmetric,
            )
        low = tf.minimum(tf.reduce_min(inputs), 0.0)  # TFLite needs 0 inside every range
        high = tf.maximum(tf.reduce_max(inputs), 0.0)
        if min_var.ref() in started:
            low, high = tf.minimum(low, min_var), tf.maximum(high, max_var)
        started.add(min_var.ref())
        min_var.assign(tf.reshape(low, min_var.shape))
        max_var.assign(tf.reshape(high, max_var.shape))
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, min_var, max_var, num_bits=num_bits, narrow_range=narrow_range
        )

    quant_ops.MovingAvgQuantize = all_values
    try:
        yield started
    finally:
        quant_ops.MovingAvgQuantize = original


def calibrate_ranges(qat_model, batches) -> int:
    """Set the activation ranges of a fresh QAT model from the min/max over `batches` (image batches); returns
    how many ranges were set.

    QAT then starts from the ranges post-training quantization would use rather than tfmot's [-6, 6] (see
    `_ranges_from_all_values`), as the TFLite converter's own calibration does for the int8 format. The pass
    runs in training mode, so that each quantizer records its tensor, with every BatchNormalization frozen
    (a non-trainable Keras BatchNormalization normalises with its moving statistics and leaves them alone):
    the ranges are those of the model as it infers and as the converter folds it, and only the ranges change.
    """
    K = keras_versions.tf_keras()
    frozen = []
    for layer in qat_model.layers:
        inner = getattr(layer, "layer", layer)  # tfmot's QuantizeWrapperV2 holds the layer it wraps
        if isinstance(inner, K.layers.BatchNormalization) and inner.trainable:
            inner.trainable = False
            frozen.append(inner)
    try:
        with _ranges_from_all_values() as started:
            for images in batches:
                qat_model(images, training=True)
    finally:
        for layer in frozen:
            layer.trainable = True
    return len(started)


def fine_tune(model, splits: Splits, config: FineTuneConfig = FineTuneConfig(), *, strategy=None):
    """QAT fine-tune of a keras_effnet float model on the images of `splits` (`training.data.load_splits` of a
    folder with train/<class>/ and val/<class>/); returns (qat_model, history).

    Reuses the trainer's data pipeline (`training.data`) and distribution strategy (`training.strategy`):
    MirroredStrategy on every GPU, `cpu_replicas` logical CPU devices otherwise. The global batch is
    `config.batch_size`; each of the strategy's replicas gets batch_size / num_replicas_in_sync images.
    """
    if strategy is None:
        strategy = get_strategy("auto")
    image_size = int(model.input_shape[1])
    train = _dataset(
        splits.train_files, splits.train_labels, image_size, config, training=True, pil_files=splits.pil_files
    )
    val = _dataset(splits.val_files, splits.val_labels, image_size, config, training=False, pil_files=splits.pil_files)
    with strategy.scope():
        qat_model = compile_qat(quantize(model), config.learning_rate)
    if config.calibration_batches:
        calibration = _dataset(
            splits.train_files, splits.train_labels, image_size, config, training=False, pil_files=splits.pil_files
        )
        calibrate_ranges(qat_model, (images for images, _ in calibration.take(config.calibration_batches)))
    history = {}
    if config.epochs:
        hist = qat_model.fit(
            train,
            validation_data=val,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            verbose=2,
        )
        history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        for k, vals in history.items():
            if not all(np.isfinite(vals)):
                raise FloatingPointError(f"QAT fine-tune: {k} became non-finite in epochs 1..{config.epochs}: {vals}")
    return qat_model, history


def _dataset(files, labels, image_size: int, config: FineTuneConfig, *, training: bool, pil_files=None):
    """The trainer's pipeline over `files` at the fine-tune's batch size: augmented (`config.augment`) and
    shuffled for training, in order and unaugmented otherwise."""
    return training_data.make_dataset(
        files,
        labels,
        image_size=image_size,
        batch_size=config.batch_size,
        training=training,
        augment=config.augment if training else "none",
        seed=config.seed,
        pil_files=pil_files,
    )


def save(qat_model, out_dir: str, info: dict) -> dict:
    """Write the QAT weights and a JSON note of how they were made, atomically; returns the paths."""
    weights = os.path.join(out_dir, QAT_WEIGHTS)
    with atomic_path(weights, suffix=".weights.h5") as tmp:
        qat_model.save_weights(tmp)
    note = os.path.join(out_dir, QAT_INFO)
    write_json(note, info)
    return {"weights": weights, "info": note}


def load(model, qat_dir: str):
    """Rebuild the QAT model of `model` and load the weights `save` wrote to `qat_dir`."""
    path = os.path.join(qat_dir, QAT_WEIGHTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"qat_dir: {qat_dir!r} has no {QAT_WEIGHTS} (write one with `python -m edge.qat`).")
    qat_model = quantize(model)
    qat_model.load_weights(path)
    return qat_model


@dataclasses.dataclass(frozen=True)
class QatConfig:
    """The flags of `keras-effnet-qat`."""

    model: str | None = cli.flag(None, "A .keras model built by keras_effnet.", group="input", required=True)
    data_dir: str | None = cli.flag(
        None, "Folder with train/<class>/ and val/<class>/ images.", group="input", required=True
    )
    out: str | None = cli.flag(None, "Output folder: qat.weights.h5 and qat.json.", group="output", required=True)
    epochs: int = cli.flag(1, "QAT fine-tune epochs.", group="fine-tune")
    batch_size: int = cli.flag(32, "Global batch size (split over the strategy's replicas).", group="fine-tune")
    learning_rate: float = cli.flag(
        1e-4, "Adam learning rate (QAT starts from trained weights: keep it small).", group="fine-tune"
    )
    steps_per_epoch: int | None = cli.flag(None, "Limit the steps per epoch.", group="fine-tune")
    seed: int = cli.flag(0, "Shuffle seed.", group="fine-tune")
    calibration_batches: int = cli.flag(
        4,
        "Batches of training images whose min/max set the activation ranges before fine-tuning "
        "(0: tfmot's [-6, 6] start).",
        group="fine-tune",
    )
    strategy: str = cli.flag("auto", "tf.distribute strategy.", group="devices", choices=STRATEGIES)
    cpu_replicas: int = cli.flag(1, "Logical CPU replicas for MirroredStrategy when there is no GPU.", group="devices")

    def __post_init__(self):
        if self.epochs < 1:
            raise cli.UsageError("epochs", self.epochs, "an integer >= 1")
        for name in ("batch_size", "cpu_replicas"):
            cli.positive(name, getattr(self, name))
        cli.positive("steps_per_epoch", self.steps_per_epoch, allow_none=True)
        cli.positive("learning_rate", self.learning_rate, kind="number")
        if self.calibration_batches < 0:
            raise cli.UsageError("calibration_batches", self.calibration_batches, "an integer >= 0")

    def fine_tune(self) -> FineTuneConfig:
        return FineTuneConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            steps_per_epoch=self.steps_per_epoch,
            seed=self.seed,
            calibration_batches=self.calibration_batches,
        )


def run(config: QatConfig) -> None:
    """Check the inputs, fine-tune, save (holding --out); print the paths written."""
    cli.require_file("model", config.model, what="a .keras model file")
    cli.require_dir("data_dir", config.data_dir, what="a folder with train/<class>/ and val/<class>/ images")
    cli.require_writable_dir("out", config.out)
    with folder_lock.exclusive(config.out, command="keras-effnet-qat"):
        _run(config)


def _run(config: QatConfig) -> None:
    from edge import data as data_lib

    try:
        splits = training_data.load_splits(config.data_dir)
    except ValueError as exc:
        raise cli.UsageError(str(exc)) from None
    strategy = get_strategy(config.strategy, cpu_replicas=config.cpu_replicas)  # before TF runs any op
    try:
        model = data_lib.load_model(config.model)
    except (ValueError, FileNotFoundError) as exc:
        raise cli.UsageError(str(exc)) from None
    tune = config.fine_tune()
    qat_model, history = fine_tune(model, splits, tune, strategy=strategy)
    paths = save(
        qat_model,
        config.out,
        {
            "model": os.path.abspath(config.model),
            "data_dir": os.path.abspath(config.data_dir),
            "fine_tune": dataclasses.asdict(tune),
            "history": history,
        },
    )
    print(json.dumps(paths))


def main(argv=None) -> int:
    return cli.main(
        QatConfig,
        run,
        argv,
        prog="keras-effnet-qat",
        description="Quantization-aware fine-tune of a keras_effnet model (tfmot); "
        "keras-effnet-export --qat_dir converts the result.",
    )


if __name__ == "__main__":
    cli.run_main(main)
