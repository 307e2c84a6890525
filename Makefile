# Set-up and everyday commands. `make test` and `make demo` create the environment when missing.
PYTHON_BASE ?= python3.11
# A detectron2 you built from source: `make env VENV_ARGS=--system-site-packages` lets the
# environment see it, and it is then used as it is instead of the wheel below.
VENV_ARGS ?=
# Another torch build (e.g. for an older NVIDIA driver): a copy of requirements.txt with other
# torch/torchvision lines, `make env REQUIREMENTS=my-requirements.txt` (see README: GPUs).
REQUIREMENTS ?= requirements.txt
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# detectron2 is not on the registry under its own name: this wheel is upstream detectron2
# (a59f0563, 2024-04) in pure Python plus a CPython-3.10 `_C` that never loads here.
D2_WHEEL := sal-detectron2==0.7.2
D2_SHA256 := 491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561

.PHONY: env d2-wheel test test-all lint demo data clean-env info bench-quality bench-regimes bench-cost bench-label-next bench-coco-scale

env: $(STAMP)

$(STAMP): $(REQUIREMENTS) setup.cfg Makefile
	test -x $(PY) || $(PYTHON_BASE) -m venv $(VENV_ARGS) $(VENV)
	$(PY) -m pip install --quiet -r $(REQUIREMENTS)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@if $(PY) -c "import detectron2" 2>/dev/null; then \
		echo "detectron2 already importable: using it as it is"; \
	else \
		$(MAKE) --no-print-directory d2-wheel; \
	fi
	$(PY) -m softteacher.env
	touch $(STAMP)

d2-wheel:
	$(eval SITE := $(shell $(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])"))
	$(eval TMP := $(shell mktemp -d))
	echo "$(D2_WHEEL) --hash=sha256:$(D2_SHA256)" > $(TMP)/req.txt
	$(PY) -m pip install --quiet --no-deps --only-binary=:all: --python-version 3.10 \
		--require-hashes --target $(TMP)/site -r $(TMP)/req.txt
	rm -rf $(TMP)/site/tools $(TMP)/site/bin
	cp -r $(TMP)/site/. $(SITE)/
	rm -rf $(TMP)

test: env
	$(PY) -m pytest -q tests

lint: env
	$(PY) -m ruff check projects tests tools bench train_net.py

test-all: env
	$(PY) -m pytest -q -m "slow or not slow" tests

data: env
	$(PY) -c "from softteacher.datasets import ensure_shapes; print(ensure_shapes())"

# The main job: Soft Teacher on the embedded data (generated on first use), 10 % labeled.
# Leaves metrics.json, training_curves.png and pseudo_labels/*.png in its output folder.
DEMO_CONFIG := configs/Shapes/soft_teacher_R18_FPN_10pct_demo.yaml
demo: env
	$(PY) train_net.py --config-file $(DEMO_CONFIG) $(DEMO_ARGS)

# Benchmarks (run alone: they measure this machine). Results in bench/results/.
bench-quality: env
	$(PY) bench/quality.py $(BENCH_ARGS)

bench-regimes: env
	$(PY) bench/regimes.py $(BENCH_ARGS)

bench-cost: env
	$(PY) bench/cost.py $(BENCH_ARGS)

bench-label-next: env
	$(PY) bench/label_next.py $(BENCH_ARGS)

bench-coco-scale: env
	$(PY) bench/coco_scale.py $(BENCH_ARGS)

info: env
	$(PY) -m softteacher.env

clean-env:
	rm -rf $(VENV)
