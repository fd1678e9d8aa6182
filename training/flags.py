"""Every absl flag of training/, defined here and nowhere else (STYLE principle 7).

All flags are optional: `config_from_flags()` turns them into a `TrainConfig`,
and library code never reads FLAGS.
"""

from __future__ import annotations

from absl import flags

from training import config as config_lib

FLAGS = flags.FLAGS


def define_train_flags() -> None:
    d = config_lib.TrainConfig()
    flags.DEFINE_float("phi", d.phi, "Compound coefficient: 0..8 the official B0..B8 (Lite0..4 with --family=lite).")
    flags.DEFINE_enum("family", d.family, config_lib.FAMILIES, "efficientnet or lite.")
    flags.DEFINE_enum("dataset", d.dataset, config_lib.DATASETS, "synthetic (embedded, no download), imagenette, imagewoof or folder.")
    flags.DEFINE_string("data_dir", d.data_dir, "folder: the dataset (train/<class>/*, val/<class>/*); imagenette/imagewoof: "
                        "where the archive is unpacked (default ~/.keras/datasets); synthetic: where it is generated (default MODEL_DIR/synthetic_data).")
    flags.DEFINE_enum("fastai_size", d.fastai_size, config_lib.FASTAI_SIZES, "Imagenette/Imagewoof archive: 160, 320 or full size.")
    flags.DEFINE_enum("label_noise", str(d.label_noise), [str(x) for x in config_lib.LABEL_NOISE],
                      "Imagenette: train labels from noisy_imagenette.csv column noisy_labels_<k>.")
    flags.DEFINE_integer("image_size", d.image_size, "Training resolution (default: the variant's native resolution).")
    flags.DEFINE_integer("epochs", d.epochs, "Epochs.")
    flags.DEFINE_integer("steps_per_epoch", d.steps_per_epoch, "Cap on steps per epoch (default: one pass over the train set).")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size, across all replicas and workers.")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Peak learning rate per 256 images, scaled linearly with the global batch "
                       f"(default per optimizer: {config_lib.DEFAULT_LEARNING_RATE}).")
    flags.DEFINE_enum("optimizer", d.optimizer, config_lib.OPTIMIZERS, "adamw, rmsprop (the paper's: decay 0.9, momentum 0.9, eps 1e-3) or sgd.")
    flags.DEFINE_enum("schedule", d.schedule, config_lib.SCHEDULES, "After warm-up: cosine, exponential (the paper's 0.97 every 2.4 epochs) or constant.")
    flags.DEFINE_float("warmup_epochs", d.warmup_epochs, "Linear warm-up length in epochs.")
    flags.DEFINE_float("label_smoothing", d.label_smoothing, "Label smoothing.")
    flags.DEFINE_float("weight_decay", d.weight_decay, "Weight decay, not on BatchNorm or biases: decoupled for adamw, L2 in the loss "
                       f"otherwise (default per optimizer: {config_lib.DEFAULT_WEIGHT_DECAY}).")
    flags.DEFINE_float("ema_decay", d.ema_decay, "Exponential moving average of the weights (0 = off; the paper: 0.9999).")
    flags.DEFINE_float("bn_momentum", d.bn_momentum, "BatchNorm moving-average momentum (the paper: 0.99; 0.9 suits short runs).")
    flags.DEFINE_bool("zero_init_head", d.zero_init_head, "Start the classifier at zero (uniform predictions); suits few classes.")
    flags.DEFINE_float("drop_connect_rate", d.drop_connect_rate, "Stochastic depth rate.")
    flags.DEFINE_float("dropout_rate", d.dropout_rate, "Head dropout (default: the variant's).")
    flags.DEFINE_enum("augment", d.augment, config_lib.AUGMENTS, "none, basic (random-resized-crop + flip) or randaugment.")
    flags.DEFINE_bool("cache", d.cache, "Keep decoded images (or file bytes when augmenting) in memory after the first epoch.")
    flags.DEFINE_enum("mixed_precision", d.mixed_precision, config_lib.PRECISIONS, "auto (bf16 on GPUs with compute capability >= 8), off, bf16, fp16.")
    flags.DEFINE_enum("jit_compile", d.jit_compile, config_lib.JIT, "XLA: auto = on for GPUs only (on CPU it trained B0 ~10x slower).")
    flags.DEFINE_enum("strategy", d.strategy, config_lib.STRATEGIES, "auto, mirrored, one_device or multi_worker (TF_CONFIG).")
    flags.DEFINE_integer("num_gpus", d.num_gpus, "GPUs to use (default: all).")
    flags.DEFINE_integer("cpu_replicas", d.cpu_replicas, "Without GPUs: split the CPU into N logical devices (MirroredStrategy on CPU).")
    flags.DEFINE_bool("sync_bn", d.sync_bn, "Synchronise BatchNorm statistics across replicas.")
    flags.DEFINE_bool("progressive_resize", d.progressive_resize, "Train at growing image sizes over the epochs (EfficientNetV2).")
    flags.DEFINE_string("init_from", d.init_from, "Start from weights: 'imagenet', a .keras model or a .weights.h5 file.")
    flags.DEFINE_integer("seed", d.seed, "Random seed (data order, augmentation, initialisation).")
    flags.DEFINE_string("model_dir", d.model_dir, "Output: model.keras, labels.txt, metrics.json, checkpoints/, logs/.")
    flags.DEFINE_bool("tensorboard", d.tensorboard, "Write TensorBoard logs to MODEL_DIR/logs.")
    flags.DEFINE_bool("wandb", d.wandb, "Log to Weights & Biases (needs pip install '.[wandb]'; offline unless WANDB_MODE is set).")
    flags.DEFINE_integer("synthetic_per_class", d.synthetic_per_class, "Synthetic dataset: training images per class.")
    flags.DEFINE_integer("verbose", d.verbose, "Progress bar: 0 none, 1 bar, 2 one line per epoch.")


def config_from_flags() -> config_lib.TrainConfig:
    """The parsed flags as a TrainConfig (validated by `run`)."""
    phi = FLAGS.phi
    return config_lib.TrainConfig(
        phi=int(phi) if float(phi).is_integer() else phi, family=FLAGS.family, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        fastai_size=FLAGS.fastai_size, label_noise=int(FLAGS.label_noise), image_size=FLAGS.image_size,
        epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch, batch_size=FLAGS.batch_size,
        learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer, schedule=FLAGS.schedule,
        warmup_epochs=FLAGS.warmup_epochs, label_smoothing=FLAGS.label_smoothing, weight_decay=FLAGS.weight_decay,
        ema_decay=FLAGS.ema_decay, bn_momentum=FLAGS.bn_momentum, zero_init_head=FLAGS.zero_init_head, drop_connect_rate=FLAGS.drop_connect_rate,
        dropout_rate=FLAGS.dropout_rate, augment=FLAGS.augment, cache=FLAGS.cache, mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile, strategy=FLAGS.strategy, num_gpus=FLAGS.num_gpus, cpu_replicas=FLAGS.cpu_replicas,
        sync_bn=FLAGS.sync_bn, progressive_resize=FLAGS.progressive_resize, init_from=FLAGS.init_from, seed=FLAGS.seed,
        model_dir=FLAGS.model_dir, tensorboard=FLAGS.tensorboard, wandb=FLAGS.wandb,
        synthetic_per_class=FLAGS.synthetic_per_class, verbose=FLAGS.verbose,
    )


def define_evaluate_flags() -> None:
    flags.DEFINE_string("model", None, "A model.keras written by training.train.")
    flags.DEFINE_string("data_dir", None, "Dataset directory: its val/<class>/* is evaluated (or DIR/<class>/* when there is no val/).")
    flags.DEFINE_integer("batch_size", 64, "Batch size.")
    flags.DEFINE_bool("json", False, "Print one JSON object with the results as the last line of stdout.")
    flags.mark_flags_as_required(["model", "data_dir"])


def define_predict_flags() -> None:
    flags.DEFINE_string("model", None, "A model.keras written by training.train (labels.txt beside it names the classes).")
    flags.DEFINE_integer("top_k", 5, "How many labels to print per image.")
    flags.mark_flags_as_required(["model"])


def define_demo_flags() -> None:
    from training import demo

    flags.DEFINE_string("out", "demo_out", "Output directory: data/ (the synthetic set) and train/ (model.keras, labels.txt, metrics.json).")
    flags.DEFINE_integer("epochs", demo.EPOCHS, "Epochs.")
    flags.DEFINE_integer("image_size", demo.IMAGE_SIZE, "Training resolution.")
    flags.DEFINE_integer("per_class", demo.PER_CLASS, "Synthetic training images per class.")
    flags.DEFINE_integer("verbose", 2, "Progress: 0 none, 1 bar, 2 one line per epoch.")
