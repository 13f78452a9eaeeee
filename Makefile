# IDGBR for QGIS — `make demo` runs the main job, `make test` runs the whole suite.
# Both depend on `make install`, which is idempotent (a stamp file in the venv).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# CPU build by default. GPU users: make install TORCH_INDEX=https://download.pytorch.org/whl/cu126
# (any CUDA wheel index matching your driver; TORCH_SPEC picks the version).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
# The best model the repository ships for the bundled sample.
DEMO_MODEL ?= identity
APT_PACKAGES := qgis python3-qgis qgis-providers python3-venv python3-dev python3-gdal python3-scipy \
	python3-pyproj libgdal-dev gdal-bin build-essential xvfb xauth
QGIS_PLUGIN_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): Makefile engine/requirements.txt engine/pyproject.toml
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	# rasterio and pyogrio are built against Debian's GDAL: QGIS loads that GDAL too, and one
	# process must not hold two.
	$(PY) -m pip install -q --no-binary rasterio,pyogrio -r engine/requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e engine
	$(PY) -c "import sysconfig, json; json.dump({'site_packages': sysconfig.get_paths()['purelib']}, open('qgis_idgbr/engine_path.json', 'w'))"
	mkdir -p $(QGIS_PLUGIN_DIR) && ln -sfn $(CURDIR)/qgis_idgbr $(QGIS_PLUGIN_DIR)/qgis_idgbr
	touch $(STAMP)

demo: install
	$(VENV)/bin/idgbr refine resources/sample/image.tif --coarse resources/sample/coarse.gpkg \
		--model $(DEMO_MODEL) --out demo_out --overwrite --preview
	@echo "demo: outputs and demo_out/preview.png (before / after) written"

test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest tests -q

clean:
	rm -rf demo_out .pytest_cache
