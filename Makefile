# The two commands a newcomer runs:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ADAPTERS := adapters/nats adapters/rabbitmq adapters/kafka

.PHONY: setup demo test lint typecheck unit services bench clean proto

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt $(wildcard adapters/*/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24,<27"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[all,dev]' \
		$(foreach a,$(ADAPTERS),-e $(a))
	touch $(STAMP)

demo: setup
	$(BIN)/sagamesh demo

services:
	./scripts/services.sh

lint: setup
	$(BIN)/ruff check sagamesh adapters tests benchmarks examples

typecheck: setup
	$(BIN)/mypy sagamesh adapters/nats/sagamesh_nats adapters/rabbitmq/sagamesh_rabbitmq adapters/kafka/sagamesh_kafka

unit: setup
	$(BIN)/pytest

test: setup services lint typecheck unit

bench: setup services
	$(BIN)/python -m benchmarks.throughput

proto: setup
	$(BIN)/python -m grpc_tools.protoc -I sagamesh/serialization/_proto \
		--python_out=sagamesh/serialization/_proto --pyi_out=sagamesh/serialization/_proto \
		sagamesh/serialization/_proto/saga_event.proto

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
