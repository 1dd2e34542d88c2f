"""benchmarks/unlearning_bench_table.py: mean ± std over seeds, ratios per seed, failures counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _benchmarks import load

ROOT = Path(__file__).resolve().parents[1]
table = load("unlearning_bench_table")


def _model(acc: float) -> dict:
    return {"retain_acc": acc, "forget_acc": acc / 2, "test_acc": acc, "mia_auc": 0.5}


def _rec(method: str, seed: int, cpu: float, ok: bool = True) -> dict:
    rec = {
        "key": f"{method}-{seed}",
        "kind": "forget",
        "run": {"dataset": "d", "forget": "class:3", "method": method, "seed": seed},
        "status": "ok" if ok else "error",
    }
    if ok:
        rec["metrics"] = {
            "method": method,
            "n_forget": 10,
            "unlearned": _model(0.8 + 0.1 * seed),
            "oracle": _model(0.9),
            "relearn_steps": 4 + seed,
            "relearn_steps_oracle": 6,
            "cpu_seconds": cpu,
            "oracle_cpu_seconds": 2.0 * (seed + 1),
            "seconds": 3 * cpu,
            "oracle_seconds": 1.0,
        }
    else:
        rec["error"] = "Diverged: weights became NaN\nmore"
    return rec


def test_table_means_stds_ratios_and_failures(tmp_path):
    recs = [_rec("retrain", s, 2.0 * (s + 1)) for s in (0, 1)]
    recs += [_rec("ssd", 0, 0.2), _rec("ssd", 1, 0.4), _rec("scrub", 0, 0.0, ok=False)]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    text = table.tables(table.load(path))
    rows = {line.split(" | ")[0].strip("| `"): line for line in text.splitlines() if "| `" in line}
    assert list(rows) == ["retrain", "scrub", "ssd"]  # oracle first, then by name
    # RA of ssd: 0.8 and 0.9 -> 0.850 ± 0.071; CPU ratio per seed: 0.2/2 and 0.4/4 -> 10.0 ± 0.0 %
    assert "0.850 ± 0.071" in rows["ssd"] and "10.0 ± 0.0" in rows["ssd"]
    assert "100.0 ± 0.0" in rows["retrain"]
    assert "| 0 |" in rows["scrub"] and "1: Diverged: weights became NaN" in rows["scrub"]
    assert "more" not in rows["scrub"]


def test_wall_puts_wall_seconds_in_the_cost_columns(tmp_path):
    recs = [_rec("retrain", 0, 2.0), _rec("ssd", 0, 0.2)]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    text = table.tables(table.load(path), wall=True)
    assert "wall s | % of retrain wall" in text and "retraining 1.0 wall s" in text
    ssd = next(line for line in text.splitlines() if line.startswith("| `ssd`"))
    assert "| 0.60 | 60.0 |" in ssd  # 3 x 0.2 wall s over the oracle's 1.0
    assert "CPU" not in text


def test_missing_results_is_exit_2_on_stderr(tmp_path, capsys):
    assert table.main([str(tmp_path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: no results.jsonl")


def _write(folder: Path, recs: list, tail: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + tail)
    return path


def _main(argv: list, capsys) -> tuple[int, str, str]:
    """``main(argv)``: exit code, stdout, stderr; stderr is at most one line (no traceback)."""
    rc = table.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert len(err.splitlines()) <= 1, err
    return rc, out, err


def _grid() -> list:
    return [_rec("retrain", s, 2.0 * (s + 1)) for s in (0, 1)] + [_rec("ssd", 0, 0.2)]


def test_the_oracle_line_uses_the_oracle_most_runs_of_a_seed_were_measured_against(tmp_path):
    recs = [_rec(m, 0, 1.0) for m in ("retrain", "ssd", "scrub")]
    other = _rec("finetune", 0, 1.0)  # recorded last, against a second oracle training
    other["metrics"]["oracle_seconds"] = 9.0
    other["metrics"]["oracle"] = _model(0.5)
    recs.append(other)
    text = table.tables(recs, wall=True)
    assert (
        "Oracle (retrained): RA 0.900, FA 0.450, TA 0.900, MIA 0.500; retraining 1.0 wall s."
        in (text)
    )
    note = "seed 0: 2 oracles (3 and 1 runs); the line above uses the one most runs were measured"
    assert note in text
    # the same oracle, its seconds stored as float32 in one record and float64 in another
    recs = [_rec("retrain", 0, 1.0), _rec("ssd", 0, 1.0)]
    recs[0]["metrics"]["oracle_seconds"] = 4.870451927185059
    recs[1]["metrics"]["oracle_seconds"] = 4.870451884000005
    assert "oracles" not in table.tables(recs, wall=True)


def test_a_torn_last_line_is_skipped_with_a_note(tmp_path, capsys):
    _write(tmp_path, _grid(), tail='{"key": "ssd-1", "kind": "forg')
    rc, out, err = _main([tmp_path], capsys)
    assert rc == 0 and "| `ssd` | 1 |" in out
    assert err.startswith("note: ") and "results.jsonl:4: skipped a torn last line" in err
    # a complete last record that lacks only its newline counts, without a note
    _write(tmp_path, _grid(), tail=json.dumps(_rec("ssd", 1, 0.4)))
    rc, out, err = _main([tmp_path], capsys)
    assert rc == 0 and "| `ssd` | 2 |" in out and err == ""


def test_a_corrupt_line_elsewhere_is_an_error_naming_file_and_line(tmp_path, capsys):
    path = _write(tmp_path, _grid())
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + '{"key": "x", "ki\n' + "".join(lines[1:]))
    rc, out, err = _main([tmp_path], capsys)
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and f"{path}:2: corrupt result line" in err


def test_a_truncated_or_foreign_gz_is_an_error_naming_the_file(tmp_path, capsys):
    import gzip

    packed = gzip.compress("".join(json.dumps(r) + "\n" for r in _grid()).encode())
    path = tmp_path / "results.jsonl.gz"
    for data in (packed[: len(packed) // 2], b"plain text, not gzip\n"):
        path.write_bytes(data)
        rc, out, err = _main([tmp_path], capsys)
        assert rc == 2 and out == ""
        assert err.startswith(f"error: {path}: not a complete gzip file")
    path.write_bytes(packed)
    assert _main([tmp_path], capsys)[0] == 0


def test_bad_seeds_no_such_seed_and_nothing_to_tabulate(tmp_path, capsys):
    _write(tmp_path, _grid())
    rc, out, err = _main([tmp_path, "--seeds", "x"], capsys)
    assert rc == 2 and out == "" and "--seeds 'x': not a comma-separated list of integers" in err
    rc, out, err = _main([tmp_path, "--seeds", "7"], capsys)
    assert rc == 1 and out == "" and "no forget records of seed(s) 7" in err
    assert "seeds there: 0, 1" in err
    assert _main([tmp_path, "--seeds", "1"], capsys)[0] == 0
    empty = tmp_path / "empty"
    _write(empty, [])
    rc, out, err = _main([empty], capsys)
    assert rc == 1 and out == "" and "no forget records in" in err
    learn = tmp_path / "learn"
    _write(learn, [{**_rec("ssd", 0, 0.2), "kind": "learn"}])
    rc, out, err = _main([learn], capsys)
    assert rc == 1 and out == "" and "no forget records in" in err
    failed = tmp_path / "failed"
    _write(failed, [_rec("ssd", 0, 0.2, ok=False)])
    rc, out, err = _main([failed], capsys)
    assert rc == 1 and out == "" and "all failed" in err


def test_a_failure_without_a_message_is_counted(tmp_path):
    recs = _grid() + [_rec("scrub", 0, 0.0, ok=False), _rec("jit", 0, 0.0, ok=False)]
    recs[-2]["error"] = ""
    recs[-1]["error"] = None
    rows = {ln.split(" | ")[0].strip("| `"): ln for ln in table.tables(recs).splitlines()}
    assert rows["scrub"].endswith("| - | 1 |") and rows["jit"].endswith("| - | 1 |")


def test_a_zero_oracle_time_shows_a_dash_for_the_ratio(tmp_path):
    recs = _grid()
    for r in recs:
        r["metrics"]["oracle_seconds"] = 0.0
        r["metrics"]["oracle_cpu_seconds"] = 0
    for wall in (True, False):
        text = table.tables(recs, wall=wall)
        ssd = next(ln for ln in text.splitlines() if ln.startswith("| `ssd`"))
        assert ssd.endswith(" | - |  |")  # the cost, then '-' for the ratio, no failure


def test_a_folder_given_twice_counts_its_runs_once(tmp_path, capsys):
    _write(tmp_path, _grid())
    once = _main([tmp_path], capsys)
    twice = _main([tmp_path, tmp_path], capsys)
    assert once == twice and once[0] == 0 and "| `retrain` | 2 |" in once[1]


def test_both_results_files_reads_the_plain_one_and_says_so(tmp_path, capsys):
    import gzip

    _write(tmp_path, _grid())
    (tmp_path / "results.jsonl.gz").write_bytes(gzip.compress(b"not read\n"))
    rc, out, err = _main([tmp_path], capsys)
    assert rc == 0 and "| `ssd` | 1 |" in out
    assert err.startswith("note: ") and "has both results.jsonl and results.jsonl.gz" in err
    assert "reading results.jsonl" in err


def test_label_names_a_dataset_in_the_headings(tmp_path, capsys):
    _write(tmp_path, _grid())
    rc, out, err = _main([tmp_path, "--label", "d=MNIST (full, H200)"], capsys)
    assert rc == 0 and err == ""
    assert "### MNIST (full, H200) forget `class:3` (10 training samples), seeds [0, 1]" in out
    for bad in ("d", "=x", "mnist=MNIST"):
        rc, out, err = _main([tmp_path, "--label", bad], capsys)
        assert rc == 2 and out == "" and err.startswith(f"error: --label {bad!r}")


@pytest.mark.parametrize(
    "bad",
    [
        {"metrics": {}},  # an ok record without the figures
        {"metrics": {"unlearned": "x", "oracle": {}}},
        {"run": {"dataset": "d", "forget": "class:3", "method": "ssd", "seed": "zero"}},
        {"run": {"dataset": ["d"], "forget": "class:3", "method": "ssd", "seed": 0}},
    ],
    ids=["no-figures", "unlearned-a-string", "seed-a-string", "dataset-a-list"],
)
def test_a_malformed_forget_record_is_one_line_not_a_traceback(tmp_path, capsys, bad):
    recs = _grid()
    recs[1] = {**recs[1], **bad}
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    rc, out, err = _main([tmp_path], capsys)
    assert rc == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1


def test_a_deeply_nested_line_is_a_corrupt_line(tmp_path, capsys):
    path = _write(tmp_path, _grid())
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "[" * 200_000 + "\n" + "".join(lines[1:]))
    rc, out, err = _main([tmp_path], capsys)
    assert rc == 2 and f"{path}:2: corrupt result line" in err


def test_a_seed_without_records_is_named_and_an_empty_gz_is_an_error(tmp_path, capsys):
    _write(tmp_path, _grid())
    rc, out, err = _main([tmp_path, "--seeds", "0,9"], capsys)
    assert rc == 0 and "| `ssd` |" in out
    assert err.strip() == f"note: no forget records of seed(s) 9 in {tmp_path}"
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "results.jsonl.gz").write_bytes(b"")
    rc, out, err = _main([gz], capsys)
    assert rc == 2 and "an empty file, not a gzip file" in err
