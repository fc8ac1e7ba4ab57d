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
        print(json.dumps(manifest, indent=2))
        return 0
    ref = manifest.get("reference", {})
    print_line(f"bundle      {args.bundle}  (schema {manifest['schema_version']}, edgekit {manifest.get('edgekit_version')})")
    print_line(f"source      {manifest.get('source', {}).get('model')} ({manifest.get('source', {}).get('framework')})")
    print_line(f"reference   {ref.get('framework')} on {ref.get('device')}, {ref.get('num_samples')} samples")
    for t in manifest.get("inputs", []):
        print_line(f"input       {t['name']}  {format_shape(t['shape'], compact=True)}  {t['dtype']}  {t.get('layout') or ''}")
    print_line(f"default     {manifest.get('default_artifact')}")
    targets = manifest.get("target_cpu") if isinstance(manifest.get("target_cpu"), dict) else {}
    if targets:
        print_line(f"target cpu  {', '.join(map(str, targets.get('requested', [])))}"
                   + (f"  (NOT verified: {', '.join(map(str, targets.get('not_verified') or {}))})"
                      if targets.get("not_verified") else ""))
    for missing in manifest.get("missing_artifacts") or []:
        if isinstance(missing, dict):
            print_line(f"missing     {missing.get('id')}: failed parity (--allow-partial)")
    rows = [("id", "format", "precision", "scheme", "size", "latency", "accuracy", "cosine", "parity", "verified on",
             "file")]
    for a in manifest["artifacts"]:
        p = a.get("parity", {})
        rows.append((a["id"], a["format"], a["precision"], a.get("scheme", ""), f"{a.get('size_bytes', 0) / 1024:.1f} KiB",
                     f"{a['latency_ms']:.3f} ms" if a.get("latency_ms") is not None else "-",
                     f"{p['accuracy']:.2f}%" if "accuracy" in p else "-",
                     f"{p['cosine']:.6f}" if "cosine" in p else "-",
                     "PASS" if p.get("passed") else "FAIL",
                     ", ".join(f"{v.get('profile')}{'' if v.get('how') == 'native' else '*'}"
                               for v in a.get("verified_on", [])) or "-", a["file"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print_line("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    if any(v.get("how") != "native" for a in manifest["artifacts"] for v in a.get("verified_on", [])):
        print_line("  (* = verified in an emulated CPU)")
    return 0
