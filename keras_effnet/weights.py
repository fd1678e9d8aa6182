"""Weight files: the official ImageNet files, local files, and checking they fit.

The ImageNet files are keras.applications' own (same URL, same MD5 hashes), so
`build(phi=k, weights="imagenet")` gives the same network as
`keras.applications.EfficientNetBk(weights="imagenet")`, and
`build_variant("efficientnetv2-s", weights="imagenet")` the same as
`keras.applications.EfficientNetV2S(weights="imagenet")`.

A file is checked against the model *before* loading: users otherwise get
"Layer count mismatch ... 185 layers into a model with 184" (keras-team/keras#21529)
or, worse, a silent partial load. The check names the first layer that differs.
"""

from __future__ import annotations

import os
import re

import numpy as np

from keras_effnet.families import IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB

BASE_WEIGHTS_URL = "https://storage.googleapis.com/keras-applications/"
# (top, notop) MD5 of keras.applications' EfficientNetB0..B7 files; a test pins
# them to the installed keras.applications table.
WEIGHTS_HASHES = {
    0: ("902e53a9f72be733fc0bcb005b3ebbac", "50bc09e76180e00e4465e1a485ddc09d"),
    1: ("1d254153d4ab51201f1646940f018540", "74c4e6b3e1f6a1eea24c589628592432"),
    2: ("b15cce36ff4dcbd00b6dd88e7857a6ad", "111f8e2ac8aa800a7a99e3239f7bfb39"),
    3: ("ffd1fdc53d0ce67064dc6a9c7960ede0", "af6d107764bb5b1abb91932881670226"),
    4: ("18c95ad55216b8f92d7e70b3a046e2fc", "ebc24e6d6c33eaebbd558eafbeedf1ba"),
    5: ("ace28f2a6363774853a83a0b21b9421a", "38879255a25d3c92d5e44e04ae6cec6f"),
    6: ("165f6e37dce68623721b423839de8be5", "9ecce42647a20130c1f39a5d4cb75743"),
    7: ("8c03f828fec3ef71311cd463b6759d99", "cbcfe4450ddf6f3ad90b1b398090fe4a"),
}


V2_BASE_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/efficientnet_v2/"
# (top, notop) MD5 of keras.applications' EfficientNetV2 files, by model name; a test pins them too.
V2_WEIGHTS_HASHES = {
    "efficientnetv2-b0": ("21ecbf6da12460d5c40bb2f29ceb2188", "893217f2bb855e2983157299931e43ff"),
    "efficientnetv2-b1": ("069f0534ff22adf035c89e2d9547a9dc", "0e80663031ca32d657f9caa404b6ec37"),
    "efficientnetv2-b2": ("424e49f28180edbde1e94797771950a7", "1dfe2e7a5d45b6632553a8961ea609eb"),
    "efficientnetv2-b3": ("1f1fc43bd98a6e4fd8fdfd551e02c7a0", "f6abf7b5849ac99a89b50dd3fd532856"),
    "efficientnetv2-s": ("e1d88a8495beba45748fedd0cecbe016", "af0682fb74e8c54910f2d4393339c070"),
    "efficientnetv2-m": ("a3bf6aa3276309f4fc6a34aa114c95cd", "1b8dc055df72dde80d614482840fe342"),
    "efficientnetv2-l": ("27e6d408b53c7ebc868fefa357689935", "b0b66b5c863aef5b46e8608fe1711615"),
}
IMAGENET_MEMBERS = "the presets B0..B7 (family='efficientnet') and EfficientNetV2 B0..B3 (family='v2'), S, M, L"


def has_imagenet(name: str) -> bool:
    """Whether keras.applications publishes ImageNet weights for the model called `name`."""
    return name in V2_WEIGHTS_HASHES or name in {f"efficientnetb{phi}" for phi in WEIGHTS_HASHES}


def imagenet_file_name(phi, include_top: bool) -> str:
    """keras.applications' file name; `phi` an int (B0..B7) or a model name ("efficientnetv2-s")."""
    name = phi if isinstance(phi, str) else f"efficientnetb{phi}"
    return f"{name}{'' if include_top else '_notop'}.h5"


def _imagenet_source(phi, include_top: bool) -> tuple[str, str]:
    """(base URL, MD5) of the official file for B`phi` or the model called `phi`."""
    name = phi if isinstance(phi, str) else f"efficientnetb{phi}"
    if name in V2_WEIGHTS_HASHES:
        return V2_BASE_WEIGHTS_URL, V2_WEIGHTS_HASHES[name][0 if include_top else 1]
    if name.startswith("efficientnetb") and name[len("efficientnetb") :].isdigit():
        phi = int(name[len("efficientnetb") :])
        if phi in WEIGHTS_HASHES:
            return BASE_WEIGHTS_URL, WEIGHTS_HASHES[phi][0 if include_top else 1]
    raise ValueError(f"weights='imagenet' exists for {IMAGENET_MEMBERS} only; got {name!r}.")


def fetch_imagenet(
    phi,
    include_top: bool,
    *,
    base_url: str | None = None,
    file_hash: str | None = None,
    cache_dir: str | None = None,
) -> str:
    """Download (once, into `cache_dir`/models, default ~/.keras/models) and MD5-check an official weight file.

    `phi`: an int for B0..B7, or a model name with published weights ("efficientnetb3", "efficientnetv2-s").
    """
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    name = imagenet_file_name(phi, include_top)
    default_url, default_hash = _imagenet_source(phi, include_top)
    base_url = base_url or default_url
    expected = file_hash or default_hash
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)  # keras silently falls back to /tmp for a missing dir
    return keras.utils.get_file(name, base_url + name, cache_subdir="models", file_hash=expected, cache_dir=cache_dir)


def file_weight_shapes(path: str) -> list[tuple[str, list[tuple[int, ...]]]]:
    """(layer name, weight shapes) in the file, for both Keras weight formats.

    Legacy `.h5` (keras.applications, `save_weights("x.h5")`) keeps layers in
    model order; Keras 3 `.weights.h5` keeps them under `layers/<name>/vars`.
    """
    import h5py

    if not os.path.exists(path):
        raise FileNotFoundError(f"weights: file {path!r} does not exist.")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(
            f"weights: {path!r} is not a Keras weights file (expected an HDF5 .h5 or .weights.h5 file): {exc}"
        ) from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            out = []
            for raw in root.attrs["layer_names"]:
                lname = raw.decode() if isinstance(raw, bytes) else str(raw)
                group = root[lname]
                names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["weight_names"]]
                if names:
                    out.append((lname, [tuple(group[n].shape) for n in names]))
            return out
        if "layers" in root:
            out = []
            for key, group in root["layers"].items():
                vars_ = group.get("vars")
                if vars_ is not None and len(vars_):
                    out.append((key, [tuple(vars_[str(i)].shape) for i in range(len(vars_))]))
            return out
    raise ValueError(f"weights: {path!r} is an HDF5 file but holds no Keras weights.")


def check_weights_file(model, path: str, what: str) -> None:
    """Raise ValueError naming the first layer whose weights do not fit `model`."""
    in_file = file_weight_shapes(path)
    in_model = [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights]
    if _is_legacy(path):
        pairs = list(zip(in_file, in_model))
    else:
        by_key = dict(in_file)
        keys = [key for key, layer in zip(keras3_keys(model.layers), model.layers) if layer.weights]
        pairs = [((key, by_key.get(key)), (name, shapes)) for key, (name, shapes) in zip(keys, in_model)]
    for (fname, fshapes), (mname, mshapes) in pairs:
        if fshapes != mshapes:
            raise ValueError(
                f"weights: file {path!r} was made for another network than {what}: layer {mname!r} has "
                f"weights {mshapes} in the model but {fshapes} in the file (file layer {fname!r}). "
                "Build with the phi, family, classes and include_top the file was saved with."
            )
    if len(in_file) != len(in_model):
        raise ValueError(
            f"weights: file {path!r} holds weights for {len(in_file)} layers but {what} has {len(in_model)}; "
            "it was saved from another variant."
        )


def keras3_keys(layers) -> list[str]:
    """The keys Keras 3 gives layers in a `.weights.h5` file: class name in snake case, numbered by order.

    Keras 3 deliberately does not key weights by layer name (keras/src/saving/saving_lib.py,
    `_save_container_state`), so a file fits a model when its layers of each class come in the same order.
    """
    used: dict[str, int] = {}
    keys = []
    for layer in layers:
        name = re.sub(r"\W+", "", type(layer).__name__)
        name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
        name = re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()
        if name in used:
            used[name] += 1
            name = f"{name}_{used[name]}"
        else:
            used[name] = 0
        keys.append(name)
    return keys


def load(model, path: str, what: str) -> None:
    """Check, load, then repair the known normalisation trap (tensorflow/tensorflow#49930).

    keras.applications' files store the ImageNet *stddev* in the Normalization
    layer's *variance* slot and compensate with an extra Rescaling layer. This
    model has no such layer, so a variance equal to the stddev is replaced by
    stddev**2: the outputs are those of the keras.applications model the file
    came from.
    """
    path = os.fspath(path)
    check_weights_file(model, path, what)
    model.load_weights(path)
    names = {layer.name for layer in model.layers}
    norm = model.get_layer("normalization") if "normalization" in names else None
    if norm is None or not norm.weights:  # V2: statistics are constants of the layer, not weights
        return
    mean, var, count = (np.asarray(w) for w in norm.get_weights())
    if np.allclose(mean, IMAGENET_MEAN_RGB, atol=1e-6) and np.allclose(var, IMAGENET_STDDEV_RGB, atol=1e-6):
        norm.set_weights([mean, np.square(np.asarray(IMAGENET_STDDEV_RGB, "float32")), count])
    norm.finalize_state()


def _is_legacy(path: str) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        root = f["model_weights"] if "model_weights" in f else f
        return "layer_names" in root.attrs
