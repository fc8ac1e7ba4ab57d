"""edgekit as a pytest plugin: accuracy regression tests in your repository's CI.

Installed with edgekit (entry point ``pytest11``), so in a test file::

    from edgekit.testing import assert_parity

    def test_model_keeps_its_accuracy(edgekit_export):
        bundle = edgekit_export("model.py:build", weights="w.pt", calib="calib.npz", eval="eval.npz",
                                targets=["onnx", "tflite"], int8=True)
        assert_parity(bundle, "eval.npz", baseline="tests/golden.json")

``edgekit_export(...)`` takes ``edgekit.export``'s arguments and exports once per test run for the
same arguments (the bundle is shared by every test that asks for it). ``assert_parity`` re-runs
the gate through ``edgekit.runtime`` and, with a baseline, fails when a figure is worse than the
committed one by more than its tolerance (``edgekit.baseline``); the failure message is the
per-output table. Options: ``--edgekit-baseline FILE`` (the baseline for every ``assert_parity``
that names none) and ``--edgekit-update-baseline`` (write the figures instead of comparing: run once
on the release you trust, commit the file).

Nothing heavy is imported until a test uses these: the plugin loads in every pytest run of the
environment.
"""

import pytest

_OPTIONS = {"baseline": None, "update": False}


def pytest_addoption(parser):
    group = parser.getgroup("edgekit", "edgekit accuracy regression")
    group.addoption("--edgekit-baseline", metavar="FILE", default=None,
                    help="baseline file for assert_parity calls that name none")
    group.addoption("--edgekit-update-baseline", action="store_true", default=False,
                    help="write each assert_parity's figures to its baseline instead of comparing")


def pytest_configure(config):
    _OPTIONS["baseline"] = config.getoption("--edgekit-baseline", default=None)
    _OPTIONS["update"] = bool(config.getoption("--edgekit-update-baseline", default=False))


def assert_parity(bundle, eval, *, baseline=None, artifacts=None, tolerances=None, baseline_tol=None,
                  isolate=True, latency=False, **verify_options):
    """Verify ``bundle`` on ``eval`` (``edgekit.verify``) and, with a ``baseline`` file (or
    ``--edgekit-baseline``), compare the figures with it; an AssertionError with the per-output
    table when an artifact fails its tolerance or regressed. Returns the verification Report."""
    from edgekit import baseline as baselines
    from edgekit.errors import ParityError
    from edgekit.verification import verify
    try:
        report = verify(bundle, eval, artifacts=artifacts, tolerances=tolerances, isolate=isolate, latency=latency,
                        **verify_options)
    except ParityError as exc:
        shown = f"{exc.report.table()}\n" + "\n".join(exc.report.failures) if exc.report is not None else f"\n{exc}"
        raise AssertionError(f"edgekit parity failed for {bundle}:\n{shown}") from exc
    baseline = baseline or _OPTIONS["baseline"]
    if baseline is None:
        return report
    comparison = baselines.check(report, baseline, update=_OPTIONS["update"], tolerance_items=baseline_tol)
    if comparison is not None and not comparison.passed:
        raise AssertionError(f"edgekit: {bundle} regressed against the baseline {baseline}:\n"
                             + "\n".join(comparison.regressions) + "\n\n" + "\n".join(comparison.lines()))
    return report


@pytest.fixture(scope="session")
def edgekit_export(tmp_path_factory):
    """``edgekit_export(model, **export_options) -> bundle folder``: exported once per test run for
    the same arguments; a failed export fails the test that asked for it (its report's table)."""
    bundles = {}

    def export(model, **options):
        import edgekit
        from edgekit.errors import ParityError
        key = repr((model, sorted(options.items())))
        if key not in bundles:
            out = tmp_path_factory.mktemp("edgekit") / "bundle"
            try:
                edgekit.export(model, out=out, **options)
            except ParityError as exc:
                bundles[key] = exc
            else:
                bundles[key] = out
        result = bundles[key]
        if isinstance(result, ParityError):
            raise AssertionError(f"edgekit export failed its gate:\n{result.report.table() if result.report else result}")
        return result
    return export
