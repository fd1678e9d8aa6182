"""edge/: quantization-aware training, TFLite export of every format, evaluation and benchmarks.

edge.qat.quantize(model)                      # a tfmot QAT model of any keras_effnet model
edge.export.export_all(model_path, data_dir, out_dir, formats=..., qat_epochs=0)
edge.saved_model.write(model, class_names, directory)   # the serving SavedModel (also --formats=saved_model)
python -m edge.qat | edge.export | edge.benchmark | edge.android
"""
