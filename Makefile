# The two commands of the README. Both create .venv and install what they need
# (pinned by constraints.txt; torch==2.13.0 is the CPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean emulators arm64-sysroot browser

$(STAMP): setup.cfg constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	@# NNCF compiles its PyTorch C++ extension on first use (~90 s on 2 cores): here, not inside an export.
	$(BIN)/python -c "import nncf.torch; nncf.torch.force_build_cpu_extensions()" >/dev/null 2>&1 || \
	  echo "note: NNCF's CPU extension was not prebuilt (no C++ compiler?); the first PyTorch QAT builds it"
	touch $(STAMP)

# The emulators behind the target CPU profiles (edgekit.profiles): qemu-user for x86-avx2 and arm64,
# and an arm64 Python with the engines for arm64. Installed where this machine allows (root or sudo
# for apt-get); elsewhere a note, and exports report those profiles as not verified.
emulators: $(STAMP)
	@command -v qemu-x86_64 >/dev/null && command -v qemu-aarch64 >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n" ); \
	    ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq qemu-user ) \
	      >/dev/null 2>&1 || echo "note: could not install qemu-user (apt-get): emulated CPU profiles will be reported as not verified"; }
	@if command -v qemu-aarch64 >/dev/null && ! $(BIN)/python -c "import sys, edgekit.profiles as p; sys.exit(not (p.arm64_sysroot() / 'CPU').is_file())"; then \
	  $(MAKE) --no-print-directory arm64-sysroot || echo "note: arm64 sysroot not built: the arm64 profile will be reported as not verified"; fi

# A headless Chromium for report.html's screenshot test (skipped where there is none).
browser:
	@command -v chromium-headless-shell >/dev/null || command -v chromium >/dev/null || \
	  { SUDO=$$( [ "$$(id -u)" = 0 ] && echo "" || echo "sudo -n" ); \
	    ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium-headless-shell ) \
	      >/dev/null 2>&1 || echo "note: could not install chromium-headless-shell (apt-get): report.html's screenshot test is skipped"; }

arm64-sysroot: $(STAMP)
	PYTHON=$(BIN)/python bash toolkit/arm64_sysroot.sh

demo: $(STAMP) emulators
	$(BIN)/python samples/digits.py
	$(BIN)/python samples/digits_keras.py

test: $(STAMP) emulators browser
	$(BIN)/python -m pytest -q

bench: $(STAMP) emulators
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/bench.py --profiles
	$(BIN)/python benchmarks/memory.py

clean:
	rm -rf $(VENV) samples/work
