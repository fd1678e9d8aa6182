#!/bin/sh
# How tests/edge/data/litert_benchmark_session.log was made: the marker lines an edge.android script prints,
# each followed by the verbatim output (stdout and stderr) of LiteRT's litert-benchmark on this host; only the
# install prefix of ai_edge_litert in its log lines is shortened to .../site-packages.
# Run in a folder holding model_int8.tflite (B0 at 64 px, PTQ int8, float I/O) and model_int8_uint8io.tflite
# (the same with uint8 I/O):  sh make_litert_benchmark_session.sh | sed 's#<prefix>/site-packages#.../site-packages#g'
LB=litert-benchmark
echo "### device: host (litert-benchmark, ai-edge-litert 2.3.0)"
for f in model_int8.tflite model_int8_uint8io.tflite; do
  for n in 1 2; do
    echo "### edge.android file=$f config=litert_cpu_${n}t"
    $LB --model=$f --num_threads=$n --num_runs=20 --warmup_runs=3 2>&1 || echo "### edge.android failed file=$f config=litert_cpu_${n}t"
  done
done
echo "### edge.android file=missing.tflite config=litert_cpu_1t"
$LB --model=missing.tflite --num_threads=1 2>&1 || echo "### edge.android failed file=missing.tflite config=litert_cpu_1t"
