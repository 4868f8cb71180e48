"""mkdocs hook: the benchmark outputs under results/ (plots, printed tables, CSV) become part of the
site, so a study's page links to the very file a committed script wrote, not to a copy."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = {".png", ".txt", ".csv"}


def on_files(files, config):
    for path in sorted((ROOT / "results").rglob("*")):
        depth = len(path.relative_to(ROOT).parts)  # results/<study>/<file> is 3: tables, not per-run files
        if path.is_file() and path.suffix in SUFFIXES and (path.suffix == ".png" or depth <= 3):
            files.append(File(path.relative_to(ROOT).as_posix(), src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    return files
