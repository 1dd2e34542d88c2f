"""Issue 10's tester left-overs on the Python API: an error names the API's parameter
(``device='tpu'``) while the CLI names its flag (``--device tpu``); an experience without test
rows is refused by name (was: "accuracy matrix contains NaN" after training); a class the
user's labels lack is warned about (one line) or, when it empties an experience, refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import obliviate.api as ob
from obliviate.cli.main import main
from obliviate.data.scenarios import build_scenario
from obliviate.errors import ObliviateError
from obliviate.experiments import LearnSpec
from obliviate.training import check_device, check_precision, precision

# ---- parameter names: API vs CLI ------------------------------------------------------------


def test_api_errors_name_the_parameter_not_a_flag():
    with pytest.raises(ObliviateError, match=r"^device='tpu': give cpu") as exc:
        check_device("tpu")
    assert "--device" not in str(exc.value)
    with pytest.raises(ObliviateError, match=r"^precision='fp8': give one of") as exc:
        check_precision("fp8")
    assert "--precision" not in str(exc.value)
    with pytest.raises(ObliviateError, match=r"precision='half'"):
        with precision("half"):
            pass
    with pytest.raises(ObliviateError, match=r"device='tpu'") as exc:
        LearnSpec(dataset="digits", device="tpu").resolved()
    assert "--" not in str(exc.value)
    if not torch.cuda.is_available():
        with pytest.raises(ObliviateError, match=r"device='cuda:3'.*use device='cpu'"):
            check_device("cuda:3")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--device", "tpu"], "error: --device tpu: give cpu"),
        (["--precision", "fp8"], "error: --precision fp8: give one of"),
    ],
)
def test_cli_errors_name_the_flag(capsys, args, needle):
    code = main(["learn", "--dataset", "digits", *args])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(needle), err
    assert "device='" not in err and "precision='" not in err


# ---- experiences without test rows, classes without rows --------------------------------------


def _arrays(labels: list[int], n_rep: int = 24) -> tuple[np.ndarray, np.ndarray]:
    y = np.array(labels * n_rep)
    x = np.random.default_rng(0).normal(size=(len(y), 4)).astype("float32")
    return x, y


def test_an_experience_without_test_ids_is_refused_by_name():
    x, y = _arrays([0, 1, 2, 3])
    train, test = ob.dataset(x, y)
    with pytest.raises(ObliviateError, match=r"^experience 1 has no test ids"):
        ob.stream(
            train,
            test,
            experiences=[(train.ids[:10], test.ids[:5]), (train.ids[10:20], [])],
        )


def test_learn_refuses_a_scenario_experience_without_test_rows_before_training():
    x, y = _arrays([0, 1, 2, 3])
    # the test rows hold classes 0 and 1 only: the experiences of classes 2 and 3 have none
    train, test = ob.dataset(x, y, x_test=x[:8], y_test=np.array([0, 1] * 4))
    stream = build_scenario("class-incremental", train, test, n_experiences=4, seed=0)
    empty = [e for e in stream if len(e.test) == 0]
    assert empty, "the setting must produce an experience without test rows"
    model = nn.Linear(4, 4)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(
        ObliviateError, match=rf"experience {empty[0].index} \(classes .*\) has no test rows"
    ):
        ob.learn(model, stream, strategy="naive", n_epochs=1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    with pytest.raises(ObliviateError, match="has no test rows"):
        ob.stream(train, test, n_experiences=4)


def test_a_class_the_labels_lack_is_warned_about_in_one_line():
    x, y = _arrays([0, 1, 2, 3, 5])  # class 4 never occurs: n_classes is 6
    train, test = ob.dataset(x, y)
    with pytest.warns(ob.MissingClassWarning) as record:
        stream = ob.stream(train, test, n_experiences=3)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "\n" not in msg and msg.startswith("class 4 (experience ")
    assert "no training rows" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # learn does not warn a second time
        ob.learn(nn.Linear(4, 6), stream, strategy="naive", n_epochs=1)
    # one class per experience: class 4's experience would be empty, which is refused
    with pytest.raises(ObliviateError, match=r"experience \d \(classes 4\) has no training rows"):
        ob.stream(train, test, n_experiences=6)


def test_a_class_with_test_rows_only_is_warned_about():
    x, y = _arrays([0, 1, 2])
    train, test = ob.dataset(x, y, x_test=x[:6], y_test=np.array([0, 1, 2, 3, 3, 0]))
    with pytest.warns(ob.MissingClassWarning, match=r"^class 3 of 0\.\.3 has no training rows"):
        ob.stream(train, test, scenario="joint", n_experiences=1)


def test_complete_labels_give_no_warning():
    x, y = _arrays([0, 1, 2, 3])
    train, test = ob.dataset(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ob.stream(train, test, n_experiences=2)
