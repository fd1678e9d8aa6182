# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo_out

.PHONY: demo test test-all install clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "keras_effnet needs Python 3.11, got " + sys.version'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m training.demo --out=$(DEMO_DIR)/training
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m edge.export --model=$(DEMO_DIR)/training/train/model.keras \
		--data_dir=$(DEMO_DIR)/training/data --out=$(DEMO_DIR)/edge --qat_epochs=1

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -m "not slow" -q -p no:cacheprovider

test-all: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) $(DEMO_DIR)
