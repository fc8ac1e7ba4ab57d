"""Target CPU profiles: on which device classes each artifact's parity is measured, and how.

An int8 artifact's verdict depends on the CPU class (onnxruntime's u8*s8 kernels saturate on x86
with AVX2 but without VNNI; arm64 and VNNI do not), so parity is measured on every profile the
bundle targets: natively when this machine is of that class, else in an emulated CPU (QEMU user
mode running ``edgekit.runtime`` in a child process), else the profile is reported as not verified
— never a silent pass.

- ``x86-avx2``: ``qemu-x86_64 -cpu Haswell-v4`` (AVX2, FMA, no AVX-512/VNNI) runs onnxruntime,
  TFLite/XNNPACK and OpenVINO with their AVX2 kernels; measured to reproduce a native AVX2 CPU's
  outputs bit for bit.
- ``x86-vnni``: native only. QEMU's TCG implements no AVX-512 and no AVX-VNNI, so no emulator
  can run the VNNI kernels.
- ``arm64``: ``qemu-aarch64 -cpu cortex-a76`` with an arm64 Python and the runtime's engines in a
  sysroot that ``toolkit/arm64_sysroot.sh`` builds from Debian's arm64 packages and the arm64
  wheels of the versions ``constraints.txt`` pins (``~/.cache/edgekit/arm64``, or
  ``$EDGEKIT_ARM64_SYSROOT``).
"""

import atexit
import functools
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgekit.runtime._child import NATIVE, Launcher
from edgekit.runtime._cpu import PROFILES, describe_host, host_profile

from .choices import Emulation
from .errors import ConfigError


# The default: the machine exporting, and the x86 class whose int8 kernels saturate (a workstation
# with VNNI cannot see that failure itself; a bundle verified there alone fails on AVX2 devices).
DEFAULT_TARGETS = ("host", "x86-avx2")
TARGET_ENV = "EDGEKIT_TARGET_CPU"
ARM64_ENV = "EDGEKIT_ARM64_SYSROOT"
X86_EMULATED_CPU = "Haswell-v4"
ARM64_HELP = ("make one with `make arm64-sysroot` in the edgekit source tree (toolkit/arm64_sysroot.sh; about "
              f"40 s and 350 MB), or point {ARM64_ENV} at one")


@dataclass(frozen=True)
class Runner:
    """Where one profile's parity is measured: ``how`` is "native" or "emulated (COMMAND)"."""

    profile: str
    how: str
    launcher: Launcher = NATIVE

    @property
    def native(self) -> bool:
        return self.how == "native"


# This machine, natively: what verification means when no profile is asked for.
HOST = Runner(host_profile() or "host", "native")


def default_targets() -> tuple:
    """``$EDGEKIT_TARGET_CPU`` (comma-separated) when set, else ``DEFAULT_TARGETS``."""
    text = os.environ.get(TARGET_ENV, "").strip()
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else DEFAULT_TARGETS


def resolve(targets) -> tuple:
    """Profile names in order, ``host`` replaced by this machine's profile; raises ConfigError for
    an unknown name."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    if not targets:
        raise ConfigError(f"target_cpu: expected at least one of {['host', *PROFILES]}, got none")
    names = []
    for name in targets:
        if name == "host":
            name = host_profile()
            if name is None:
                raise ConfigError(f"target_cpu 'host': this CPU belongs to no profile ({describe_host()}); "
                                  f"name the device class: {list(PROFILES)}")
        elif name == "all":
            names += list(PROFILES)
            continue
        elif name not in PROFILES:
            raise ConfigError(f"target_cpu {name!r}: expected host, all or one of {list(PROFILES)}")
        names.append(name)
    return tuple(dict.fromkeys(names))


def plan(profiles, emulation="auto") -> tuple:
    """``(runners, not_verified)`` for the resolved ``profiles``: a Runner per profile that can be
    measured here, and profile -> reason for those that cannot. ``emulation``: auto (native where
    this machine matches, else emulated), always (emulated wherever an emulator exists: checks the
    emulated path on a matching machine), never (native only)."""
    if emulation not in tuple(Emulation):
        raise ConfigError(f"emulation: expected one of {[e.value for e in Emulation]}, got {emulation!r}")
    host = host_profile()
    runners, not_verified = [], {}
    for profile in profiles:
        emulated, reason = _emulator(profile) if emulation != "never" else (None, "emulation is off (--emulation never)")
        if profile == host and (emulation != "always" or emulated is None):
            runners.append(Runner(profile, "native"))
        elif emulated is not None:
            runners.append(emulated)
        else:
            not_verified[profile] = f"this machine is {describe_host()}; {reason}"
    return tuple(runners), not_verified


def checkable(targets, emulation="auto") -> tuple:
    """``plan(resolve(targets), emulation)``, refused (ConfigError, before any work) when none of
    the profiles can be measured on this machine: a gate that checks nothing must not pass."""
    runners, not_verified = plan(resolve(targets), emulation)
    if not runners:
        raise ConfigError("none of the target CPU profiles can be verified on this machine: "
                          + "; ".join(f"{p}: {why}" for p, why in not_verified.items()))
    return runners, not_verified


def not_verified_warnings(not_verified) -> list:
    return [f"not verified on {p}: {why}" for p, why in not_verified.items()]


def _emulator(profile):
    """(Runner, None) when ``profile`` can be emulated on this machine, else (None, why not)."""
    machine = platform.machine().lower()
    if profile == "x86-vnni":
        return None, "no emulator runs VNNI kernels (QEMU's TCG implements no AVX-512 or AVX-VNNI)"
    if profile == "x86-avx2":
        if machine not in ("x86_64", "amd64"):
            return None, "x86 emulation needs an x86-64 Python, which this machine does not run"
        qemu = os.environ.get("EDGEKIT_QEMU_X86_64") or shutil.which("qemu-x86_64")
        if not qemu:
            return None, "qemu-x86_64 is not installed (Debian/Ubuntu: apt-get install qemu-user)"
        prefix = (qemu, "-cpu", X86_EMULATED_CPU)
        return Runner(profile, f"emulated (qemu-x86_64 -cpu {X86_EMULATED_CPU})",
                      Launcher(prefix=prefix, noise="qemu-x86_64: warning:")), None
    if profile == "arm64":
        return _arm64()
    return None, "no emulator known"


def arm64_sysroot() -> Path:
    """Where the arm64 Python is: ``$EDGEKIT_ARM64_SYSROOT``, else ``~/.cache/edgekit/arm64``."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgekit" / "arm64"
    return Path(os.environ.get(ARM64_ENV) or default)


def _arm64():
    qemu = os.environ.get("EDGEKIT_QEMU_AARCH64") or shutil.which("qemu-aarch64")
    if not qemu:
        return None, "qemu-aarch64 is not installed (Debian/Ubuntu: apt-get install qemu-user)"
    root = arm64_sysroot()
    python = root / "sysroot" / "usr" / "bin" / "python3.11"
    cpu_file = root / "CPU"  # written last by arm64_sysroot.sh: the sysroot is complete
    if not (python.is_file() and cpu_file.is_file() and (root / "site-packages").is_dir()):
        return None, f"no arm64 Python at {root}: {ARM64_HELP}"
    cpu = cpu_file.read_text().strip()
    path = (str(root / "site-packages"), _runtime_copy())
    return Runner("arm64", f"emulated (qemu-aarch64 -cpu {cpu})",
                  Launcher(prefix=(qemu, "-cpu", cpu, "-L", str(root / "sysroot")), python=str(python), path=path,
                           noise="qemu-aarch64: warning:")), None


@functools.lru_cache(maxsize=1)
def _runtime_copy() -> str:
    """A folder holding ``edgekit/runtime`` alone (pure Python, numpy and the engine), for an
    interpreter that cannot import this installation (an arm64 Python under emulation); removed
    when this process exits."""
    import edgekit.runtime
    root = tempfile.mkdtemp(prefix="edgekit-runtime-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = Path(root) / "edgekit"
    package.mkdir()
    (package / "__init__.py").write_text("")
    shutil.copytree(Path(edgekit.runtime.__file__).parent, package / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return root
