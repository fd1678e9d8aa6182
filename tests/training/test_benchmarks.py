"""The benchmark commands' own logic: the profile reader and their flag checks (the timings are not tests)."""

import os

import pytest

from benchmarks import train_throughput


def _space(path, events):
    """Write an XSpace with one host plane and one thread line of (name, begin_ms, duration_ms) events."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    plane = space.planes.add(name="/host:CPU")
    line = plane.lines.add(name="tf_Compute")
    for i, (name, begin, duration) in enumerate(events, start=1):
        plane.event_metadata[i].id = i
        plane.event_metadata[i].name = name
        line.events.add(metadata_id=i, offset_ps=begin * 10**9, duration_ps=duration * 10**9)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(space.SerializeToString())


def test_op_self_times_subtract_nested_ops_and_group_by_type(tmp_path):
    # A function-call op of 100 ms runs two convolutions (30 + 20 ms) and a ReLU (10 ms); a second conv runs alone.
    _space(
        str(tmp_path / "plugins" / "profile" / "run1" / "host.xplane.pb"),
        [
            ("sequential/call:StatefulPartitionedCall", 0, 100),
            ("sequential/conv1/Conv2D:Conv2D", 5, 30),
            ("sequential/relu:Relu", 40, 10),
            ("sequential/conv2/Conv2D:Conv2D#id=7#", 60, 20),
            ("other/Conv2D:Conv2D", 200, 50),
            ("$ThreadpoolListener::Record", 300, 5),
            ("ExecutorState::Process", 310, 5),
        ],
    )
    got = train_throughput.op_self_times(str(tmp_path))
    assert got == pytest.approx({"StatefulPartitionedCall": 0.040, "Conv2D": 0.100, "Relu": 0.010})
    rows = train_throughput.profile_table(got, {"Conv2D": 0.300}, steps=2)
    assert rows[2] == "| Conv2D | 50.0 | 150.0 |"
    assert rows[-1] == "| **every op** | **75.0** | **150.0** |"


def test_op_self_times_without_a_profile_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="no profile"):
        train_throughput.op_self_times(str(tmp_path))


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--steps=1"], "--steps=1"),
        (["--rounds=0"], "--rounds=0"),
        (["--data_dir=/no/such/folder"], "/no/such/folder"),
    ],
)
def test_throughput_benchmark_refuses_bad_flags_in_one_line(argv, words, capsys):
    assert train_throughput.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and words in err
