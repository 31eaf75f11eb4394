"""What the user asked to open: the command line turned into paths (no Textual here).

`annotator tui` with no arguments opens the bundled sample: project `demo.db` in the current
directory, the GoEmotions items and their rubric, labelled by the bundled fine-tuned adapter
(`goemotions-lora.gguf`, on the embedded base model) unless --model names another. Otherwise the project defaults to `demo.db`
and every other path is taken as given; `project.load_project` decides what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import annotator

DEMO_PROJECT = Path("demo.db")
DEMO_MODEL = "goemotions-lora.gguf"  # in samples/goemotions: bench/quality.py's GoEmotions run


def samples_dir() -> Path:
    # The samples ship as package data next to the core's modules.
    return Path(annotator.__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class Launch:
    project: Path
    data: Path | None = None
    rubric: Path | None = None
    model: Path | None = None
    demo: bool = False  # the bundled sample was chosen because nothing was given
    base: Path | None = None  # the base model an adapter --model runs on (default: embedded)


def resolve_launch(
    project: str | Path | None = None,
    data: str | Path | None = None,
    rubric: str | Path | None = None,
    model: str | Path | None = None,
    base: str | Path | None = None,
) -> Launch:
    as_path = lambda p: Path(p) if p is not None else None  # noqa: E731
    if project is None and data is None and rubric is None:
        sample = samples_dir() / "goemotions"
        demo_model = sample / DEMO_MODEL
        chosen = as_path(model) or (demo_model if demo_model.is_file() else None)
        return Launch(
            DEMO_PROJECT,
            sample / "items.csv",
            sample / "rubric.toml",
            chosen,
            demo=True,
            base=as_path(base),
        )
    return Launch(
        as_path(project) or DEMO_PROJECT,
        as_path(data),
        as_path(rubric),
        as_path(model),
        base=as_path(base),
    )
