"""``--keep-fp32`` patterns, shared by the quantizers: shell-style globs over node names."""

import fnmatch

from edgekit.errors import QuantizationError


def matching_names(names, patterns, fmt) -> list:
    """The node names any pattern matches; a pattern that matches nothing is an error."""
    names = list(names)
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in names)]
    if unmatched:
        raise QuantizationError(f"--keep-fp32 patterns {unmatched} match no {fmt} node; node names look like "
                                f"{names[:5]}")
    return sorted({n for n in names for p in patterns if fnmatch.fnmatchcase(n, p)})
