# Two commands on a fresh Debian 12 machine, as root:
#   make run    set up, then start `busted monitor`
#   make test   set up, then run the whole test suite
VENV := .venv
BUSTED := $(VENV)/bin/busted
PYTEST := $(VENV)/bin/pytest

.PHONY: setup run test lint bench install-service image

setup:
	@bash deploy/setup-host.sh

run: setup
	$(BUSTED) monitor $(ARGS)

test: setup
	$(PYTEST) -q -ra tests $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check busted gui tests bench

bench: setup
	$(BUSTED) bench pipeline

install-service: setup
	bash deploy/systemd/install-service.sh

image:
	bash deploy/build-image.sh
