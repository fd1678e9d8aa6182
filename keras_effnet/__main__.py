"""`python -m keras_effnet` (or `keras-effnet`): the family table, measured by building every member.

For each variant: phi, width, depth, resolution, parameters, GMACs and
activations computed by `keras_effnet.profile` on the model actually built, with
the paper's figures beside them (Tan & Le 2019 Table 2; Lite from the
tensorflow/tpu Lite README).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# (params in millions, GFLOPs as the paper reports them: multiply-adds)
PAPER = {
    ("efficientnet", 0): (5.3, 0.39), ("efficientnet", 1): (7.8, 0.70), ("efficientnet", 2): (9.2, 1.0),
    ("efficientnet", 3): (12, 1.8), ("efficientnet", 4): (19, 4.2), ("efficientnet", 5): (30, 9.9),
    ("efficientnet", 6): (43, 19), ("efficientnet", 7): (66, 37),
    ("lite", 0): (4.7, 0.407), ("lite", 1): (5.4, 0.631), ("lite", 2): (6.1, 0.899),
    ("lite", 3): (8.2, 1.44), ("lite", 4): (13.0, 2.64),
}


def family_rows(family: str = "both", resolution: str | int = "native", formula_phis=()) -> list[dict]:
    """Build each member and profile it; one dict per row."""
    import keras_effnet
    from keras_effnet import architecture, flavours

    keras = flavours.keras3()
    members = []
    if family in ("efficientnet", "both"):
        members += [("efficientnet", phi, "auto") for phi in range(8)]
    if family in ("lite", "both"):
        members += [("lite", phi, "auto") for phi in range(5)]
    members += [("efficientnet", phi, "formula") for phi in formula_phis]
    rows = []
    for fam, phi, scaling in members:
        c = architecture.coefficients(phi, family=fam, scaling=scaling)
        size = c.resolution if resolution == "native" else int(resolution)
        start = time.perf_counter()
        model = keras_effnet.build(phi, family=fam, scaling=scaling, input_shape=(size, size, 3))
        p = keras_effnet.profile(model)
        paper = PAPER.get((fam, phi)) if scaling == "auto" else None
        rows.append({
            "variant": c.name, "family": fam, "phi": phi, "source": c.source,
            "width": c.width, "depth": c.depth, "resolution": size,
            "params": p.params, "trainable_params": p.trainable_params,
            "gmacs": p.macs / 1e9, "activations_m": p.activations / 1e6,
            "paper_params_m": paper[0] if paper else None, "paper_gflops": paper[1] if paper else None,
            "build_seconds": time.perf_counter() - start,
        })
        del model
        keras.backend.clear_session()
    return rows


def format_table(rows: list[dict]) -> str:
    head = ("| variant | φ | width | depth | res | params | GMACs | activations (M) | paper params | paper GFLOPs |\n"
            "|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        paper_p = "—" if r["paper_params_m"] is None else f"{r['paper_params_m']:g}M"
        paper_f = "—" if r["paper_gflops"] is None else f"{r['paper_gflops']:g}B"
        phi = f"{r['phi']:g}" + (" (formula)" if r["source"] == "formula" else "")
        lines.append(
            f"| {r['variant']} | {phi} | {r['width']:.3f} | {r['depth']:.3f} | {r['resolution']} | "
            f"{r['params']:,} | {r['gmacs']:.3f} | {r['activations_m']:.1f} | {paper_p} | {paper_f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="keras-effnet", description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=("efficientnet", "lite", "both"), default="both")
    parser.add_argument("--resolution", default="native",
                        help="'native' (each variant's own) or a pixel size >= 32 for every row")
    parser.add_argument("--formula_phis", default="3",
                        help="comma-separated phi values to also show through the literal formula ('' for none)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list instead of a table")
    args = parser.parse_args(argv)
    if args.resolution != "native":
        if not args.resolution.isdigit() or int(args.resolution) < 32:
            parser.error(f"--resolution must be 'native' or an integer >= 32, got {args.resolution!r}")
    try:
        formula = [float(v) for v in args.formula_phis.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--formula_phis must be comma-separated numbers, got {args.formula_phis!r}")
    rows = family_rows(args.family, args.resolution, formula)
    if args.json:
        print(json.dumps(rows))
    else:
        print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
