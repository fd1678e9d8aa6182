# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# MediaPipe Tasks, for the test that runs exported models as Android apps do, lives in its own environment:
# its absl-py pin conflicts with tensorflow-model-optimization's (tests/edge/mediapipe-requirements.txt).
MP_VENV := .venv-mediapipe
MP_STAMP := $(MP_VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test test-all lint install clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "keras_effnet needs Python 3.11, got " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(MP_STAMP): tests/edge/mediapipe-requirements.txt
	test -x $(MP_VENV)/bin/python || $(PYTHON) -m venv $(MP_VENV)
	$(MP_VENV)/bin/python -m pip install --quiet -r tests/edge/mediapipe-requirements.txt
	touch $(MP_STAMP)

install: $(STAMP)

# The demo exports the post-training formats; quantization-aware training (qat_int8) adds about 100 s on two
# cores: add --qat_epochs=1 --steps_per_epoch=31 to the export line to include it.
demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m training.demo --out=$(DEMO_DIR)/training
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m edge.export --model=$(DEMO_DIR)/training/train/model.keras \
		--data_dir=$(DEMO_DIR)/training/data --out=$(DEMO_DIR)/edge --max_val_images=300

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: $(STAMP) $(MP_STAMP) lint
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -m "not slow" -q -p no:cacheprovider -n 2 --dist loadgroup

test-all: $(STAMP) $(MP_STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(MP_VENV) $(DEMO_DIR)
