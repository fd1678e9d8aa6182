"""The pure scaling rules and tables against the published ones (Tan & Le 2019 and 2021, tensorflow/tpu, keras.applications)."""

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_effnet import architecture as arch
from keras_effnet import families

KERAS_FREE = True  # pure functions and tables: no Keras session to reset

# Published (tensorflow/tpu, keras.applications): MBConv blocks and head channels per preset.
BLOCKS = {0: 16, 1: 23, 2: 23, 3: 26, 4: 32, 5: 39, 6: 45, 7: 55}
HEAD = {0: 1280, 1: 1280, 2: 1408, 3: 1536, 4: 1792, 5: 2048, 6: 2304, 7: 2560}
PRESETS = {  # width, depth, res, dropout
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 300, 0.3),
    4: (1.4, 1.8, 380, 0.4),
    5: (1.6, 2.2, 456, 0.4),
    6: (1.8, 2.6, 528, 0.5),
    7: (2.0, 3.1, 600, 0.5),
    8: (2.2, 3.6, 672, 0.5),
}
LITE = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
    3: (1.2, 1.4, 280, 0.3),
    4: (1.4, 1.8, 300, 0.3),
}


@pytest.mark.parametrize(
    "filters,width,expected",
    [
        (32, 1.0, 32),
        (32, 1.1, 32),
        (32, 1.2, 40),
        (1280, 1.1, 1408),
        (1280, 2.0, 2560),
        (16, 1.4, 24),
        (24, 1.1, 24),
        (40, 1.8, 72),
        (320, 1.2, 384),
        (8, 0.1, 8),
    ],
)
def test_round_filters(filters, width, expected):
    assert arch.round_filters(filters, width) == expected


def test_round_filters_never_loses_more_than_ten_percent():
    # 28 * 1.0 would round to 24 (a 14% loss) without the guard; the guard adds a divisor back.
    assert arch.round_filters(28, 1.0) == 32
    assert arch.round_filters(12, 1.0) == 16


@given(st.floats(1, 2000), st.floats(0.05, 8))
def test_round_filters_properties(filters, width):
    out = arch.round_filters(filters, width)
    assert out % 8 == 0 and out >= 8
    assert out >= 0.9 * filters * width


@pytest.mark.parametrize("repeats,depth,expected", [(1, 1.0, 1), (2, 1.1, 3), (3, 1.4, 5), (4, 3.1, 13), (1, 1.8, 2)])
def test_round_repeats(repeats, depth, expected):
    assert arch.round_repeats(repeats, depth) == expected


def test_drop_connect_schedule_rises_linearly_from_zero():
    rates = [arch.drop_connect_schedule(i, 16, 0.2) for i in range(16)]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2 * 15 / 16)
    assert all(b > a for a, b in zip(rates, rates[1:]))


@pytest.mark.parametrize("phi", sorted(PRESETS))
def test_presets(phi):
    c = arch.coefficients(phi)
    assert (c.width, c.depth, c.resolution, c.dropout) == PRESETS[phi]
    assert c.source == "preset"
    if phi < 8:
        assert c.name == f"efficientnetb{phi}"
        spec = arch.model_spec(c)
        assert len(spec.blocks) == BLOCKS[phi]
        assert spec.head_filters == HEAD[phi]


@pytest.mark.parametrize("phi", sorted(LITE))
def test_lite_presets(phi):
    c = arch.coefficients(phi, family="lite")
    assert (c.width, c.depth, c.resolution, c.dropout) == LITE[phi]
    spec = arch.model_spec(c)
    assert spec.activation == "relu6" and spec.stem_filters == 32 and spec.head_filters == 1280
    assert all(b.se_filters == 0 for b in spec.blocks)
    stage_counts = {}
    for b in spec.blocks:
        stage_counts[b.name[5]] = stage_counts.get(b.name[5], 0) + 1
    assert stage_counts["1"] == 1 and stage_counts["7"] == 1  # first and last stage not scaled


def test_formula_at_phi_3_is_not_b3():
    c = arch.coefficients(3, scaling="formula")
    assert c.source == "formula"
    assert c.depth == pytest.approx(1.728) and c.width == pytest.approx(1.331) and c.resolution == 341
    assert arch.coefficients(3).resolution == 300


def test_non_integer_phi_and_custom_multipliers_use_formula():
    c = arch.coefficients(2.5)
    assert c.source == "formula" and c.depth == pytest.approx(1.2**2.5) and c.width == pytest.approx(1.1**2.5)
    assert c.resolution == round(224 * 1.15**2.5)
    c = arch.coefficients(1, alpha=1.4, beta=1.05, gamma=1.1)
    assert c.source == "formula" and c.depth == pytest.approx(1.4)


def test_formula_dropout_reproduces_presets():
    for phi, (_, _, _, dropout) in PRESETS.items():
        assert arch.formula_dropout(phi) == pytest.approx(dropout)


def test_b0_stage_table_matches_the_paper():
    rows = [
        (s.kernel_size, s.repeats, s.filters_in, s.filters_out, s.expand_ratio, s.strides) for s in families.B0_STAGES
    ]
    assert rows == [
        (3, 1, 32, 16, 1, 1),
        (3, 2, 16, 24, 6, 2),
        (5, 2, 24, 40, 6, 2),
        (3, 3, 40, 80, 6, 2),
        (5, 3, 80, 112, 6, 1),
        (5, 4, 112, 192, 6, 2),
        (3, 1, 192, 320, 6, 1),
    ]
    # SE bottleneck is 1/4 of the block *input* channels: block2a gets 16 in -> 4.
    spec = arch.model_spec(arch.coefficients(0))
    assert spec.blocks[1].name == "block2a_" and spec.blocks[1].se_filters == 4
    assert spec.blocks[2].name == "block2b_" and spec.blocks[2].se_filters == 6


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan"), float("inf"), -float("inf"), 12.5, 100])
def test_bad_phi_values(bad):
    with pytest.raises(ValueError, match="phi"):
        arch.coefficients(bad)


@pytest.mark.parametrize("bad", [True, False, "3", None, [3], 3j])
def test_bad_phi_types(bad):
    with pytest.raises(TypeError, match="phi"):
        arch.coefficients(bad)


@pytest.mark.parametrize("bad", [5, 2.5, 4.5, 8])
def test_lite_phi_must_be_0_to_4(bad):
    with pytest.raises(ValueError, match=r"phi=.*Lite.*0\.\.4"):
        arch.coefficients(bad, family="lite")


def test_unknown_family_and_scaling():
    with pytest.raises(ValueError, match="family must be one of .*'mobilenet'"):
        arch.coefficients(0, family="mobilenet")
    with pytest.raises(ValueError, match="scaling"):
        arch.coefficients(0, scaling="magic")
    with pytest.raises(ValueError, match="scaling='preset'"):
        arch.coefficients(2.5, scaling="preset")


@pytest.mark.parametrize("name", ["alpha", "beta", "gamma"])
@pytest.mark.parametrize("bad", [0, -1.2, float("nan"), float("inf")])
def test_bad_multipliers(name, bad):
    with pytest.raises(ValueError, match=name):
        arch.coefficients(1.5, **{name: bad})


@settings(max_examples=200, deadline=None)
@given(
    phi=st.floats(0, families.MAX_PHI),
    alpha=st.floats(1.0, 2.0),
    beta=st.floats(1.0, 2.0),
    gamma=st.floats(1.0, 2.0),
)
def test_coefficients_properties(phi, alpha, beta, gamma):
    c = arch.coefficients(phi, alpha=alpha, beta=beta, gamma=gamma, scaling="formula")
    assert c.depth == pytest.approx(alpha**phi) and c.width == pytest.approx(beta**phi)
    assert abs(c.resolution - 224 * gamma**phi) <= 0.5 + 1e-6
    assert c.dropout == pytest.approx({0: 0.2, 1: 0.3, 2: 0.4}.get(int(phi // 2), 0.5))  # the presets' steps
    spec = arch.model_spec(c)
    assert len(spec.blocks) == sum(math.ceil(c.depth * s.repeats) for s in families.B0_STAGES)
    names = [b.name for b in spec.blocks]
    assert len(set(names)) == len(names)
    assert all(0 <= b.drop_rate < 0.2 + 1e-9 for b in spec.blocks)


# ----------------------------------------------------------------------------- EfficientNetV2

V2_PRESETS = {  # width, depth, eval res, train res, dropout (google/automl effnetv2_configs.py)
    0: (1.0, 1.0, 224, 192, 0.2),
    1: (1.0, 1.1, 240, 192, 0.2),
    2: (1.1, 1.2, 260, 208, 0.3),
    3: (1.2, 1.4, 300, 240, 0.3),
}
V2_TABLES = {
    "efficientnetv2-b0": "v2-b0",
    "efficientnetv2-s": "v2-s",
    "efficientnetv2-m": "v2-m",
    "efficientnetv2-l": "v2-l",
}


def _keras_applications_v2():
    from keras.src.applications import efficientnet_v2

    return efficientnet_v2


@pytest.mark.parametrize("name,table", sorted(V2_TABLES.items()))
def test_v2_stage_tables_are_keras_applications(name, table):
    rows = [
        (
            1 if s.block == "fused" else 0,
            s.kernel_size,
            s.repeats,
            s.filters_in,
            s.filters_out,
            s.expand_ratio,
            s.strides,
            s.se_ratio,
        )
        for s in families.STAGE_TABLES[table]
    ]
    theirs = [
        (
            a["conv_type"],
            a["kernel_size"],
            a["num_repeat"],
            a["input_filters"],
            a["output_filters"],
            a["expand_ratio"],
            a["strides"],
            a["se_ratio"],
        )
        for a in _keras_applications_v2().DEFAULT_BLOCKS_ARGS[name]
    ]
    assert rows == theirs


@given(st.floats(1, 2000), st.floats(0.05, 8))
def test_v2_rounding_is_keras_applications(filters, width):
    """No 10% guard and a minimum depth of 8 in V2's rule."""
    ka = _keras_applications_v2()
    assert arch.round_filters(filters, width, min_depth=8, guard=False) == ka.round_filters(filters, width, 8, 8)


def test_v2_rounding_differs_from_v1_where_the_guard_acts():
    assert arch.round_filters(16, 1.2) == 24  # V1: 16 would lose 17% of 19.2
    spec = arch.model_spec(arch.coefficients(3, family="v2"))
    assert spec.blocks[0].filters_out == 16 and spec.stem_filters == 40 and spec.head_filters == 1536


@pytest.mark.parametrize("phi", sorted(V2_PRESETS))
def test_v2_presets_report_train_and_eval_resolution(phi):
    c = arch.coefficients(phi, family="v2")
    assert (c.width, c.depth, c.resolution, c.train_resolution, c.dropout) == V2_PRESETS[phi]
    assert c.source == "preset" and c.name == f"efficientnetv2-b{phi}" and c.stages == "v2-b0"
    spec = arch.model_spec(c)
    assert spec.bn_momentum == 0.9 and spec.padding == "same" and spec.depthwise_name == "dwconv2"
    assert [b.block for b in spec.blocks][:5] == ["fused"] * 5
    assert all(b.se_filters == 0 for b in spec.blocks if b.block == "fused")
    assert all(b.se_filters > 0 for b in spec.blocks if b.block == "mbconv")


def test_v2_named_members_and_formula():
    s = arch.variant_coefficients("efficientnetv2-s")
    assert (s.phi, s.resolution, s.train_resolution, s.dropout, s.stages) == (None, 384, 300, 0.2, "v2-s")
    assert [
        (arch.variant_coefficients(n).resolution, arch.variant_coefficients(n).train_resolution)
        for n in ("efficientnetv2-m", "efficientnetv2-l")
    ] == [(480, 384), (480, 384)]
    spec = arch.model_spec(s)
    assert spec.stem_filters == 24 and spec.head_filters == 1280 and len(spec.blocks) == 40
    assert spec.preprocessing == families.MINUS_ONE_TO_ONE
    f = arch.coefficients(2.5, family="v2")
    assert f.source == "formula" and f.name == "efficientnetv2_phi2p5" and f.stages == "v2-b0"
    assert f.train_resolution == round(0.8 * f.resolution)
    assert arch.coefficients(4, family="v2").source == "formula"


def test_variants_cover_every_family():
    names = arch.variants()
    assert names[:9] == tuple(f"efficientnetb{i}" for i in range(9))
    assert set(names) >= {f"efficientnetlite{i}" for i in range(5)} | {f"efficientnetv2-b{i}" for i in range(4)}
    assert names[-3:] == ("efficientnetv2-s", "efficientnetv2-m", "efficientnetv2-l")
    for name in names:
        assert arch.variant_coefficients(name).name == name
    with pytest.raises(ValueError, match="name must be one of the variants .*got 'efficientnet-b0'"):
        arch.variant_coefficients("efficientnet-b0")


@pytest.mark.parametrize("table,k", [("b0", 0), ("b0", 4), ("v2-b0", 0), ("v2-l", 7)])
def test_with_fused_stages_changes_only_the_block_type(table, k):
    base = families.STAGE_TABLES[table]
    out = arch.with_fused_stages(base, k)
    assert [s.block for s in out] == ["fused"] * k + ["mbconv"] * (len(base) - k)
    assert [dataclasses.replace(s, block="x") for s in out] == [dataclasses.replace(s, block="x") for s in base]
    assert arch.with_fused_stages(base, None) is base


@pytest.mark.parametrize("bad", [-1, 8, 2.0, True, "1"])
def test_fused_stages_out_of_range(bad):
    with pytest.raises(ValueError, match=r"fused_stages must be None or an integer 0\.\.7 .*'efficientnet'.*got"):
        arch.model_spec(arch.coefficients(0), fused_stages=bad)
