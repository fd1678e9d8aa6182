"""`int8_mixed`: post-training int8 with the fewest layers kept in float that bring it within the accuracy target,
and an honest account of what that costs.

The layers are ranked by TensorFlow's QuantizationDebugger (RMSE over the output scale, worst first); the
search keeps the k worst in float, doubling k and then bisecting. A mixed file that needs most of its
multiply-accumulates (MACs) in float is a float model in an int8 wrapper: it has float32's size and speed, not
int8's. So the result says how many ops and what share of the MACs compute in float, measured on the file
written, with its size beside int8's and float32's; above `MAX_FLOAT_MAC_SHARE` it is marked not to be shipped
as int8, and the report and the command say so.
"""

from __future__ import annotations

import csv
import io

import numpy as np

from edge import convert, litert

# Above this share of the MACs in float, int8_mixed is not an int8 model (it is not recommended as one).
MAX_FLOAT_MAC_SHARE = 0.5
_MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")


def rank_layers(calibrated: bytes, float_tflite: bytes, images) -> list[dict]:
    """The layers of the int8 model ordered by their quantization error, worst first, from TensorFlow's
    QuantizationDebugger: [{"node": output tensor name, "op", "rmse_over_scale", "mean_squared_error"}].

    RMSE divided by the output scale is the debugger guide's measure (tensorflow.org/lite/performance/
    quantization_debugger): about 0.29 (the error of rounding, 1/sqrt(12)) for a healthy layer, much more for
    one whose range the int8 grid cannot hold.
    """
    import tensorflow as tf
    from tensorflow.lite.python import convert as tfl_convert

    debug_model = tfl_convert.mlir_quantize(
        calibrated, fully_quantize=False, enable_numeric_verify=True, denylisted_ops=["SOFTMAX"]
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        quant_debug_model_content=bytes(debug_model),
        float_model_content=bytes(float_tflite),
        debug_dataset=convert.representative_dataset(images),
        debug_options=tf.lite.experimental.QuantizationDebugOptions(model_debug_metrics={}),
    )
    debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)  # the documented view: tensor_name, op_name, scale, metrics
    dump.seek(0)
    rows = []
    for rec in csv.DictReader(dump):
        scale, mse = float(rec["scale"] or 0.0), float(rec["mean_squared_error"] or 0.0)
        rows.append(
            {
                "node": rec["tensor_name"],
                "op": rec["op_name"],
                "mean_squared_error": mse,
                "rmse_over_scale": float(np.sqrt(mse) / scale) if scale > 0 else 0.0,
            }
        )
    rows.sort(key=lambda r: -r["rmse_over_scale"])
    return rows


def fewest_float_layers(ranked: list[str], good_enough) -> tuple[int, list[dict]] | None:
    """The smallest k such that keeping the k worst layers of `ranked` in float is `good_enough(nodes)`, found by
    doubling k and then bisecting between the last failure and the first success (the error falls as layers
    are added, so this tries O(log n) candidates). Returns (k, tries) or None when not even all layers do."""
    tries = []

    def ok(k):
        result = bool(good_enough(ranked[:k]))
        tries.append({"float_layers": k, "ok": result})
        return result

    low, k = 0, 1
    while True:
        k = min(k, len(ranked))
        if ok(k):
            break
        if k == len(ranked):
            return None
        low, k = k, k * 2
    high = k
    while high - low > 1:
        mid = (low + high) // 2
        if ok(mid):
            high = mid
        else:
            low = mid
    return high, tries


def op_macs(tflite) -> list[dict]:
    """Per op of a .tflite file: {"index", "op", "macs", "float"}: the multiply-accumulates of its convolutions
    and fully connected layers (0 for other ops, whose cost is a few operations per element), and whether it
    computes in float (`edge.convert.computes_in_float`)."""
    details, ops = litert.graph(tflite)
    rows = []
    for op in ops:
        name = op["op_name"]
        outs = [details[i] for i in op["outputs"] if i in details]
        macs = 0
        if name in _MAC_OPS and outs and len(op["inputs"]) > 1 and op["inputs"][1] in details:
            out_shape = [int(d) for d in outs[0]["shape"]]
            w = [int(d) for d in details[op["inputs"][1]]["shape"]]
            if name == "CONV_2D":  # weights (O, kh, kw, I)
                macs = int(np.prod(out_shape)) * w[1] * w[2] * w[3]
            elif name == "DEPTHWISE_CONV_2D":  # weights (1, kh, kw, O)
                macs = int(np.prod(out_shape)) * w[1] * w[2]
            else:  # FULLY_CONNECTED: weights (O, I)
                macs = int(np.prod(out_shape)) * w[1]
        rows.append(
            {"index": int(op["index"]), "op": name, "macs": macs, "float": convert.computes_in_float(op, details)}
        )
    return rows


def float_share(tflite) -> dict:
    """{"float_ops", "ops", "float_macs", "macs", "float_mac_share"} of a .tflite file (see `op_macs`)."""
    rows = op_macs(tflite)
    total = sum(r["macs"] for r in rows)
    in_float = sum(r["macs"] for r in rows if r["float"])
    return {
        "float_ops": sum(r["float"] for r in rows),
        "ops": len(rows),
        "float_macs": int(in_float),
        "macs": int(total),
        "float_mac_share": float(in_float / total) if total else 0.0,
    }


def describe(info: dict) -> str:
    """What the int8_mixed row's note and the printed output say: layers and MACs in float, size beside int8 and
    float32, and whether it counts as int8."""
    s = info["share"]
    sizes = ", ".join(f"{k} {v / 1e6:.2f} MB" for k, v in info["sizes"].items() if v)
    text = (
        f"{len(info['float_layers'])} of {info['num_layers']} layers kept in float: {s['float_ops']} of "
        f"{s['ops']} ops and {s['float_mac_share']:.1%} of the MACs compute in float ({sizes})"
    )
    if not info["is_int8"]:
        text += (
            f"; more than {MAX_FLOAT_MAC_SHARE:.0%} of the MACs in float: in effect a float model, not "
            "recommended as int8"
        )
    return text


def search(
    calibrated: bytes, float_blob: bytes, *, quantize, evaluate, images, max_drop_points: float, keras_top1: float
) -> dict:
    """Rank the layers, find the fewest to keep in float within `max_drop_points` of `keras_top1`.

    `quantize(float_nodes) -> bytes` makes a candidate; `evaluate(blob) -> top-1` scores it. Returns
    {"ranked_layers", "num_layers", "float_layers", "tries", "blob"} or {"error", ...}.
    """
    try:
        ranked = rank_layers(calibrated, float_blob, images)
    except Exception as exc:  # noqa: BLE001 - the search is optional; say why it did not run
        return {"error": f"QuantizationDebugger failed: {type(exc).__name__}: {exc}"}
    nodes = [r["node"] for r in ranked]

    def good_enough(float_nodes):
        return (keras_top1 - evaluate(quantize(float_nodes))) * 100 <= max_drop_points

    found = fewest_float_layers(nodes, good_enough)
    info = {"ranked_layers": ranked[:20], "num_layers": len(nodes)}
    if found is None:
        info["error"] = "no subset of layers kept in float brings int8 within the target."
        return info
    k, tries = found
    info.update(float_layers=nodes[:k], tries=tries, blob=quantize(nodes[:k]))
    return info


def account(info: dict, mixed_blob: bytes, sizes: dict) -> dict:
    """`info` with the float share of the written file, the sizes beside it and the int8 verdict."""
    share = float_share(mixed_blob)
    info = dict(info, share=share, sizes=dict(sizes), is_int8=share["float_mac_share"] <= MAX_FLOAT_MAC_SHARE)
    info["summary"] = describe(info)
    return info
