"""``obliviate bench`` (run a grid), ``obliviate compare`` (two results dirs) and ``obliviate report``."""

from __future__ import annotations

import typer

from obliviate.cli import _common as _c


def register(app: typer.Typer) -> None:
    @app.command("bench")
    def bench(
        spec: str = typer.Argument(
            ..., help="TOML spec file describing the grid (see benchmarks/specs/)"
        ),
        out: str = typer.Option(
            ..., "--out", "-o", help="results directory (created; re-running resumes)"
        ),
        backend: str = typer.Option(
            "local", help="inline (this process) | local (process pool) | ray"
        ),
        workers: int = typer.Option(
            None, min=1, help="parallel runs (default: 1 locally, all CPUs on Ray)"
        ),
        address: str = typer.Option(
            None, help="address of an existing Ray cluster (--backend ray)"
        ),
        data_dir: str = typer.Option(None, help="folder with dataset files (mnist, fashion-mnist)"),
        dry_run: bool = typer.Option(False, "--dry-run", help="list the runs still to do and stop"),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
    ) -> None:
        """Run every run of a spec grid; each finished run appends one line to OUT/results.jsonl."""
        from pathlib import Path

        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from obliviate.bench import results as store
        from obliviate.bench.runner import plan, prepare_out, run_grid
        from obliviate.bench.specs import distinct_labels, load_spec

        console = Console(stderr=True, quiet=quiet)
        loud = Console(stderr=True)  # failures are reported even with --quiet
        header, runs = load_spec(spec, check_data=True, data_dir=data_dir)
        if dry_run:
            path = store.results_path(out)
            todo = plan(runs, store.finished_keys(path) if path.exists() else set())
            for r, text in zip(todo, distinct_labels(todo), strict=True):
                print(f"{r.key}  {text}")
            print(f"{len(todo)} of {len(runs)} runs to do")
            return
        prepare_out(spec, out)
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
            disable=quiet,
        )
        state: dict = {}

        def on_start(n_todo: int, n_skipped: int) -> None:
            name = header.get("name", Path(spec).stem)
            console.print(
                f"{name}: {len(runs)} runs, {n_skipped} already done, {n_todo} to run -> {out}"
            )
            state["task"] = progress.add_task(name, total=n_todo)

        def on_result(rec: dict) -> None:
            ok = rec["status"] == "ok"
            mark = "[green]ok[/]" if ok else f"[red]error[/] {rec.get('error', '')}"
            line = f"{rec['timings']['seconds']:7.1f}s  {rec['label']}  {mark}"
            (progress.console if ok or not quiet else loud).print(line, highlight=False)
            progress.advance(state["task"])

        try:
            with progress:
                counts = run_grid(
                    runs,
                    out,
                    backend=backend,
                    workers=workers,
                    address=address,
                    data_dir=data_dir,
                    on_start=on_start,
                    on_result=on_result,
                )
        except KeyboardInterrupt:
            console.print(
                "interrupted: finished runs are stored; run the same command again to resume"
            )
            raise typer.Exit(130) from None
        (loud if counts["error"] else console).print(
            f"done: {counts['ok']} ok, {counts['error']} failed, {counts['skipped']} skipped -> "
            f"{store.results_path(out)}"
        )
        if counts["error"]:
            raise typer.Exit(1)

    @app.command("compare")
    def compare(
        dir_a: str = typer.Argument(..., help="results directory A (or its results.jsonl)"),
        dir_b: str = typer.Argument(..., help="results directory B"),
        as_json: bool = _c.json_option(),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """Mean ± std over seeds per method in A and in B, and the difference B - A."""
        from rich.table import Table

        from obliviate.bench import results as store
        from obliviate.bench.summary import compare_rows, fmt, summarize

        rows = compare_rows(summarize(store.read(dir_a)), summarize(store.read(dir_b)))
        if as_json:
            _c.emit_json(rows)
            return
        table = Table(title=f"A = {dir_a}   B = {dir_b}")
        for col in ("method", "metric", "n A", "A mean ± std", "n B", "B mean ± std", "B - A"):
            table.add_column(col, justify="left" if col in ("method", "metric") else "right")
        for r in rows:
            diff = "-" if r["diff"] != r["diff"] else f"{r['diff']:+.3f}"
            table.add_row(
                r["method"],
                r["metric"],
                str(r["n_a"]),
                fmt(*r["a"]),
                str(r["n_b"]),
                fmt(*r["b"]),
                diff,
            )
        _c.console().print(table)

    @app.command("report")
    def report(
        results_dir: str = typer.Argument(
            ..., help="results directory written by `obliviate bench`"
        ),
        out: str = typer.Option(
            None, "--out", "-o", help="HTML file to write [default: report.html]"
        ),
        output: str = _c.legacy_output_option(),
        title: str = typer.Option(None, help="report title"),
        quiet: bool = _c.quiet_option(),
    ) -> None:
        """One self-contained HTML report (plots embedded) of a results directory."""
        from obliviate.report.html import write_report

        target = _c.resolve_out(out, output) or "report.html"
        _c.check_out_target(target)  # an existing, writable folder (as every --out)
        path = write_report(results_dir, target, title=title)
        print(path)
