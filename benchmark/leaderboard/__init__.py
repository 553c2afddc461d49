"""Leaderboards from run records: per-task CSVs, the wide table, published reference rows, significance
tests against a baseline, Markdown, a self-contained sortable HTML page and PNG plots.

Everything is derived from the records (``RUNS/runs/<backbone>/<task>/<key>.json``, see
``benchmark/runs/execute.py``); nothing is edited by hand. The same records give byte-identical CSV,
Markdown and HTML files: rows are sorted, numbers are rounded here in code, and no timestamps are written.

Units: record metrics are fractions in [0, 1]; every value written here is in percent, like the
published tables (``results/reference/``). Differences to a baseline are in percentage points.

Which runs count: final runs only (``phase`` ``"final"``, or no ``phase`` at all); learning-rate search
runs (``phase == "lr_search"``) are listed in ``runs.csv`` and summarised in the ``lr_search`` column.
Where one backbone has final runs of one task at several settings (learning rate, split, overrides, image
size), the setting with the most successful runs is used and the others are named in ``notes``.

Where things are (one module per question)::

    load.py      the inputs: run records and the published reference rows (LeaderboardError)
    build.py     cells, rows, ranks, the comparisons with a baseline and their significance: Leaderboard
    stats.py     the statistics (means, stds, Welch t-tests, Holm, ranks)
    tables.py    number formats, the CSV rows, CSV and Markdown text
    html.py      the self-contained HTML page; its script and style are leaderboard.js, leaderboard.css
    plots.py     the PNG plots
    write.py     write_leaderboard: every file of ``cxrbench leaderboard`` in one output folder

Python use::

    from benchmark.leaderboard import write_leaderboard
    result = write_leaderboard(["out/runs"], "out/leaderboard", reference=True, baseline="published:ImageNet")
    print("\\n".join(result.summary))
"""

from benchmark.leaderboard.build import (
    ALPHA,
    DECIMALS,
    Cell,
    Comparison,
    Leaderboard,
    Row,
    beats,
    build_leaderboard,
)
from benchmark.leaderboard.html import to_html
from benchmark.leaderboard.load import (
    PUBLISHED_PREFIX,
    PUBLISHED_RUNS,
    REFERENCE_COLUMNS,
    REFERENCE_DIR,
    LeaderboardError,
    load_records,
    load_reference,
    published_name,
)
from benchmark.leaderboard.plots import default_plot_rows, plot_diff_heatmap, plot_task_bars
from benchmark.leaderboard.tables import (
    COMPARISON_COLUMNS,
    DISPLAY_DECIMALS,
    RUNS_COLUMNS,
    comparison_table,
    fmt,
    fmt_lr,
    fmt_p,
    runs_table,
    task_columns,
    task_table,
    to_csv,
    to_markdown,
    wide_columns,
    wide_table,
)
from benchmark.leaderboard.write import LeaderboardResult, write_leaderboard

__all__ = [
    "ALPHA",
    "COMPARISON_COLUMNS",
    "DECIMALS",
    "DISPLAY_DECIMALS",
    "PUBLISHED_PREFIX",
    "PUBLISHED_RUNS",
    "REFERENCE_COLUMNS",
    "REFERENCE_DIR",
    "RUNS_COLUMNS",
    "Cell",
    "Comparison",
    "Leaderboard",
    "LeaderboardError",
    "LeaderboardResult",
    "Row",
    "beats",
    "build_leaderboard",
    "comparison_table",
    "default_plot_rows",
    "fmt",
    "fmt_lr",
    "fmt_p",
    "load_records",
    "load_reference",
    "plot_diff_heatmap",
    "plot_task_bars",
    "published_name",
    "runs_table",
    "task_columns",
    "task_table",
    "to_csv",
    "to_html",
    "to_markdown",
    "wide_columns",
    "wide_table",
    "write_leaderboard",
]
