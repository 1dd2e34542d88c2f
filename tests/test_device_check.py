"""benchmarks/device_check.py runs on the CPU in CI (tiny setting) and finds CPU fp32 equal to
itself, bit for bit, for a strategy, an unlearner and the sharded engine."""

import pytest
from _benchmarks import load


def _module():
    return load("device_check")


def test_device_check_cpu_quick(capsys):
    rc = _module().main(["--device", "cpu", "--quick", "--methods", "ewc,packnet,ssd,sharded"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "4/4 bitwise equal of CPU fp32" in out


def test_device_check_refuses_an_absent_device():
    from obliviate.errors import ObliviateError

    with pytest.raises(ObliviateError, match="use --device cpu"):
        _module().main(["--device", "cuda:7", "--quick", "--methods", "naive"])
