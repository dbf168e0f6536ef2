"""The figures the READMEs quote about runs are the ones the recorded runs produced:
docs/main_job.json (written by docs/main_job.py) for the main job, and
docs/lesson_times.json (written by notebooks/build_lessons.py --times) for the lessons."""
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_readme_quotes_the_recorded_main_job():
    record = json.loads((ROOT / "docs" / "main_job.json").read_text())
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"it trained in\s+([0-9.]+) s\b.*?reached ([0-9.]+)% test accuracy", readme,
                  flags=re.S)
    assert m, "the README no longer states the main job's time and accuracy"
    assert float(m.group(1)) == round(record["train_seconds"])
    assert float(m.group(2)) == record["test_accuracy_percent"]
    assert record["cpu"].split()[0] in readme and str(record["cores"]) + " cores" in readme


def test_notebooks_readme_quotes_the_recorded_lesson_times():
    record = json.loads((ROOT / "docs" / "lesson_times.json").read_text())
    text = (ROOT / "notebooks" / "README.md").read_text()
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(record["seconds"]) == notebooks      # every lesson timed, none left over
    for stem, seconds in record["seconds"].items():
        row = re.search(rf"\| `{re.escape(stem)}.ipynb` \| (\d+) s \|", text)
        assert row, stem
        assert int(row.group(1)) == round(seconds), stem


def test_readme_and_train_announce_the_same_first_compile_time():
    from tinyres.__main__ import FIRST_COMPILE
    readme = (ROOT / "README.md").read_text()
    bench = (ROOT / "benchmarks" / "README.md").read_text()
    assert f"one-time compilation on the first run, about {FIRST_COMPILE}" in \
        " ".join(readme.split())
    assert f"The cold run is about {FIRST_COMPILE} on a quiet 2-core machine" in \
        " ".join(bench.split())


def test_benchmarks_readme_quotes_the_recorded_ddp_run():
    record = json.loads((ROOT / "benchmarks" / "results" / "ddp_bench_2026-12-03.json")
                        .read_text())
    text = (ROOT / "benchmarks" / "README.md").read_text()
    assert f"commit {record['commit']}" in text
    machine = record["machine"]          # what it ran on: SIMD flags and the BLAS kernel
    assert machine["cpu_identity"]["simd_flags"] and machine["blas"]["libraries"]
    assert machine["blas"]["libraries"][0]["architecture"] in text
    for r in record["rows"]:
        images = r["ranks"] * r["batch_per_rank"] / r["step_s"]
        row = (f"| {r['ranks']} | {r['cap_mb']:g} | {r['buckets']} | {r['bytes_per_step']:,} | "
               f"{1000 * r['step_s']:.0f} | {images:.0f} | {1000 * r['wait_s']:.2f} | "
               f"{1000 * r['allreduce_s']:.2f} |")
        assert row in text, row
