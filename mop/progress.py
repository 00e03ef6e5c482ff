"""Progress bars for every stage that can run past ~10 s: one spelling, on stderr, with a count
and an ETA (tqdm). In a terminal the bar redraws as usual; in a log or a pipe (stderr is not a
terminal: a job runner, `2> log`, a test capturing stderr) it still appears, refreshed at most
every LOG_INTERVAL_S seconds, so a long stage is never silent and a log is not flooded.

    with progress_bar(len(jobs), "evaluations") as bar: ... bar.update(1)

The imitation loop's log line (`format_log_line`, written through its bar) is here too.
"""

from __future__ import annotations

import sys
from typing import Any

LOG_INTERVAL_S = 10.0  # a log or pipe gets a refreshed line at most this often


def progress_bar(total: int | None, desc: str, enabled: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on stderr (disabled: a no-op bar with the same methods). kwargs go to tqdm."""
    from tqdm.auto import tqdm

    terminal = sys.stderr.isatty()
    settings: dict[str, Any] = {
        "total": total,
        "desc": desc,
        "disable": not enabled,
        "dynamic_ncols": True,
        "file": sys.stderr,
        "mininterval": 0.1 if terminal else LOG_INTERVAL_S,
    }
    return tqdm(**{**settings, **kwargs})


def success_label(row: dict) -> str:
    """What the training line's success measures: the collected episodes, whose actions were the
    bot's with probability teacher_forcing (per step) and the student's otherwise. So only at
    teacher_forcing 0 is it the student's own success ('succ(student)'); otherwise it is labelled
    bot-driven with the share of bot actions ('succ(bot-driven 50%)'), and an evaluation
    (eval_mop.py) gives the student's own."""
    forcing = row.get("train/teacher_forcing", 0.0)
    if forcing is None or forcing != forcing or forcing <= 0:
        return "succ(student)"
    return "succ(bot-driven)" if forcing >= 1 else f"succ(bot-driven {forcing:.0%})"


def format_log_line(row: dict) -> str:
    parts = [
        f"upd {row['update']:>5}",
        f"loss {row.get('train/loss', float('nan')):.3f}",
        f"acc {row.get('train/accuracy', float('nan')):.3f}",
        f"{success_label(row)} {row['train/success_recent']:.3f} ({row['episodes/recent_window']} ep)",
        f"path {row['train/path_ratio_recent']:.2f}",
    ]
    if "train/lpc" in row:
        parts.append(f"lpc {row['train/lpc']:.0f}")
        layers = sorted({k.split("/")[1] for k in row if k.startswith("routing/")})
        for layer in layers:
            ws = [row[k] for k in sorted(k for k in row if k.startswith(f"routing/{layer}/"))]
            parts.append(f"{layer.replace('layer_', 'L')} " + "/".join(f"{w:.2f}" for w in ws))
    if "buffer/episodes" in row:
        parts.append(f"buf {row['buffer/episodes']} ep")
    if "demos/epoch" in row:
        parts.append(f"demo pass {row['demos/epoch']}")
    parts += [
        f"{row['perf/frames_per_s']:.0f} f/s",
        f"ep {row['episodes/total']}",
        f"botfail {row['episodes/bot_failures']}",
    ]
    return " | ".join(parts)
