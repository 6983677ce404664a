"""One error tree: every expected failure is a BustedError, and bcc's bare exceptions
become a KernelError at one place."""

from __future__ import annotations

import pytest

from busted import errors, spool
from busted.bench import kernel_cost
from busted.commands import ui
from busted.policy import engine
from busted.sources.kernel import bcc_errors


def test_the_errors_live_in_one_tree() -> None:
    for name in ("PolicyLoadError", "EvaluationError", "DisplayError", "BenchError",
                 "SpoolError"):
        assert issubclass(getattr(errors, name), errors.BustedError), name
    assert issubclass(errors.PolicyLoadError, errors.PolicyError)
    # Their old import names still work and are the same classes.
    assert engine.PolicyLoadError is errors.PolicyLoadError
    assert engine.EvaluationError is errors.EvaluationError
    assert ui.DisplayError is errors.DisplayError
    assert kernel_cost.BenchError is errors.BenchError
    assert spool.SpoolError is errors.SpoolError


def test_bcc_errors_become_kernel_errors() -> None:
    with pytest.raises(errors.KernelError) as caught, \
            bcc_errors("loading failed ({exc}).", "Run busted doctor."):
        raise Exception("Failed to compile BPF module")  # what bcc raises
    assert str(caught.value) == "loading failed (Failed to compile BPF module).\nRun busted doctor."
    assert isinstance(caught.value.__cause__, Exception)
    # busted's own errors pass through
    with pytest.raises(errors.PrivilegeError), bcc_errors("x", ""):
        raise errors.PrivilegeError("needs root")
