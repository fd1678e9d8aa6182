"""An independent check of the activation ranges that int8 calibration recorded, and their repair.

Post-training int8 takes one range per activation tensor from the calibrator (`edge.convert.calibrate_float`: the
converter runs the float graph on the calibration images with LiteRT's optimized CPU kernels and records the
min and max of each op's inputs and outputs). Every scale of the int8 graph follows from those ranges, so a
wrong recorded range gives a wrong graph whatever kernel later runs it, and more calibration images do not
fix it.

The calibrator does record wrong ranges on keras_effnet graphs: the recorded range of an element-wise op's
input is the union of its own range and the op's output range, which is what logging an op's inputs after
an in-place op (its output written over an input's buffer) has run gives; that mechanism is inferred from the
ranges, not read in the calibrator's source. Measured on the `make demo` B0 (32 px): the
rescaled input, recorded [-0.49, 1] instead of [0, 1] (the normalisation's SUB wrote over it); the
normalisation's SUB, [-2.12, 2.63] instead of [-0.49, 0.59] (its MUL); each block's projection output that
feeds a residual ADD, up to 2.3x too wide (block6d: [-29.1, 31.1] instead of [-12.4, 10.5]); and the swish
gates' LOGISTIC outputs, recorded as the swish (MUL) output's range (LOGISTIC's int8 output scale is fixed, so
these do not change the graph). 11 of 241 ranges that matter were too wide, by 12% to 4.4x.

`audit` runs the same calibrated float graph again with LiteRT's reference kernels (`BUILTIN_REF`) and every
intermediate tensor preserved (so nothing runs in place) on the same images, and compares each recorded
[min, max] with the observed one; `repair` writes the observed ranges into the calibrated model for the
tensors that differ by more than `TOLERANCE` of their width, so the int8 graph is built from ranges the float
graph actually produces. The cost is one reference-kernel pass over the calibration images (6 s for 100
images at 32 px on a 2-core CPU).
"""

from __future__ import annotations

import warnings

import numpy as np

# A recorded range whose ends differ from the reference kernels' by more than this share of its width is wrong.
TOLERANCE = 0.05


def _recorded(calibrated: bytes):
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(calibrated), 0))
    tensors = model.subgraphs[0].tensors
    rec = {}
    for i, t in enumerate(tensors):
        q = t.quantization
        if q is not None and q.min is not None and len(q.min) == 1 and t.type == schema.TensorType.FLOAT32:
            rec[i] = (float(q.min[0]), float(q.max[0]))
    return model, rec


def observed_ranges(calibrated: bytes, images, indices) -> tuple[dict, dict]:
    """({tensor index: (min, max)}, {tensor index: the op that writes it}) of the float graph of `calibrated` on
    `images` (float32 0..255), reference kernels, every intermediate tensor kept."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # preserve_all_tensors "is for debugging": it is
        interp = Interpreter(
            model_content=bytes(calibrated),
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_REF,
        )
    interp.allocate_tensors()
    producer = {int(i): op["op_name"] for op in interp._get_ops_details() for i in op["outputs"]}
    inp = interp.get_input_details()[0]["index"]
    low = {i: np.inf for i in indices}
    high = {i: -np.inf for i in indices}
    for image in np.asarray(images, dtype=np.float32):
        interp.set_tensor(inp, image[None])
        interp.invoke()
        for i in indices:
            v = interp.get_tensor(i)
            low[i] = min(low[i], float(v.min()))
            high[i] = max(high[i], float(v.max()))
    return {i: (low[i], high[i]) for i in indices}, producer


def audit(calibrated: bytes, images) -> dict:
    """Compare the recorded ranges of `calibrated` with the reference kernels' on the same `images`.

    Returns {"tensors": n checked, "max_rel_diff", "wrong": [{"index", "tensor", "op", "recorded", "observed",
    "rel_diff"}] (largest first, LOGISTIC outputs last), "observed": {index: (min, max)}}; rel_diff is the largest
    difference of an end, over the observed range's width.
    """
    _, rec = _recorded(calibrated)
    obs, producer = observed_ranges(calibrated, images, list(rec))
    names = _names(calibrated)
    wrong, worst = [], 0.0
    for i, (lo, hi) in rec.items():
        olo, ohi = obs[i]
        width = max(ohi - olo, 1e-6)
        diff = max(abs(lo - olo), abs(hi - ohi)) / width
        worst = max(worst, diff)
        if diff > TOLERANCE:
            wrong.append(
                {
                    "index": i,
                    "tensor": names[i],
                    "op": producer.get(i, "input"),
                    "recorded": [lo, hi],
                    "observed": [olo, ohi],
                    "rel_diff": float(diff),
                }
            )
    # LOGISTIC outputs last: their int8 scale is fixed (1/256), so a wrong recorded range does not change the graph.
    wrong.sort(key=lambda r: (r["op"] == "LOGISTIC", -r["rel_diff"]))
    return {"tensors": len(rec), "max_rel_diff": float(worst), "wrong": wrong, "observed": obs}


def repair(calibrated: bytes, result: dict) -> bytes:
    """`calibrated` with the observed ranges of `result["wrong"]` written in place of the recorded ones."""
    import flatbuffers

    if not result["wrong"]:
        return calibrated
    model, _ = _recorded(calibrated)
    tensors = model.subgraphs[0].tensors
    for row in result["wrong"]:
        lo, hi = row["observed"]
        tensors[row["index"]].quantization.min = [float(lo)]
        tensors[row["index"]].quantization.max = [float(hi)]
    b = flatbuffers.Builder(len(calibrated) + 1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def summary(result: dict) -> str:
    """One line for the report."""
    if not result["wrong"]:
        return (
            f"calibration audit: the {result['tensors']} recorded activation ranges match LiteRT's reference "
            f"kernels (largest difference {result['max_rel_diff']:.2g} of a range)"
        )
    worst = result["wrong"][0]
    logistic = sum(w["op"] == "LOGISTIC" for w in result["wrong"])
    return (
        f"calibration audit: {len(result['wrong'])} of {result['tensors']} recorded activation ranges differ "
        f"from LiteRT's reference kernels by more than {TOLERANCE:.0%} of their width ({logistic} of them "
        f"LOGISTIC outputs, whose int8 scale is fixed; {'worst' if worst['op'] == 'LOGISTIC' else 'worst other'} "
        f"{worst['tensor'].split(';')[0]}: recorded [{worst['recorded'][0]:.3g}, {worst['recorded'][1]:.3g}], "
        f"observed [{worst['observed'][0]:.3g}, {worst['observed'][1]:.3g}]); int8 was built from the "
        f"observed ranges"
    )


def _names(calibrated: bytes) -> dict:
    model, rec = _recorded(calibrated)
    return {i: model.subgraphs[0].tensors[i].name.decode() for i in rec}
