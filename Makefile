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
DEMO_MODEL ?= farmland
APT_PACKAGES := qgis python3-qgis qgis-providers python3-venv python3-dev python3-gdal python3-scipy \
	python3-pyproj libgdal-dev libgeos-dev gdal-bin build-essential xvfb xauth
# Built from source against Debian's GDAL and GEOS (see the install recipe).
FROM_SOURCE := rasterio,pyogrio,shapely
QGIS_PLUGIN_DIR ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default/python/plugins
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install demo test package screenshot clean

install: $(STAMP)

$(STAMP): Makefile engine/requirements.txt engine/pyproject.toml
	@if ! dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi
	@[ -x $(PY) ] || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	# rasterio, pyogrio and shapely are built against Debian's GDAL and GEOS: QGIS loads those
	# too, and one process must not hold two (inside QGIS a shapely wheel's GEOS calls even land
	# in QGIS's older GEOS). A wheel installed earlier (its <name>.libs folder) is rebuilt.
	$(PY) -m pip install -q --no-binary $(FROM_SOURCE) -r engine/requirements.txt
	@site=$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['platlib'])"); \
	wheels=$$(for p in $$(echo $(FROM_SOURCE) | tr , " "); do [ ! -d "$$site/$$p.libs" ] || echo $$p; done); \
	[ -z "$$wheels" ] || $(PY) -m pip install -q --force-reinstall --no-deps \
		--no-binary $(FROM_SOURCE) -c engine/requirements.txt $$wheels
	$(PY) -m pip install -q --no-deps --no-build-isolation -e engine
	$(PY) -c "import sysconfig, json; json.dump({'site_packages': sysconfig.get_paths()['purelib']}, open('qgis_idgbr/engine_path.json', 'w'))"
	mkdir -p $(QGIS_PLUGIN_DIR) && ln -sfn $(CURDIR)/qgis_idgbr $(QGIS_PLUGIN_DIR)/qgis_idgbr
	$(PY) resources/enable_plugin.py $(QGIS_PLUGIN_DIR)/../..
	touch $(STAMP)

demo: install
	$(VENV)/bin/idgbr refine resources/sample/image.tif --coarse resources/sample/coarse.gpkg \
		--model $(DEMO_MODEL) --out demo_out --overwrite --preview
	@echo "demo: outputs and demo_out/preview.png (before / after) written"

test: install
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest tests -q

# The installable plugin zip (Plugins › Install from ZIP): symlinks resolved, no caches, no
# engine_path.json (it names this machine's venv; without it the plugin says how to install the engine).
package:
	rm -rf dist/qgis_idgbr && mkdir -p dist
	cp -rL qgis_idgbr dist/qgis_idgbr
	rm -rf dist/qgis_idgbr/engine_path.json $$(find dist/qgis_idgbr -name __pycache__)
	cd dist && rm -f qgis_idgbr.zip && zip -qr qgis_idgbr.zip qgis_idgbr && rm -rf qgis_idgbr
	@echo "package: dist/qgis_idgbr.zip"

# The real QGIS under Xvfb, plugin enabled in a throwaway profile, the sample refined: docs/screenshot.png.
screenshot: install
	rm -rf .screenshot && mkdir -p .screenshot/profiles/default/python/plugins .screenshot/profiles/default/QGIS
	ln -s $(CURDIR)/qgis_idgbr .screenshot/profiles/default/python/plugins/qgis_idgbr
	printf '[PythonPlugins]\nqgis_idgbr=true\n' > .screenshot/profiles/default/QGIS/QGIS3.ini
	env -u QT_QPA_PLATFORM IDGBR_SAMPLE=$(CURDIR)/resources/sample IDGBR_SCREENSHOT=$(CURDIR)/docs/screenshot.png \
		IDGBR_SCREENSHOT_RUNS=$(CURDIR)/.screenshot/runs \
		xvfb-run -a -s "-screen 0 1600x1000x24" qgis --nologo --noversioncheck --profiles-path $(CURDIR)/.screenshot \
		--code $(CURDIR)/resources/screenshot.py
	rm -rf .screenshot
	@echo "screenshot: docs/screenshot.png, docs/screenshot_1000.png"

clean:
	rm -rf demo_out .pytest_cache dist .screenshot
