"""The HTML report: every plot kind for CL + unlearning + sharded results, notes for absent ones,
and the report in a real browser (headless Chromium, installed by ``make browser``, run by
``make test``; skipped with a message where it cannot be installed)."""

from __future__ import annotations

import base64
import html as html_lib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from obliviate import ObliviateError
from obliviate.bench import results as store
from obliviate.bench import runner
from obliviate.bench.specs import parse_spec, run_key
from obliviate.report.html import build_report, write_report

CL_SPEC = """\
seeds = [0, 1]
[[learn]]
datasets = ["synthetic"]
scenarios = ["class-incremental"]
strategies = ["naive"]
n_experiences = 2
n_epochs = 2
eval_every = 4

[[events]]
datasets = ["synthetic"]
n_epochs = 5
seeds = [0]
"""

ALL_KINDS = {
    "heatmap",
    "experience-lines",
    "curves",
    "events",
    "unlearning-bars",
    "tradeoff",
    "mia",
    "deletion-cost",
    "sharded-accuracy",
    "lifecycle-timeline",
}


def _forget_record(method: str, seed: int, fa: float) -> dict:
    # the shape run_forget returns (issue #4): original / oracle / unlearned, seconds, speedup
    run = {
        "kind": "forget",
        "dataset": "digits",
        "forget": "class:3",
        "method": method,
        "params": {},
        "seed": seed,
    }
    models = {
        "original": {"retain_acc": 0.99, "forget_acc": 0.98, "test_acc": 0.95, "mia_auc": 0.62},
        "oracle": {"retain_acc": 0.99, "forget_acc": 0.0, "test_acc": 0.86, "mia_auc": 0.81},
        "unlearned": {
            "retain_acc": 0.97,
            "forget_acc": fa,
            "test_acc": 0.84 + 0.01 * seed,
            "mia_auc": 0.7,
        },
    }
    return {
        "key": run_key(run),
        "kind": "forget",
        "label": f"forget {method} seed={seed}",
        "status": "ok",
        "run": run,
        "spec": run,
        "metrics": {**models, "seconds": 0.5 + fa, "speedup": 4.0, "js_to_oracle": 0.1},
        "timings": {"seconds": 0.6},
        "provenance": {"git_commit": "0" * 40, "seed": seed},
    }


def _sharded_record(n_shards: int, n_slices: int) -> dict:
    # the shape run_sharded returns (issue #5)
    run = {
        "kind": "sharded",
        "dataset": "digits",
        "n_shards": n_shards,
        "n_slices": n_slices,
        "seed": 0,
    }
    metrics = {
        "test_accuracy": 0.95 - 0.02 * n_shards,
        "train_seconds": 2.0,
        "deletion_seconds": 2.0 / n_shards / n_slices,
        "speedup": n_shards * n_slices,
        "n_shards": n_shards,
        "n_slices": n_slices,
        "graph": "none",
    }
    return {
        "key": run_key(run),
        "kind": "sharded",
        "label": f"sharded S={n_shards}",
        "status": "ok",
        "run": run,
        "spec": run,
        "metrics": metrics,
        "timings": {"seconds": 1.0},
        "provenance": {"git_commit": "0" * 40},
    }


def _lifecycle_record(strategy: str, seed: int) -> dict:
    run = {
        "kind": "lifecycle",
        "dataset": "digits",
        "scenario": "class-incremental",
        "strategy": strategy,
        "schedule": "1:random:5%",
        "path": "approximate",
        "method": "finetune",
        "seed": seed,
    }
    events = [
        {"event": "learn", "experience": 0, "retention": 0.99, "oracle_retention": 0.99},
        {"event": "forget", "request": "random:5%", "retention": 0.97, "oracle_retention": 0.98},
        {"event": "learn", "experience": 1, "retention": 0.9, "oracle_retention": 0.91},
    ]
    for k, e in enumerate(events):
        e["forget_acc_gap"] = None if k == 0 else 0.01 * (seed + 1)
    final = {**events[-1], "forget_acc": 0.5, "oracle_forget_acc": 0.49}
    return {
        "key": run_key(run),
        "kind": "lifecycle",
        "label": f"lifecycle {strategy}",
        "status": "ok",
        "run": run,
        "spec": run,
        "metrics": {"events": events, "final": final, "forget_seconds": 0.1, "rerun_seconds": 1.0},
        "timings": {"seconds": 1.0},
        "provenance": {"git_commit": "0" * 40},
    }


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("results")
    _, runs = parse_spec(CL_SPEC, "cl.toml")
    runner.run_grid(runs, out)  # real continual-learning runs (with curves) and forgetting events
    path = store.results_path(out)
    for seed in (0, 1):
        for method, fa in (("finetune", 0.5), ("ssd", 0.02)):
            store.append(path, _forget_record(method, seed, fa))
    for s in (1, 2, 4):
        for r in (1, 2):
            store.append(path, _sharded_record(s, r))
    for strategy in ("replay", "ewc"):
        for seed in (0, 1):
            store.append(path, _lifecycle_record(strategy, seed))
    store.append(
        path,
        {
            "key": "bad",
            "kind": "learn",
            "label": "learn broken",
            "status": "error",
            "error": "ObliviateError: <b>no</b>",
            "run": {"kind": "learn"},
            "timings": {"seconds": 0.1},
            "provenance": {},
        },
    )
    return out


def _svgs(html: str) -> list[bytes]:
    return [
        base64.b64decode(b)
        for b in re.findall(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)"', html)
    ]


def test_report_has_every_plot_kind_and_the_runs_table(results_dir, tmp_path):
    out = write_report(results_dir, tmp_path / "r.html")
    html = out.read_text()
    kinds = set(re.findall(r'<figure class="plot" data-kind="([a-z-]+)"', html))
    assert kinds == ALL_KINDS
    svgs = _svgs(html)
    assert len(svgs) == html.count('<figure class="plot"')
    for svg in svgs:
        assert svg.lstrip().startswith(b"<?xml") and b"<svg" in svg and len(svg) > 2000
    # self-contained: nothing fetched from anywhere
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert "<script" not in html
    # every run in the table, with its key, status and (escaped) error
    for rec in store.read(results_dir):
        assert rec["key"] in html
    assert "ObliviateError: &lt;b&gt;no&lt;/b&gt;" in html
    assert "section-omitted" not in html
    # a mean ± std table per kind: learn, events, forget, sharded, lifecycle
    assert html.count('<table class="summary">') == 5
    assert "Example forgetting events, mean ± std over seeds" in html


def test_absent_sections_are_omitted_with_a_note(results_dir):
    cl_only = [r for r in store.read(results_dir) if r["kind"] == "learn"]
    html = build_report(cl_only, source="x")
    assert html.count('class="note section-omitted"') == 3
    assert "No approximate-unlearning runs" in html and "No sharded (exact unlearning) runs" in html
    assert "No lifecycle runs" in html
    assert "No forgetting-event counts" in html
    assert 'data-kind="heatmap"' in html and 'data-kind="mia"' not in html


def test_report_of_missing_dir_is_a_clear_error(tmp_path):
    with pytest.raises(ObliviateError, match="no results at"):
        write_report(tmp_path / "nowhere", tmp_path / "r.html")


# ---- in a real browser ----------------------------------------------------------------------

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

PROBE = """
<script>
window.addEventListener("load", () => {
  const figs = [...document.querySelectorAll("figure.plot")].map(f => {
    const img = f.querySelector("img");
    const r = img.getBoundingClientRect();
    return {kind: f.dataset.kind, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
            shownW: r.width, shownH: r.height};
  });
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = "PROBE" + JSON.stringify(figs) + "END";
  document.body.appendChild(out);
});
</script>
"""


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "headless Chromium not found: `make browser` installs Debian's `chromium` "
        "(needs root and apt); browser test skipped"
    )


def test_report_renders_with_all_plots_in_chromium(results_dir, tmp_path):
    browser = _chromium()
    html = build_report(store.read(results_dir), source=str(results_dir))
    page = tmp_path / "report.html"
    page.write_text(html.replace("</body>", PROBE + "</body>"))
    cmd = [
        browser,
        *FLAGS,
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("chromium did not finish rendering the report within 120 s")
    m = re.search(r'<pre id="probe">PROBE(.*?)END</pre>', proc.stdout, re.S)
    assert m, f"probe missing from the rendered DOM; chromium stderr: {proc.stderr[-2000:]}"
    figs = json.loads(html_lib.unescape(m.group(1)))
    assert {f["kind"] for f in figs} == ALL_KINDS
    for f in figs:
        assert f["complete"] and f["w"] > 100 and f["h"] > 100, f
        assert f["shownW"] > 100 and f["shownH"] > 50, f
    # and a screenshot that is not blank
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 50_000


def test_demo_report_section_collects_every_section(results_dir, tmp_path, monkeypatch):
    import io

    from rich.console import Console

    from obliviate.cli.demo import report_section

    demo = tmp_path / "demo"
    (demo / "learn").mkdir(parents=True)
    (demo / "forget").mkdir()
    recs = store.read(results_dir)
    for r in recs:
        if r["kind"] in ("learn", "sharded", "events"):
            store.append(store.results_path(demo / "learn"), r)
    # the unlearning section's own format: {request: [run_forget result, ...]}
    forget = [
        dict(r["metrics"], spec={**r["run"], "recipe": {}}, provenance=r["provenance"])
        for r in recs
        if r["kind"] == "forget"
    ]
    (demo / "forget" / "results.json").write_text(json.dumps({"class:3": forget}))
    monkeypatch.setenv("OBLIVIATE_DEMO_DIR", str(demo))
    buf = io.StringIO()
    report_section(Console(file=buf, width=300))
    assert str((demo / "report.html").resolve()) in buf.getvalue()
    html = (demo / "report.html").read_text()
    assert {"heatmap", "unlearning-bars", "mia", "deletion-cost"} <= set(
        re.findall(r'data-kind="([a-z-]+)"', html)
    )
