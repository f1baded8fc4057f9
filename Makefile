# The two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done
PROTOS := $(wildcard proto/weightgate/v1/*.proto)
APT_PACKAGES := swtpm swtpm-tools tpm2-tools libtss2-dev build-essential pkg-config gnutls-bin libssl-dev
# The C modules (setup.py): the IMA hot path and the quote framing; pip rebuilds them
# when a source changes.
NATIVE_SOURCES := setup.py $(wildcard verifier/evidence/tpm/native/*.c verifier/evidence/tpm/native/*.h verifier/evidence/tpm/native_quote/*.c verifier/evidence/tpm/native_common/*)

.PHONY: setup demo test lint typecheck contracts protos check-protos bench fuzz clean

setup: $(STAMP_PIP)

$(STAMP_APT):
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi
	@test -d $(VENV) || python3 -m venv $(VENV)
	@touch $@

$(STAMP_PIP): $(STAMP_APT) pyproject.toml $(NATIVE_SOURCES)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

protos: $(STAMP_PIP)
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=proto --grpc_python_out=proto \
	  --mypy_out=proto --mypy_grpc_out=proto $(PROTOS)

# Fails when the committed generated code differs from what the pinned generator makes.
check-protos: $(STAMP_PIP)
	@tmp=$$(mktemp -d); \
	PATH=$(VENV)/bin:$$PATH $(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --grpc_python_out=$$tmp \
	  --mypy_out=$$tmp --mypy_grpc_out=$$tmp $(PROTOS) && \
	diff -r -x '__init__.py' -x 'py.typed' -x '*.proto' -x '__pycache__' $$tmp/weightgate/v1 proto/weightgate/v1 \
	  && echo "generated protobuf code is up to date"; rc=$$?; rm -rf $$tmp; exit $$rc

lint: $(STAMP_PIP)
	for f in verifier/evidence/tpm/native/*.c verifier/evidence/tpm/native_quote/*.c verifier/evidence/tpm/native_common/*.c; do gcc -fsyntax-only -std=c11 -Wall -Wextra -Wno-unused-parameter \
	  -Werror -I$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])') $$f || exit 1; done
	$(VENV)/bin/ruff check agent verifier devsim tests bench tools proto/weightgate/checkpoint proto/weightgate/gpu_nonce.py proto/weightgate/cvm_binding.py
	$(VENV)/bin/ruff format --check agent verifier devsim tests bench tools proto/weightgate/checkpoint proto/weightgate/gpu_nonce.py proto/weightgate/cvm_binding.py

typecheck: $(STAMP_PIP)
	$(VENV)/bin/mypy agent verifier devsim tools proto/weightgate/checkpoint proto/weightgate/gpu_nonce.py proto/weightgate/cvm_binding.py

contracts: $(STAMP_PIP)
	$(VENV)/bin/lint-imports

test: $(STAMP_PIP) check-protos lint typecheck contracts
	$(PY) -m pytest -q tests

demo: $(STAMP_PIP)
	$(VENV)/bin/weightgate demo

bench: $(STAMP_PIP)
	$(PY) bench/bench_quote.py
	$(PY) bench/bench_eventlog.py
	$(PY) bench/weights.py --size 1GiB
	bash ../shared/bench/keylime/setup.sh
	$(PY) bench/tpm_verify.py --rounds 3
	bash ../shared/bench/nvidia/setup.sh && $(PY) bench/gpu_verify.py
	$(PY) bench/gpu_host.py
	$(PY) bench/cvm_verify.py

# Coverage-guided fuzzing of every parser of untrusted bytes (a minute each).
fuzz: $(STAMP_PIP)
	$(PY) -m pip install -q -e '.[fuzz]'
	$(PY) tests/fuzz/fuzz_tpm_parsers.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_quote_native.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_manifest.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_eventlog.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_ima.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_ima_native.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_boot_facts.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_nvidia_report.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_nvidia_chain.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_nvidia_rim.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_tdx_quote.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_tdx_collateral.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_snp_report.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_snp_certtable.py -max_total_time=60
	$(PY) tests/fuzz/fuzz_snp_crl.py -max_total_time=60

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .pytest_cache .ruff_cache
