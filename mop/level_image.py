"""The level picture beside the routing figures: the example layout of a cache, drawn by minigrid.

routing_analysis.example_layout chooses the layout (one rule, stated in its caption); this module
draws it with babyai_env.render_layout (minigrid's own renderer, the start layout recreated from the
episode's seed). render_plots.py and routing_viz.py both call `example_image`, so the PNG and the
notebook show the same layout of the same cache. Pictures are kept per process (a notebook server
draws a layout once for all its sessions); minigrid is imported on the first drawing, not on import.
Reads and writes nothing.

    image, example = example_image(data)          # data: routing_cache.load_cache(...)
    example.caption()  # 'one example layout of 200: seed 2 (episode 2: successful, median length)'
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from mop.routing_analysis import ExampleLayout, example_layout


def cache_task(meta: dict[str, Any]) -> str:
    """The level a cache's episodes ran on (its evaluation level, else the training one)."""
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    return str(metrics.get("eval_task_id") or meta["config"].get("task_id"))


@functools.lru_cache(maxsize=64)
def render(
    task_id: str, seed: int, max_steps: int | None = None, tile_size: int = 24
) -> tuple[np.ndarray, str]:
    """minigrid's picture (RGB, read-only) of the start layout of `seed` and its mission."""
    from mop.babyai_env import render_layout

    image, mission = render_layout(task_id, seed, max_steps, tile_size)
    image = np.asarray(image)
    image.setflags(write=False)  # shared by every caller of the cache
    return image, mission


def example_image(data: Any, tile_size: int = 24) -> tuple[np.ndarray | None, ExampleLayout]:
    """The example layout of a loaded cache and its picture (None where the cache records no
    layout seed: the earlier system's caches)."""
    example = example_layout(data.episodes)
    if example.seed is None:
        return None, example
    metrics = data.meta.get("metrics") if isinstance(data.meta.get("metrics"), dict) else {}
    max_steps = metrics.get("max_steps")
    image, _ = render(
        cache_task(data.meta), example.seed, None if max_steps is None else int(max_steps), tile_size
    )
    return image, example
