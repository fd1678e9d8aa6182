"""The GPU configuration, run on CPU at a tiny size: bf16 with XLA on 2 replicas (the GPU recipe of
benchmarks/gpu.py), and fp16 with loss scaling. Each trains keras_effnet B0 for a few steps through
`training.loop.run`; the loss must decrease and the saved model must be float32.

One fresh process, because the CPU can be split into 2 logical devices only before TensorFlow starts;
`benchmarks/gpu.py`'s own logic runs too, at 32 px, and must not call its CPU rows GPU rows.
"""

import json
import os
import subprocess
import sys

import numpy as np

SCRIPT = r"""
import json, os, sys
import numpy as np
from keras_effnet import flavours
from training import loop, strategy as strategy_lib, synthetic
from training.config import TrainConfig

keras = flavours.keras3()
strategy_lib.configure_cpu_replicas(2)
work = sys.argv[1]
data = synthetic.generate(os.path.join(work, "data"), train_per_class=4, val_per_class=1, image_size=64, seed=0)
common = dict(data_dir=data, image_size=32, batch_size=8, epochs=3, steps_per_epoch=5, augment="none", label_smoothing=0.0,
              learning_rate=0.5, warmup_epochs=0, schedule="constant", drop_connect_rate=0.0, dropout_rate=0.0,
              verbose=0, tensorboard=False)
runs = {
    "bf16_xla_2_replicas": dict(mixed_precision="bf16", jit_compile="on", strategy="mirrored", cpu_replicas=2, sync_bn=True),
    "fp16_loss_scaling": dict(mixed_precision="fp16", jit_compile="off", strategy="one_device"),
}
out = {}
for name, kw in runs.items():
    model_dir = os.path.join(work, name)
    r = loop.run(TrainConfig(model_dir=model_dir, **common, **kw))
    model = keras.saving.load_model(os.path.join(model_dir, "model.keras"), safe_mode=True)
    out[name] = {
        "losses": [e["loss"] for e in r["epochs"]], "policy": r["dtype_policy"], "jit": r["jit_compile"],
        "replicas": r["num_replicas"],
        "weight_dtypes": sorted({str(w.dtype) for w in model.weights}),
        "layer_policies": sorted({layer.dtype_policy.name for layer in model.layers}),
    }
print("RESULT", json.dumps(out))
"""


def test_bf16_xla_two_replicas_and_fp16_loss_scaling_train_and_save_float32(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("RESULT ")][-1][7:])
    bf16, fp16 = result["bf16_xla_2_replicas"], result["fp16_loss_scaling"]
    assert (bf16["policy"], bf16["jit"], bf16["replicas"]) == ("mixed_bfloat16", True, 2)
    assert (fp16["policy"], fp16["jit"], fp16["replicas"]) == ("mixed_float16", False, 1)
    for name, r in result.items():
        losses = r["losses"]
        assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.05, (name, losses)
        assert r["weight_dtypes"] == ["float32"] and r["layer_policies"] == ["float32"], (name, r)

