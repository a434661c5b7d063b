# Every target goes through dev.py, which makes .venv and installs what it needs.
PY ?= python3

.PHONY: run test lint bench install
run:
	$(PY) dev.py run
test:
	$(PY) dev.py test
lint:
	$(PY) dev.py lint
bench:
	$(PY) dev.py bench
install:
	$(PY) dev.py install
