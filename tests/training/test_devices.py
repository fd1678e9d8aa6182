"""The GPU configuration, run on CPU at a tiny size: bf16 with XLA on 2 replicas (the GPU recipe of
benchmarks/gpu.py), and fp16 with loss scaling and XLA on one. Each trains for a few steps through
`training.loop.run`; the loss must decrease and the saved model must be float32. The model is a small
convnet with BatchNorm and a softmax head (B0 here would cost minutes of CI time; the contract test and the
end-to-end tests train B0 through the same loop).

One fresh process, because the CPU can be split into 2 logical devices only before TensorFlow starts.
It also runs benchmarks/gpu.py's logic at 32 px, whose rows must not pass for GPU figures.
"""

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCRIPT = r"""
import json, os, sys
import numpy as np
from keras_effnet import keras_versions
from training import loop, strategy as strategy_lib, synthetic
from training.config import TrainConfig

keras = keras_versions.keras3()
strategy_lib.configure_cpu_replicas(2)


def tiny_model(config, num_classes, *, image_size=None):
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="predictions", dtype="float32")(x)
    return keras.Model(inputs, outputs)


work = sys.argv[1]
data = synthetic.generate(os.path.join(work, "data"), train_per_class=4, val_per_class=1, image_size=64, seed=0)
common = dict(data_dir=data, image_size=32, batch_size=8, epochs=3, steps_per_epoch=5, augment="none", label_smoothing=0.0,
              learning_rate=0.5, warmup_epochs=0, schedule="constant", verbose=0, tensorboard=False)
runs = {
    "bf16_xla_2_replicas": dict(mixed_precision="bf16", jit_compile="on", strategy="mirrored", cpu_replicas=2),
    "fp16_loss_scaling_xla": dict(mixed_precision="fp16", jit_compile="on", strategy="one_device"),
}
out = {}
for name, kw in runs.items():
    model_dir = os.path.join(work, name)
    r = loop.run(TrainConfig(out=model_dir, **common, **kw), model_fn=tiny_model)
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), safe_mode=True)
    out[name] = {
        "losses": [e["loss"] for e in r["epochs"]], "policy": r["dtype_policy"], "jit": r["jit_compile"],
        "replicas": r["num_replicas"], "optimizer": r["optimizer"],
        "weight_dtypes": sorted({str(w.dtype) for w in model.weights}),
        "layer_policies": sorted({layer.dtype_policy.name for layer in model.layers}),
    }
# benchmarks/gpu.py's logic at 32 px on this CPU: its rows must say they are not GPU figures.
from benchmarks import gpu

row = gpu.measure(data, work, devices=1, image_size=32, batch_per_device=4, steps=3, gpu=False, model_fn=tiny_model)
md = os.path.join(work, "benchmarks.md")
with open(md, "w") as f:
    f.write("# Benchmarks\n\n## GPU throughput\n\nintro\n\n" + gpu.TABLE + "\n## Next section\n\ntext\n")
gpu.append_rows(md, [row], device=gpu.device_name(False), image_size=32, steps_per_loop="auto")
out["gpu_benchmark"] = {"row": row, "markdown": open(md).read()}
print("RESULT", json.dumps(out))
"""


def test_bf16_xla_two_replicas_and_fp16_loss_scaling_xla_train_and_save_float32(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    bf16, fp16 = result["bf16_xla_2_replicas"], result["fp16_loss_scaling_xla"]
    assert (bf16["policy"], bf16["jit"], bf16["replicas"]) == ("mixed_bfloat16", True, 2)
    assert (fp16["policy"], fp16["jit"], fp16["replicas"]) == ("mixed_float16", True, 1)
    assert fp16["optimizer"] == "LossScaleOptimizer" and bf16["optimizer"] == "AdamW"
    bench = result.pop("gpu_benchmark")
    assert (
        bench["row"]["images_per_sec"] > 0 and bench["row"]["dtype_policy"] == "mixed_bfloat16" and bench["row"]["jit"]
    )
    lines = bench["markdown"].splitlines()
    rows = [line for line in lines if line.startswith("| 20")]
    assert len(rows) == 1 and "CPU (smoke run, not a GPU figure" in rows[0] and "| 32 |" in rows[0], bench["markdown"]
    assert lines.index(rows[0]) < lines.index("## Next section")  # appended to its own section's table
    for name, r in result.items():
        losses = r["losses"]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.05, (name, losses)
        assert r["weight_dtypes"] == ["float32"] and r["layer_policies"] == ["float32"], (name, r)
