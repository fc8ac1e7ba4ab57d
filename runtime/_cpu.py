"""The CPU class a process runs on, in the terms of the target profiles a bundle is verified for.

An int8 artifact's accuracy depends on the CPU's int8 kernels: onnxruntime's u8*s8 kernels
saturate on x86 with AVX2 but without VNNI, and not with VNNI or on arm64. A bundle therefore
records the profiles each artifact was verified on, and ``edgekit.runtime.load`` compares them
with the CPU it runs on.
"""

import functools
import platform
import sys

# Profile name -> what it stands for. The names are the manifest's and ``--target-cpu``'s.
PROFILES = {
    "x86-avx2": "x86-64 with AVX2 and no VNNI (AMD Zen 1-3, Intel Haswell to Comet Lake, Atom/Celeron, many cloud VMs)",
    "x86-vnni": "x86-64 with AVX512-VNNI or AVX-VNNI (Intel Cascade Lake and later, Alder Lake, AMD Zen 4)",
    "arm64": "64-bit Arm (aarch64: Raspberry Pi 4/5, Jetson, Graviton, Apple silicon under Linux)",
}
# The ISA features that decide which int8 kernels an engine picks.
_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "neon", "asimd", "asimddp")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> tuple:
    """The int8-relevant ISA features of this CPU (from ``/proc/cpuinfo``; empty where it is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = set()
            for line in fh:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return ()
    return tuple(f for f in _FLAGS if f in flags)


def classify(machine: str, flags) -> str | None:
    """The profile of a CPU given its ``platform.machine()`` and ISA flags; None for a CPU no
    profile describes (x86 without AVX2, 32-bit Arm, other architectures)."""
    machine = machine.lower()
    if machine in ("x86_64", "amd64"):
        if "avx512_vnni" in flags or "avx_vnni" in flags:
            return "x86-vnni"
        return "x86-avx2" if "avx2" in flags else None
    if machine in ("aarch64", "arm64"):
        return "arm64"
    return None


@functools.lru_cache(maxsize=1)
def host_profile() -> str | None:
    """The profile of the CPU this process runs on (None when no profile describes it)."""
    return classify(platform.machine(), cpu_flags())


def describe_host() -> str:
    """One line for messages: the machine, its profile and the flags that decided it."""
    profile = host_profile()
    flags = ", ".join(cpu_flags()) or "no int8-relevant flags read"
    return f"{platform.machine()} ({flags}) = {profile or 'no edgekit CPU profile'}"


def status_mb(pid, field: str) -> float | None:
    """A memory line of ``/proc/PID/status`` (``VmRSS:``, ``VmHWM:``; ``pid`` may be ``"self"``) in MB;
    None where there is no such file (not Linux, the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return None


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far in MB: Linux's ``VmHWM``, else ``ru_maxrss``
    (KiB on Linux, bytes on macOS); None where the platform has neither. Not ``ru_maxrss`` first: on
    Linux it carries over the parent's resident set at fork through exec, so a child started by a
    3 GB process reported 3 GB however little it used (``VmHWM`` belongs to the program's own memory)."""
    peak = status_mb("self", "VmHWM:")
    if peak is not None:
        return peak
    try:
        import resource  # (POSIX)
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024
