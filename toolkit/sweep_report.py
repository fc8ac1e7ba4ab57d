"""What a sweep leaves on disk, and the leaderboard made from it.

    OUT/sweep-plan.json        the cells of the plan last run here (axes, export arguments, input hash)
    OUT/cells/NAME/            each cell's bundle: an ordinary edgekit bundle (verify, info, report work on it)
    OUT/cells/NAME.rejected/   a failing candidate, kept as ``edgekit export`` keeps it
    OUT/cells/NAME.cell.json   the cell's result: status, exit code, seconds, error, input hash, manifest sha256
    OUT/cells/NAME.log         the export's stderr (its stage lines, warnings and error)
    OUT/leaderboard.json|.md|.html

The leaderboard is always built from these files, after a run and by ``edgekit sweep --report OUT``
alike, so the two cannot disagree. A cell counts as done only when its record has the plan's input
hash and its bundle is intact: the manifest the record names, every file it owns unchanged. The
bundle format is untouched: the sweep's own records sit beside the bundles, never inside them.
"""

import json
import math
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path

import edgekit.runtime as ekr

from .bundle import REJECTED_SUFFIX, foreign_files, owned_files, write_atomic
from .errors import EXIT_INTERNAL, EXIT_NOTHING, EXIT_REGRESSION, EXIT_USAGE, InputError
from .report import _size as report_size
from .sweep_plan import Cell, from_record

PLAN_NAME = "sweep-plan.json"
CELLS = "cells"
RECORD_SUFFIX = ".cell.json"
LOG_SUFFIX = ".log"
LEADERBOARD = "leaderboard"
PASSED, FAILED, ERROR, NOT_RUN = "passed", "failed", "error", "not run"
# The sweep's exit code is its most severe cell's: a failed gate < nothing evaluated < bad input <
# an internal error (any other code, e.g. a cell's export interrupted, counts as internal). A cell
# left unrun leaves nothing evaluated for it.
_SEVERITY = {EXIT_REGRESSION: 1, EXIT_NOTHING: 2, EXIT_USAGE: 3, EXIT_INTERNAL: 4}


@dataclass(frozen=True, kw_only=True)
class CellResult:
    """A finished cell: ``passed``; ``failed`` its parity gate (``failures``); or ``error`` (the export
    stopped: bad input, a converter's failure, its worker lost — ``error`` says which)."""

    name: str
    status: str
    exit_code: int             # the cell's ``edgekit export`` exit code (README, Exit codes)
    input_hash: str
    seconds: float | None = None
    error: str = ""
    failures: tuple = ()
    manifest_sha256: str = ""  # of the bundle it wrote, when it passed
    worker: str = ""           # host:pid of the Ray worker that ran it

    def __post_init__(self):
        if self.status not in (PASSED, FAILED, ERROR):
            raise InputError(f"cell {self.name}: status {self.status!r}; expected {PASSED}, {FAILED} or {ERROR}")
        if isinstance(self.exit_code, bool) or not isinstance(self.exit_code, int):
            raise InputError(f"cell {self.name}: exit_code {self.exit_code!r}; expected an integer")

    def to_dict(self) -> dict:
        return {**asdict(self), "failures": list(self.failures)}

    @classmethod
    def from_dict(cls, data, where) -> "CellResult":
        return from_record(cls, data, where)


def cells_dir(out) -> Path:
    return Path(out) / CELLS


def write_plan(out, cells):
    write_atomic(Path(out) / PLAN_NAME, json.dumps([c.to_dict() for c in cells], indent=1) + "\n")


def read_plan(out) -> list:
    path = Path(out) / PLAN_NAME
    data = _read_json(path, f"{out} is not a sweep folder: no readable {PLAN_NAME}")
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of cells")
    return [Cell.from_dict(item, f"{path}[{i}]") for i, item in enumerate(data)]


def write_result(out, result: CellResult, log: str):
    folder = cells_dir(out)
    write_atomic(folder / f"{result.name}{LOG_SUFFIX}", log)
    write_atomic(folder / f"{result.name}{RECORD_SUFFIX}", json.dumps(result.to_dict(), indent=1) + "\n")


def read_result(out, cell: Cell) -> CellResult | None:
    """The cell's record when it is this cell's (the same input hash), else None."""
    path = cells_dir(out) / f"{cell.name}{RECORD_SUFFIX}"
    if not path.exists():
        return None
    result = CellResult.from_dict(_read_json(path, f"cannot read {path}"), str(path))
    return result if result.input_hash == cell.input_hash else None


def current(out, cell: Cell) -> CellResult | None:
    """The cell's passed result when a re-run would make the same bundle: its record has this input
    hash and names the bundle on disk, which is intact."""
    try:
        result = read_result(out, cell)
    except InputError:  # a damaged record: the cell runs again (its next record replaces it)
        return None
    if result is None or result.status != PASSED:
        return None
    return result if intact(cells_dir(out) / cell.name, result.manifest_sha256) else None


def intact(bundle: Path, manifest_sha256: str) -> bool:
    """``bundle`` holds the manifest with this sha256 and exactly the files it owns, unchanged."""
    manifest = bundle / ekr.MANIFEST_NAME
    if not manifest.is_file() or ekr.sha256_file(manifest) != manifest_sha256:
        return False
    owned = owned_files(bundle)
    return owned is not None and not foreign_files(bundle) and all((bundle / n).is_file() for n in owned)


def _read_json(path: Path, message: str):
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{message}: {exc}") from exc


# --- the leaderboard ----------------------------------------------------------------------------

@dataclass
class Leaderboard:
    """Every cell's outcome, and per (model, CPU profile) every artifact with its figures, the Pareto
    front (quality up, latency and size down) and the fastest artifact that passed its gate."""

    output: str
    cells: list = field(default_factory=list)    # per cell: its axes, status, exit code, seconds, error
    groups: list = field(default_factory=list)   # per (model, profile): artifacts, quality axis, fastest

    @property
    def passed(self) -> bool:
        return all(c["status"] == PASSED for c in self.cells)

    @property
    def exit_code(self) -> int:
        """0 when every cell passed; else the most severe cell's export exit code (1 gate, 2 input,
        3 internal); 4 when the only gap is cells not run."""
        codes = [c["exit_code"] for c in self.cells if c["status"] in (FAILED, ERROR)]
        if codes:
            return max(codes, key=lambda code: _SEVERITY.get(code, _SEVERITY[EXIT_INTERNAL]))
        return EXIT_NOTHING if any(c["status"] == NOT_RUN for c in self.cells) else 0

    def counts(self) -> dict:
        return {status: sum(c["status"] == status for c in self.cells) for status in (PASSED, FAILED, ERROR, NOT_RUN)}

    def to_dict(self) -> dict:
        return {"passed": self.passed, "exit_code": self.exit_code, "output": self.output, "counts": self.counts(),
                "cells": self.cells, "groups": self.groups}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        return _markdown(self)

    def to_html(self) -> str:
        return _html(self)


def build(out) -> Leaderboard:
    """The leaderboard of the sweep folder ``out``, from its plan, records and bundles."""
    out = Path(out)
    board = Leaderboard(output=str(out))
    groups = {}
    for cell in read_plan(out):
        result = read_result(out, cell)
        board.cells.append(_cell_row(cell, result, out))
        if board.cells[-1]["status"] == PASSED:
            group = groups.setdefault((cell.model, cell.profile), {})
            for row in _artifact_rows(cell, cells_dir(out) / cell.name):
                # The same file from several cells (each int8 cell's bundle holds its format's fp32
                # artifact): listed once, from the first cell that made it.
                group.setdefault(row["sha256"] or (row["cell"], row["artifact"]), row)
    board.groups = [_group(model, profile, list(rows.values())) for (model, profile), rows in groups.items()]
    return board


def write(out) -> Leaderboard:
    """Build the leaderboard and write it as leaderboard.json, .md and .html into ``out``."""
    board = build(out)
    for suffix, text in (("json", board.to_json() + "\n"), ("md", board.to_markdown()), ("html", board.to_html())):
        write_atomic(Path(out) / f"{LEADERBOARD}.{suffix}", text)
    return board


def _cell_row(cell: Cell, result: CellResult | None, out: Path) -> dict:
    axes = {"cell": cell.name, "model": cell.model, "target": cell.target, "precision": cell.precision,
            "recipe": cell.recipe, "profile": cell.profile}
    if result is None:
        return {**axes, "status": NOT_RUN, "exit_code": None, "seconds": None, "error": "", "failures": []}
    row = {**axes, "status": result.status, "exit_code": result.exit_code, "seconds": result.seconds,
           "error": result.error, "failures": list(result.failures), "worker": result.worker}
    if result.status == PASSED and not intact(cells_dir(out) / cell.name, result.manifest_sha256):
        row.update(status=NOT_RUN, exit_code=None, error="its bundle is missing or was changed since it was written")
    elif result.status == FAILED and (cells_dir(out) / f"{cell.name}{REJECTED_SUFFIX}").is_dir():
        row["candidate"] = f"{CELLS}/{cell.name}{REJECTED_SUFFIX}"
    return row


def _artifact_rows(cell: Cell, bundle: Path) -> list:
    manifest = ekr.read_manifest(bundle)
    rows = []
    for artifact in manifest.artifacts:
        parity = artifact.parity
        rows.append({
            "cell": cell.name, "artifact": artifact.id, "bundle": f"{CELLS}/{cell.name}", "format": artifact.format,
            "precision": artifact.precision, "scheme": artifact.scheme, "recipe": cell.recipe,
            "recipe_shipped": artifact.quantization.get("recipe"),
            "accuracy": parity.accuracy if parity else None, "cosine": parity.cosine if parity else None,
            "size_bytes": artifact.size_bytes, "latency_ms": artifact.latency_ms,
            "passed": bool(parity and parity.passed), "default": artifact.id == manifest.default_artifact,
            "sha256": artifact.sha256})
    return rows


def _group(model, profile, rows) -> dict:
    passed = [r for r in rows if r["passed"]]
    quality = "accuracy" if passed and all(_finite(r["accuracy"]) for r in passed) else "cosine"
    front = pareto(passed, quality)
    for row in rows:
        row["pareto"] = any(row is r for r in front)
    timed = [r for r in passed if _finite(r["latency_ms"])]
    fastest = min(timed, key=lambda r: r["latency_ms"]) if timed else None
    return {"model": model, "profile": profile, "quality": quality, "artifacts": rows,
            "fastest": {"cell": fastest["cell"], "artifact": fastest["artifact"]} if fastest else None}


def pareto(rows, quality) -> list:
    """The rows no other row beats on every axis at once: ``quality`` higher, latency and size lower.
    An axis a row lacks (latency not measured) is left out for the whole group."""
    axes = [(quality, 1), ("latency_ms", -1), ("size_bytes", -1)]
    axes = [(key, sign) for key, sign in axes if rows and all(_finite(r[key]) for r in rows)]

    def dominates(a, b):
        pairs = [(sign * a[key], sign * b[key]) for key, sign in axes]
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)
    return [r for r in rows if not any(dominates(other, r) for other in rows)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)



# --- rendering ----------------------------------------------------------------------------------

def _size(n) -> str:
    return "–" if n is None else report_size(n)


def _figures(row, quality) -> dict:
    """A row's figures as text, for both renderings."""
    value = row[quality]
    return {quality: "–" if value is None else f"{value:.2f}%" if quality == "accuracy" else f"{value:.6f}",
            "size": _size(row["size_bytes"]),
            "latency": "–" if row["latency_ms"] is None else f"{row['latency_ms']:.3f} ms"}


def _summary(board) -> str:
    counts = board.counts()
    return (f"{len(board.cells)} cells: {counts[PASSED]} passed, {counts[FAILED]} failed their gate, "
            f"{counts[ERROR]} stopped with an error, {counts[NOT_RUN]} not run")


def _problems(board) -> list:
    """(cell, status, why) for every cell that did not pass."""
    why = {FAILED: lambda c: "; ".join(c["failures"]) or c["error"], ERROR: lambda c: c["error"],
           NOT_RUN: lambda c: c["error"] or "not run (interrupted, or not started yet)"}
    return [(c["cell"], c["status"], why[c["status"]](c)) for c in board.cells if c["status"] != PASSED]


def _markdown(board) -> str:
    lines = [f"# edgekit sweep: {'PASS' if board.passed else 'FAIL'}", "", _summary(board) + "."]
    for group in board.groups:
        quality = group["quality"]
        lines += ["", f"## {group['model']} · CPU profile {group['profile']}", "",
                  f"| cell | artifact | recipe | {quality} | size | latency | gate | Pareto |", "|---" * 8 + "|"]
        for row in group["artifacts"]:
            shown = _figures(row, quality)
            recipe = " / ".join(r for r in (row["recipe"], row["recipe_shipped"]) if r) or "–"
            lines.append(f"| {row['cell']} | {_md_cell(row['artifact'])} | {_md_cell(recipe)} | {shown[quality]} | "
                         f"{shown['size']} | "
                         f"{shown['latency']} | {'PASS' if row['passed'] else 'FAIL'} | "
                         f"{'★' if row['pareto'] else ''} |")
        fastest = group["fastest"]
        lines += ["", f"Fastest that passes: `{fastest['cell']}/{fastest['artifact']}`" if fastest
                  else "Fastest that passes: – (no latency measured, or nothing passed)",
                  f"Pareto front (★): {quality} up, latency and size down."]
    problems = _problems(board)
    if problems:
        lines += ["", "## Cells that did not pass", "", "| cell | status | why |", "|---|---|---|"]
        lines += [f"| {cell} | {status} | {_md_cell(why)} |" for cell, status, why in problems]
    return "\n".join(lines) + "\n"


def _md_cell(text) -> str:
    """Text inside a Markdown table cell: its pipes escaped, on one line."""
    return " ".join(str(text).replace("|", "\\|").split())


def _html(board) -> str:
    from .report_html import STYLE, bar, figure_cell  # the bundle report's look: one style for both pages
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>edgekit sweep</title><style>{STYLE}"
             "td.front{color:#17702b}</style></head><body>",
             f"<h1>edgekit sweep: <span class='{'pass' if board.passed else 'fail'}'>"
             f"{'PASS' if board.passed else 'FAIL'}</span></h1><p>{escape(_summary(board))}</p>"]
    for group in board.groups:
        quality, rows = group["quality"], group["artifacts"]
        slowest = max((r["latency_ms"] for r in rows if _finite(r["latency_ms"])), default=None)
        largest = max((r["size_bytes"] for r in rows if _finite(r["size_bytes"])), default=None)
        fastest = group["fastest"] or {}
        fastest = (fastest.get("cell"), fastest.get("artifact"))
        parts.append(f"<h2>{escape(group['model'])} · CPU profile {escape(group['profile'])}</h2><table><tr>"
                     f"<th>cell</th><th>artifact</th><th>recipe</th><th>{quality}</th><th>size</th><th>latency</th>"
                     "<th>gate</th><th>Pareto</th></tr>")
        for row in rows:
            key, shown = f"{row['cell']}/{row['artifact']}", _figures(row, quality)
            star = " ★ fastest" if (row["cell"], row["artifact"]) == fastest else ""
            recipe = " / ".join(r for r in (row["recipe"], row["recipe_shipped"]) if r)
            parts.append(
                f"<tr><td>{escape(row['cell'])}</td><td>{escape(row['artifact'])}{star}</td><td>{escape(recipe)}</td>"
                + figure_cell(key, quality, row[quality], shown[quality])
                + figure_cell(key, "size_bytes", row["size_bytes"], shown["size"],
                              bar(row["size_bytes"] / largest * 1.5 if largest and row["size_bytes"] else None,
                                  mark=False))
                + figure_cell(key, "latency_ms", row["latency_ms"], shown["latency"],
                              bar(row["latency_ms"] / slowest * 1.5 if slowest and row["latency_ms"] else None,
                                  "#d0884a", mark=False))
                + f"<td class='{'pass' if row['passed'] else 'fail'}'>{'PASS' if row['passed'] else 'FAIL'}</td>"
                + f"<td class='front' data-artifact='{escape(key)}' data-figure='pareto' data-value='{row['pareto']}'>"
                f"{'★' if row['pareto'] else ''}</td></tr>")
        parts.append("</table>")
    problems = _problems(board)
    if problems:
        parts.append("<h2>Cells that did not pass</h2><table><tr><th>cell</th><th>status</th><th>why</th></tr>")
        parts += [f"<tr><td>{escape(cell)}</td><td class='{'skip' if status == NOT_RUN else 'fail'}' "
                  f"data-cell='{escape(cell)}'>{escape(status)}</td><td>{escape(why)}</td></tr>"
                  for cell, status, why in problems]
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
