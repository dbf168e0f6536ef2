"""Execute every lesson and write a rendered copy, one HTML page per notebook, with its
outputs and figures, so that a student can read the lessons without running them:

    python notebooks/build_lessons.py                 # all nine, into build/lessons/
    python notebooks/build_lessons.py --out DIR 04 05 # some of them, elsewhere
    python notebooks/build_lessons.py --times docs/lesson_times.json   # and record the
                                                       # seconds each took, and the machine

How an exercise works. A code cell tagged `exercise-N` holds what the student fills in (a
prediction and a function that raises NotImplementedError); the code cell tagged `check`
after it asserts that the prediction and the function are right. A check cell is also
tagged `raises-exception`, so that a notebook with its exercises still open runs to the
end and shows, in each check cell, the error the student has to make go away.
`notebooks/solutions/NN_*.py` holds the answers, one section per exercise, opened by a
line `# %% exercise N`. `run_solutions` runs those sections in place of the exercise cells
and then the checks again, in the kernel that executed the notebook:
tests/test_notebooks.py does that for every notebook, so every exercise is known to be
solvable, and it requires each check to fail while its exercise is still a stub.

The rendered copy shows the exercises open (the stubs and the errors of their checks),
not the solutions.
"""
import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))
SOLUTIONS = HERE / "solutions"
TIMEOUT = 300          # seconds per cell


def tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def exercise_number(cell):
    """N for a cell tagged `exercise-N`, else None."""
    for tag in tags(cell):
        m = re.fullmatch(r"exercise-(\d+)", tag)
        if m:
            return int(m.group(1))
    return None


def solution_path(notebook):
    """notebooks/solutions/NN_*.py for notebooks/NN_*.ipynb."""
    return SOLUTIONS / (Path(notebook).stem + ".py")


def solution_sections(notebook):
    """{N: source} from the solutions file, split at its `# %% exercise N` lines."""
    text = solution_path(notebook).read_text()
    parts = re.split(r"^# %% exercise (\d+)[^\n]*\n", text, flags=re.M)
    return {int(n): body.strip() + "\n" for n, body in zip(parts[1::2], parts[2::2])}


def client_for(nb, cwd):
    """An nbclient NotebookClient that runs `nb` with the `python3` kernel in `cwd`."""
    return NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3",
                          resources={"metadata": {"path": str(cwd)}})


def execute(notebook, cwd, then=None):
    """Read and execute `notebook` in `cwd`; returns the executed notebook. `then(client,
    nb)`, if given, runs in the same kernel afterwards (for example run_solutions).
    The kernel draws with matplotlib's inline backend whatever MPLBACKEND says here, so
    every figure comes back as an image/png output (under Agg, plt.show() draws nothing:
    that is how figures used to vanish from the executed notebooks)."""
    nb = nbformat.read(notebook, as_version=4)
    client = client_for(nb, cwd)
    env = dict(os.environ, MPLBACKEND="module://matplotlib_inline.backend_inline")
    with client.setup_kernel(env=env):
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
        if then is not None:
            then(client, nb)
    return nb


def run_solutions(client, nb, notebook):
    """Run each exercise's solution and then every check cell again in the kernel of
    `client`; returns the executed copies of those cells (their outputs say whether the
    checks passed). `nb` itself is left as it was."""
    answers = solution_sections(notebook)
    cells = []
    for cell in nb.cells:
        n = exercise_number(cell)
        if n is not None:
            cells.append(nbformat.v4.new_code_cell(answers[n]))
        elif "check" in tags(cell):
            cells.append(nbformat.v4.new_code_cell(cell.source, metadata=cell.metadata))
    solved = nbformat.v4.new_notebook(cells=cells)
    client.nb = solved
    try:
        for index, cell in enumerate(solved.cells):
            client.execute_cell(cell, index)
    finally:
        client.nb = nb
    return solved.cells


def errors(cells):
    """The error outputs of the code cells among `cells`."""
    return [o for c in cells if c.cell_type == "code" for o in c.get("outputs", [])
            if o.output_type == "error"]


def to_html(nb, path):
    """Write the executed notebook `nb` as a self-contained HTML page at `path`."""
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter().from_notebook_node(nb)
    Path(path).write_text(body)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(HERE.parent / "build" / "lessons"))
    parser.add_argument("--times", help="write the seconds each notebook took to this JSON")
    parser.add_argument("which", nargs="*", help="notebook numbers (default: all)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    chosen = [p for p in NOTEBOOKS if not args.which or p.stem[:2] in args.which]
    seconds, load_before = {}, os.getloadavg()[0]
    for path in chosen:
        start = time.perf_counter()
        nb = execute(path, out)
        page = to_html(nb, out / (path.stem + ".html"))
        seconds[path.stem] = round(time.perf_counter() - start, 1)
        print(f"{page}  ({seconds[path.stem]:.0f} s)")
    if args.times:
        record_times(seconds, args.times, (load_before, os.getloadavg()[0]))
    return 0


def record_times(seconds, path, load):
    """Write the seconds each notebook took to execute and render, with the machine and
    its 1-minute load average before and after (other jobs may share the cores)."""
    import json
    import platform
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [line.split(":", 1)[1].strip() for line in
                 Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0] if names else cpu
    record = dict(seconds=seconds, total=round(sum(seconds.values()), 1), cpu=cpu,
                  cores=os.cpu_count(), load_average=[round(v, 1) for v in load],
                  date=time.strftime("%Y-%m-%d"))
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
