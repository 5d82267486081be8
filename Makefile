# kubeletpy — the two commands of the quick start are `make up` and `make test`.
# Every target installs what it needs first, idempotently, on a fresh Debian 12 as root.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMPS     := .stamps
PYTHON     ?= $(shell command -v python3.11 || command -v python3)
PYTEST_ARGS ?=

# Debian packages the runtime, its tests and its benchmarks use.
APT_PACKAGES := python3 python3-venv python3-dev gcc make git ca-certificates \
  libcap-dev libseccomp2 libseccomp-dev iproute2 iptables nftables procps psmisc \
  busybox-static docker-registry apache2-utils skopeo umoci etcd-server etcd-client \
  containernetworking-plugins crun runc containerd

PROTOS := $(wildcard proto/*.proto)

.PHONY: help install proto up down test lint bench clean
help:
	@echo "make up      install, start the single-node cluster, run the example pod"
	@echo "make test    install, then run the test suite (as root)"
	@echo "make down    stop everything kubeletpy started and clean the host"
	@echo "make bench   run the benchmarks in bench/"
	@echo "make install the install step alone (apt packages, $(VENV), the project)"

# $(call apt_ensure,PACKAGES): install the missing ones, touching apt only when something is missing.
define apt_ensure
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

$(STAMPS)/apt: Makefile
	@mkdir -p $(STAMPS)
	$(call apt_ensure,$(APT_PACKAGES))
	@touch $@

$(STAMPS)/venv: $(STAMPS)/apt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# Generated gRPC/protobuf code for the CRI API lives in cri/api/ and is never committed.
$(STAMPS)/proto: $(STAMPS)/venv $(PROTOS)
	@mkdir -p cri/api
	@if [ -n "$(PROTOS)" ]; then \
	  $(PY) -m grpc_tools.protoc -Icri/api=proto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS); \
	fi
	@touch $@

install: $(STAMPS)/apt $(STAMPS)/venv $(STAMPS)/proto

proto: $(STAMPS)/proto

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	@if [ "$$(id -u)" != 0 ]; then echo "make test: the suite creates namespaces, mounts and cgroups; run it as root" >&2; exit 1; fi
	$(VENV)/bin/pytest $(PYTEST_ARGS)

KUBECTL ?= kubectl --kubeconfig /etc/kubeletpy/admin.kubeconfig

# Start the single-node cluster, run the example web pod, and GET it over its pod IP.
up: install
	$(VENV)/bin/kubeletpy up
	$(KUBECTL) apply -f examples/web.yaml
	$(KUBECTL) wait --for=condition=Ready pod/web --timeout=120s
	$(KUBECTL) get pods -o wide
	@# after `down` and `up` the pod's status may still name its old sandbox for a moment
	@# (the agent re-creates it): read the IP again until the GET answers
	@for i in $$(seq 1 60); do \
	  ip=$$($(KUBECTL) get pod web -o jsonpath='{.status.podIP}'); \
	  out=$$(timeout 3 busybox wget -qO- "http://$$ip:8080/" 2>/dev/null) && { echo "GET http://$$ip:8080/ ->"; echo "$$out"; exit 0; }; \
	  sleep 0.5; \
	done; echo "GET http://$$ip:8080/ failed" >&2; timeout 3 busybox wget -qO- "http://$$ip:8080/"

down: install
	$(VENV)/bin/kubeletpy down

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(STAMPS) cri/api/*_pb2*.py cri/api/*_pb2*.pyi
