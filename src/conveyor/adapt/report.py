"""Plots (PNG) and one self-contained report.html from an evaluation's metrics."""

from __future__ import annotations

import base64
import html
from pathlib import Path

PLOTS = ("semscore.png", "semscore_distribution.png", "truthfulness.png")


def write_report(metrics: dict, out: Path, changes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    names = list(metrics["models"])
    per_model = {n: [r["models"][n]["semscore"] for r in metrics["rows"]] for n in names}

    fig, ax = plt.subplots(figsize=(5, 3.5))
    means = [metrics["models"][n]["semscore"]["mean"] or 0 for n in names]
    stds = [metrics["models"][n]["semscore"]["std"] or 0 for n in names]
    ax.bar(names, means, yerr=stds, capsize=6, color=_colours(len(names)))
    ax.set_ylim(0, 1)
    ax.set_ylabel("SemScore (mean ± std)")
    ax.set_title("Similarity to the reference answers")
    _save(fig, out / PLOTS[0])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([per_model[n] for n in names], bins=10, range=(-0.2, 1.0), label=names,
            color=_colours(len(names)))
    ax.set_xlabel("SemScore per question")
    ax.set_ylabel("questions")
    ax.legend()
    ax.set_title("SemScore distribution")
    _save(fig, out / PLOTS[1])

    fig, ax = plt.subplots(figsize=(6, 3.5))
    judged = [n for n in names if "counts" in metrics["models"][n]["truthfulness"]]
    width = 0.8 / max(len(judged), 1)
    for i, name in enumerate(judged):
        counts = metrics["models"][name]["truthfulness"]["counts"]
        ax.bar([s + i * width for s in range(1, 6)], [counts[str(s)] for s in range(1, 6)],
               width=width, label=name, color=_colours(len(names))[names.index(name)])
    ax.set_xticks([s + width * (len(judged) - 1) / 2 for s in range(1, 6)], ["1", "2", "3", "4", "5"])
    ax.set_xlabel("truthfulness score (1 wrong … 5 fully correct)")
    ax.set_ylabel("answers")
    if judged:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "judge not run", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Judged truthfulness")
    _save(fig, out / PLOTS[2])

    (out / "report.html").write_text(_page(metrics, out, changes), encoding="utf-8")


def _colours(n: int) -> list[str]:
    palette = ["#9aa5b1", "#2f6fde", "#e0892b", "#3aa65b", "#b04fc9"]
    return [palette[i % len(palette)] for i in range(n)]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _page(metrics: dict, out: Path, changes: int) -> str:
    names = list(metrics["models"])
    esc = html.escape
    head = "".join(f"<th>{esc(n)}</th>" for n in names)
    lines = [
        "<tr><td>SemScore mean (median, std)</td>" + "".join(
            f"<td>{_fmt(m['semscore']['mean'])} ({_fmt(m['semscore']['median'])},"
            f" {_fmt(m['semscore']['std'])})</td>" for m in metrics["models"].values()) + "</tr>",
        "<tr><td>truthfulness mean</td>" + "".join(
            f"<td>{_truth(m['truthfulness'])}</td>" for m in metrics["models"].values()) + "</tr>",
    ]
    images = "".join(
        f'<img alt="{name}" src="data:image/png;base64,'
        f'{base64.b64encode((out / name).read_bytes()).decode()}">' for name in PLOTS)
    table = f"<table><tr><th></th>{head}</tr>{''.join(lines)}</table>"
    return (
        "<!doctype html><html lang='ko'><meta charset='utf-8'><title>Conveyor evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.4em .6em;"
        "vertical-align:top;text-align:left}img{max-width:100%;margin:.5em}</style>"
        f"<h1>Evaluation on {metrics['n']} {esc(metrics['split'])} questions</h1>{table}{images}"
        f"{_changes(metrics, names, changes)}</html>"
    )


def _changes(metrics: dict, names: list[str], count: int) -> str:
    """The questions where the last model gained and lost most against the first."""
    if len(names) < 2 or count == 0:
        return ""
    first, last = names[0], names[-1]
    ranked = sorted(metrics["rows"], key=lambda r: r["models"][last]["semscore"]
                    - r["models"][first]["semscore"])
    esc = html.escape

    def block(title: str, rows: list[dict]) -> str:
        cells = "".join(
            f"<tr><td>{esc(r['question'])}</td><td>{esc(r['reference'])}</td>"
            f"<td>{esc(r['models'][first]['answer'])}</td><td>{esc(r['models'][last]['answer'])}</td>"
            f"<td>{r['models'][last]['semscore'] - r['models'][first]['semscore']:+.3f}</td></tr>"
            for r in rows)
        return (f"<h2>{title}</h2><table><tr><th>question</th><th>reference</th>"
                f"<th>{esc(first)}</th><th>{esc(last)}</th><th>SemScore change</th></tr>"
                f"{cells}</table>")

    return (block(f"Most improved ({esc(last)} over {esc(first)})", ranked[::-1][:count])
            + block("Most regressed", ranked[:count]))


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _truth(entry: dict) -> str:
    if "status" in entry:
        return html.escape(f"{entry['status']}: {entry['reason']}")
    return f"{_fmt(entry['mean'])} (missing {entry['missing']})"
