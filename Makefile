# ShopLens developer entry points. The README's first two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
SL := $(VENV)/bin/shoplens
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
DEMO_OUT ?= out/demo
# Two pytest workers (pytest-xdist), one per core; each test file stays on one worker, so its
# module fixtures are built once. `make test PYTEST_ARGS='-n 0 tests/test_colour.py'` runs one file
# serially. The suite takes about 16 min this way on 2 cores, against 25 min serially.
PYTEST_ARGS ?= -n 2 --dist loadfile
export TF_CPP_MIN_LOG_LEVEL ?= 2
# the [convert] extra of pyproject.toml, split so that TFMOT's stale absl-py pin is not re-resolved
CONVERT_DEPS := 'tensorflow>=2.21,<2.22' 'tf-keras>=2.21,<2.22' 'dm-tree~=0.1.1' mock scipy six
TFMOT := 'tensorflow-model-optimization>=0.8.1,<0.9'
# setuptools prints an "Editable installation" notice for every editable install of a two-root
# layout (sdk/, converter/); the set-up output stays clean without it (other warnings still show)
export PYTHONWARNINGS ?= ignore:Editable installation

.PHONY: help setup data browser demo test lint clean train-reference release-model bench fuzz soak zoo battery

help:
	@echo "make demo   - set up .venv and run the main job end to end on the built-in data"
	@echo "make test   - set up .venv and run lint plus the whole test suite"
	@echo "make train-reference - retrain the reference model (about 45 minutes on 2 CPU cores)"
	@echo "make release-model - re-convert the released int8 model and refit its open-set profile (reference_model/release)"
	@echo "make bench  - measure speed, memory, sizes and accuracy; regenerate docs/benchmarks.md (hours; resumes)"
	@echo "make fuzz   - 5,000 mutated models and 20,000 fuzzed frames"
	@echo "make soak   - a million frames through one LIVE_STREAM classifier"
	@echo "make zoo    - every recipe on 11 Keras Applications architectures and their transfer wrappers (hours)"
	@echo "make battery - every command against every kind of bad input; nothing lost (~15 min)"

# --- set-up -------------------------------------------------------------------------------
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	@# The runtime, dev tools, MediaPipe (the independent client our metadata is tested in) and the
	@# converter's dependencies in one resolution. TFMOT 0.8.1 declares absl-py~=1.2 while MediaPipe
	@# needs absl-py~=2.3; TFMOT runs with 2.x (every QAT/pruning test does), so it is installed last,
	@# without re-resolving its dependencies: the set-up prints no resolver conflict.
	$(PIP) install --quiet -e '.[dev,bench,search,colour]' $(CONVERT_DEPS)
	$(PIP) install --quiet --no-deps $(TFMOT)
	@touch $@

# A second venv pinned to tflite-runtime 2.14, which is built against numpy 1.x: the SDK's
# tflite_runtime back end (Coral boards) is tested there. The runtime is installed without its
# ai-edge-litert dependency, as on such a device.
VENV_TFLRT ?= .venv-tflrt
$(VENV_TFLRT)/.installed: pyproject.toml
	@test -x $(VENV_TFLRT)/bin/python || $(PYTHON) -m venv $(VENV_TFLRT)
	$(VENV_TFLRT)/bin/python -m pip install --quiet "tflite-runtime==2.14.0" "numpy>=1.24,<2" \
		"opencv-python-headless>=4.8,<4.12" "typer>=0.29,<1" "rich>=13,<16" "pytest>=8,<10"
	$(VENV_TFLRT)/bin/python -m pip install --quiet --no-deps -e .
	@touch $@

# Apache Beam (catalog-scale drift and index builds) in its own venv: the runtime and Beam only, as on
# a Beam worker (no TensorFlow there; into the converter's venv Beam would pull another protobuf).
VENV_BEAM ?= .venv-beam
$(VENV_BEAM)/.installed: pyproject.toml
	@test -x $(VENV_BEAM)/bin/python || $(PYTHON) -m venv $(VENV_BEAM)
	$(VENV_BEAM)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_BEAM)/bin/python -m pip install --quiet -e '.[beam,search]' "pytest>=8,<10"
	@touch $@

setup: $(VENV)/.installed $(VENV_TFLRT)/.installed $(VENV_BEAM)/.installed data browser

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package; nothing is downloaded at run time.
data:
	@if [ -n "$$FASHION_MNIST_DIR" ] || [ -f $(FMNIST) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing dataset-fashion-mnist with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	else \
		echo "Fashion-MNIST is missing. Run: sudo apt-get install dataset-fashion-mnist" >&2; exit 1; \
	fi

# The HTML pages (drift reports, the kiosk sample) are tested in a real headless Chromium: Debian's
# package, driven by Playwright's Python client. No browser is downloaded by Playwright itself.
browser:
	@if command -v chromium >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Chromium is missing. Run: sudo apt-get install chromium" >&2; exit 1; \
	fi

# --- the README's two commands ------------------------------------------------------------
demo: setup
	@mkdir -p $(DEMO_OUT)
	@echo "== 1/6 convert the reference model to int8 under an accuracy guard (1 pt, 98 % agreement on 2,000 test images), with its embedding model"
	$(SL) convert sample_apps/reference_model/product_cnn.keras --out $(DEMO_OUT)/model --recipe int8 --embedding auto \
		--calib-data fashion-mnist:train:300 --eval-data fashion-mnist:test:2000 --max-drop 1.0 --min-agreement 98 \
		--overwrite
	@echo "== 2/6 the Keras reference model on the full Fashion-MNIST test set (10,000 images)"
	$(SL) eval sample_apps/reference_model/product_cnn.keras --data fashion-mnist:test \
		--save $(DEMO_OUT)/eval_test.json --overwrite
	@echo "== 3/6 2,000 kiosk frames from the test split (10 % deliberately bad)"
	$(SL) data kiosk --source fashion-mnist:test --frames 2000 --seed 2026 --bad-fraction 0.1 \
		--out $(DEMO_OUT)/kiosk_frames --overwrite
	$(SL) eval sample_apps/reference_model/product_cnn.keras --data kiosk:$(DEMO_OUT)/kiosk_frames:good \
		--save $(DEMO_OUT)/eval_kiosk.json --overwrite
	@echo "== 4/6 kiosk video (MJPG) with its ground truth"
	$(SL) data kiosk --source fashion-mnist:test --frames 450 --video --segment 45 --seed 7 --bad-fraction 0.2 \
		--out $(DEMO_OUT)/kiosk_video --overwrite
	@echo "== 5/6 the converted model on the video: quality gate and smoothing, one JSON line per frame"
	$(SL) classify $(DEMO_OUT)/model/model.tflite $(DEMO_OUT)/kiosk_video/kiosk.avi --smooth --quality warn \
		--json > $(DEMO_OUT)/video_predictions.jsonl
	@echo "== 6/6 accuracy-drift gate: the int8 model against its Keras source (HTML report)"
	$(SL) drift sample_apps/reference_model/product_cnn.keras $(DEMO_OUT)/model/model.tflite \
		--data fashion-mnist:test:2000 --max-drop 1 --min-agreement 98 \
		--html $(DEMO_OUT)/drift.html --save $(DEMO_OUT)/drift.json --overwrite
	@echo "demo outputs are in $(DEMO_OUT)/ (conversion report: $(DEMO_OUT)/model/report.md, drift: $(DEMO_OUT)/drift.html)"

test: setup lint
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; fi; exit $$rc

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check sdk converter tests sample_apps tools benchmarks device_tests
	$(VENV)/bin/mypy --strict sdk/shoplens

train-reference: setup
	$(PY) sample_apps/reference_model/train.py --epochs 10

# The converted reference model, committed so the TensorFlow-free install has a model to run
# (docs/quickstart_kiosk.md); re-run after train-reference. The same recipe as `make demo`.
RELEASE := sample_apps/reference_model/release
release-model: setup
	$(SL) convert sample_apps/reference_model/product_cnn.keras --out $(RELEASE) --recipe int8 --embedding auto \
		--calib-data fashion-mnist:train:300 --eval-data fashion-mnist:test:2000 --max-drop 1.0 --overwrite
	$(PY) -m benchmarks.open_set --profile-out $(RELEASE)/open_set_profile.npz  # refit its open-set profile

clean:
	rm -rf $(VENV) $(VENV_TFLRT) $(VENV_BEAM) out build *.egg-info .pytest_cache .ruff_cache .mypy_cache

# Untrusted models and frames: 5,000 mutated models through an isolated worker, 20,000 fuzzed frames.
fuzz: setup
	$(PY) -m benchmarks.fuzz_models --n 5000 --seed 2
	SHOPLENS_FUZZ_EXAMPLES=20000 $(PY) -m pytest tests/test_fuzz_frames.py -q -p no:cacheprovider

# A million frames through one LIVE_STREAM classifier: RSS, frame accounting, latency drift.
soak: setup
	$(PY) -m benchmarks.soak --frames 1000000

# The bad-input battery: every command against every kind of bad input (docs/reliability.md).
battery: setup
	$(PY) -m benchmarks.battery

# Every cell of the model-zoo matrix (22 models x 9 recipes); writes docs/model_zoo.md and
# benchmarks/results/zoo-DATE.json. CI runs a slice of reduced-size builds (tests/test_model_zoo.py).
# Hours on 2 cores: it resumes, keeping models out/zoo/cells already holds (rm -r out/zoo to start over).
zoo: setup
	$(PY) -m benchmarks.zoo --resume $(ZOO_ARGS)
	$(PY) sample_apps/transfer_learning/train.py --out out/transfer --page docs/transfer_learning.md

# Speed and memory targets are checked here, never as timed tests. Writes docs/benchmarks.md. Each
# finished section is kept in benchmarks/results/bench-partial.json at once; a stopped run resumes.
bench: setup
	$(PY) -m benchmarks --resume $(BENCH_ARGS)
