"""``edgekit info DIR``: the manifest as a table."""

import json

from ._common import printable


def register(sub):
    p = sub.add_parser("info", help="show a bundle's manifest")
    p.add_argument("bundle", metavar="DIR")
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("--json", action="store_true", help="print the manifest JSON")
    p.set_defaults(run=run)


def print_line(text):
    print(printable(text))


def run(args) -> int:
    from edgekit.errors import InputError
    from edgekit.runtime import ModelLoadError
    from edgekit.runtime import format_shape, read_manifest
    try:
        manifest = read_manifest(args.bundle)
    except ModelLoadError as exc:
        raise InputError(str(exc)) from exc
    if args.json:
        print(json.dumps(manifest.to_dict(), indent=2))
        return 0
    ref, source, targets = manifest.reference, manifest.source, manifest.target_cpu
    print_line(f"bundle      {args.bundle}  (schema {manifest.schema_version}, edgekit {manifest.edgekit_version or None})")
    print_line(f"source      {source.get('model')} ({source.get('framework')})")
    print_line(f"reference   {ref.get('framework')} on {ref.get('device')}, {ref.get('num_samples')} samples")
    for t in manifest.inputs:
        print_line(f"input       {t.name}  {format_shape(t.shape, compact=True)}  {t.dtype.name}  {t.layout or ''}")
    print_line(f"default     {manifest.default_artifact}")
    if targets:
        print_line(f"target cpu  {', '.join(map(str, targets.get('requested', [])))}"
                   + (f"  (NOT verified: {', '.join(map(str, targets.get('not_verified') or {}))})"
                      if targets.get("not_verified") else ""))
    for missing in manifest.extra.get("missing_artifacts") or []:
        if hasattr(missing, "get"):
            print_line(f"missing     {missing.get('id')}: failed parity (--allow-partial)")
    rows = [("id", "format", "precision", "scheme", "size", "latency", "accuracy", "cosine", "parity", "verified on",
             "file")]
    for a in manifest.artifacts:
        p = a.parity
        rows.append((a.id, a.format, a.precision, a.scheme, f"{(a.size_bytes or 0) / 1024:.1f} KiB",
                     f"{a.latency_ms:.3f} ms" if a.latency_ms is not None else "-",
                     f"{p.accuracy:.2f}%" if p and p.accuracy is not None else "-",
                     f"{p.cosine:.6f}" if p and p.cosine is not None else "-",
                     "PASS" if p and p.passed else "FAIL",
                     ", ".join(f"{v.profile}{'' if v.how == 'native' else '*'}" for v in a.verified_on or ()) or "-",
                     a.file))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print_line("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if any(v.how != "native" for a in manifest.artifacts for v in a.verified_on or ()):
        print_line("  (* = verified in an emulated CPU)")
    return 0
