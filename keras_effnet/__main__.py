"""`python -m keras_effnet` (or `keras-effnet`): the family table, measured by building every member.

For each variant: phi, width, depth, evaluation and training resolution, parameters, GMACs and
activations computed by `keras_effnet.profile` on the model actually built, with the published figures
beside them (Tan & Le 2019 Table 2; Lite from the tensorflow/tpu Lite README; EfficientNetV2 from the
google/automl efficientnetv2 README, whose FLOPs are multiply-adds at the evaluation size).
"""

from __future__ import annotations

import dataclasses
import json
import time

from common import cli, markdown

FAMILY_CHOICES = ("efficientnet", "lite", "v2", "all")

# (params in millions, GFLOPs as the papers report them: multiply-adds)
PAPER = {
    "efficientnetb0": (5.3, 0.39),
    "efficientnetb1": (7.8, 0.70),
    "efficientnetb2": (9.2, 1.0),
    "efficientnetb3": (12, 1.8),
    "efficientnetb4": (19, 4.2),
    "efficientnetb5": (30, 9.9),
    "efficientnetb6": (43, 19),
    "efficientnetb7": (66, 37),
    "efficientnetlite0": (4.7, 0.407),
    "efficientnetlite1": (5.4, 0.631),
    "efficientnetlite2": (6.1, 0.899),
    "efficientnetlite3": (8.2, 1.44),
    "efficientnetlite4": (13.0, 2.64),
    "efficientnetv2-b0": (7.1, 0.72),
    "efficientnetv2-b1": (8.1, 1.2),
    "efficientnetv2-b2": (10.1, 1.7),
    "efficientnetv2-b3": (14.4, 3.0),
    "efficientnetv2-s": (21.5, 8.4),
    "efficientnetv2-m": (54.1, 24.7),
    "efficientnetv2-l": (119.5, 56.3),
}


@dataclasses.dataclass(frozen=True)
class TableConfig:
    family: str = cli.flag("all", "Which family's official members to build.", group="members", choices=FAMILY_CHOICES)
    formula_phis: tuple[float, ...] = cli.flag(
        (3.0,),
        "Comma-separated phi values also shown through the literal compound-scaling formula (B0's table); '' for none.",
        group="members",
    )
    resolution: str = cli.flag(
        "native",
        "'native' (each variant's own evaluation size) or one pixel size >= 32 for every row.",
        group="measure",
    )
    json: bool = cli.flag(False, "Print the rows as one JSON list instead of a Markdown table.", group="output")

    def __post_init__(self):
        from keras_effnet import families

        if self.resolution != "native" and (
            not self.resolution.isdigit() or int(self.resolution) < families.MIN_INPUT_SIZE
        ):
            raise cli.UsageError("resolution", self.resolution, f"'native' or an integer >= {families.MIN_INPUT_SIZE}")
        for phi in self.formula_phis:
            if not 0 <= phi <= families.MAX_PHI:
                raise cli.UsageError("formula_phis", phi, f"numbers in 0..{families.MAX_PHI:g}")


def members(family: str = "all", formula_phis=()) -> list[tuple[str, object]]:
    """(variant name or formula phi, coefficients) for each row, in table order."""
    from keras_effnet import architecture

    families = ("efficientnet", "lite", "v2") if family == "all" else (family,)
    rows = []
    for name in architecture.variants():
        c = architecture.variant_coefficients(name)
        if c.family in families and not (c.family == "efficientnet" and c.phi == 8):  # B8: no published table row
            rows.append((name, c))
    rows += [(None, architecture.coefficients(phi, scaling="formula")) for phi in formula_phis]
    return rows


def family_rows(family: str = "all", resolution: str | int = "native", formula_phis=()) -> list[dict]:
    """Build each member and profile it; one dict per row."""
    import keras_effnet
    from keras_effnet import keras_versions

    keras = keras_versions.keras3()
    rows = []
    for name, c in members(family, formula_phis):
        size = c.resolution if resolution == "native" else int(resolution)
        start = time.perf_counter()
        if name is None:
            model = keras_effnet.build(c.phi, scaling="formula", input_shape=(size, size, 3))
        else:
            model = keras_effnet.build_variant(name, input_shape=(size, size, 3))
        p = keras_effnet.profile(model)
        paper = PAPER.get(name)
        rows.append(
            {
                "variant": c.name,
                "family": c.family,
                "phi": c.phi,
                "source": c.source,
                "width": c.width,
                "depth": c.depth,
                "resolution": size,
                "train_resolution": c.train_resolution,
                "params": p.params,
                "trainable_params": p.trainable_params,
                "gmacs": p.macs / 1e9,
                "activations_m": p.activations / 1e6,
                "paper_params_m": paper[0] if paper else None,
                "paper_gflops": paper[1] if paper else None,
                "build_seconds": time.perf_counter() - start,
            }
        )
        del model
        keras.backend.clear_session()
    return rows


def format_table(rows: list[dict]) -> str:
    header = [
        "variant",
        "φ",
        "width",
        "depth",
        "res",
        "train res",
        "params",
        "GMACs",
        "activations (M)",
        "paper params",
        "paper GFLOPs",
    ]
    cells = []
    for r in rows:
        paper_p = "—" if r["paper_params_m"] is None else f"{r['paper_params_m']:g}M"
        paper_f = "—" if r["paper_gflops"] is None else f"{r['paper_gflops']:g}B"
        phi = "—" if r["phi"] is None else f"{r['phi']:g}" + (" (formula)" if r["source"] == "formula" else "")
        cells.append(
            [
                r["variant"],
                phi,
                f"{r['width']:.3f}",
                f"{r['depth']:.3f}",
                r["resolution"],
                r["train_resolution"],
                f"{r['params']:,}",
                f"{r['gmacs']:.3f}",
                f"{r['activations_m']:.1f}",
                paper_p,
                paper_f,
            ]
        )
    return markdown.table(header, cells)


def table(config: TableConfig) -> None:
    rows = family_rows(config.family, config.resolution, config.formula_phis)
    print(json.dumps(rows) if config.json else format_table(rows))


def main(argv=None) -> int:
    return cli.main(
        TableConfig,
        table,
        argv,
        prog="keras-effnet",
        description="The EfficientNet family table (V1, Lite, V2), measured by building every member.",
    )


if __name__ == "__main__":
    cli.run_main(main)
