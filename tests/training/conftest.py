import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402

LEARNING_PER_CLASS = 100
LEARNING_EPOCHS = 7


@pytest.fixture(scope="session")
def learned_b0(tmp_path_factory):
    """B0 trained on the trainer's defaults on the embedded dataset (10 classes, 100 per class, 32 px, 7 epochs).

    Trained once per test process: test_learning checks it learned, test_finetune_learning fine-tunes from it.
    """
    from training import checkpoints, loop, synthetic
    from training.config import TrainConfig

    root = tmp_path_factory.mktemp("learned_b0")
    data_dir = synthetic.generate(
        str(root / "data"), train_per_class=LEARNING_PER_CLASS, val_per_class=30, image_size=64
    )
    config = TrainConfig(
        dataset="folder",
        data_dir=data_dir,
        out=str(root / "run"),
        image_size=32,
        epochs=LEARNING_EPOCHS,
        batch_size=32,
        strategy="one_device",
        tensorboard=False,
        verbose=0,
    )
    result = loop.run(config, log=lambda *a, **k: None)
    return {
        "data_dir": data_dir,
        "config": config,
        "result": result,
        "model": os.path.join(config.out, checkpoints.MODEL),
    }
