"""The default model's corpus: this Python's stdlib and site-packages, minus the held-out packages.

    python models/default/recipe/build_corpus.py CORPUS_FOLDER INFO_JSON

The same filters and exact-duplicate rule as `codecomplete-train collect` (the first copy of a
file wins, in folder order), run one folder per process so that a machine's hundreds of
packages take seconds; folders with no Python are skipped instead of stopping the run. Files of
the held-out packages (by folder name anywhere in the path, and by blob sha in
heldout_shas.txt) are dropped. INFO_JSON lists the files kept per folder with each
distribution's version and licence, for the model card.
"""
from __future__ import annotations

import json
import sys
import sysconfig
import time
from collections import Counter
from contextlib import suppress
from importlib import metadata
from multiprocessing import Pool
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from codecomplete.engine.errors import CodecompleteError
from codecomplete.train.collect import CollectConfig, collect
from codecomplete.train.filters import FilterConfig

# The model card's held-out evaluation (typer vendors click as _click).
HELD_OUT = {"typer", "click", "_click", "pygls", "cattrs", "cattr", "markdown_it", "httpx2", "attrs", "attr",
            "lsprotocol", "h11", "iniconfig"}
SKIP = {"__pycache__", "nvidia"}  # nvidia/: CUDA libraries and headers, no Python to learn from


def collect_folder(args: tuple[int, str, str]) -> None:
    i, folder, work = args
    with suppress(CodecompleteError):  # no .py files there, or none passed the filters
        # The default model was trained before collect dropped test files by default.
        collect([Path(folder)], Path(work) / f"{i:04d}", CollectConfig(filters=FilterConfig(drop_tests=False)))


def source_folders() -> list[Path]:
    site, stdlib = (Path(sysconfig.get_paths()[k]) for k in ("purelib", "stdlib"))
    folders = [] if site.is_relative_to(stdlib) else [stdlib]
    skip = HELD_OUT | SKIP
    return folders + sorted(p for p in site.iterdir() if p.is_dir() and p.name not in skip
                            and not p.name.endswith((".dist-info", ".egg-info", ".data")))


def merge(parts: list[Path], out: Path, held_shas: set[str]) -> tuple[Counter[str], Counter[str]]:
    """Shards of all parts into out, without held-out files and repeats; (kept per folder, dropped per reason)."""
    seen: set[str] = set()
    kept, dropped = Counter(), Counter()
    out.mkdir(parents=True)
    shards = 0
    for part in parts:
        table = pq.read_table(part)
        keep = []
        for j, (sha, path) in enumerate(zip(table.column("sha").to_pylist(), table.column("path").to_pylist())):
            if sha in held_shas or HELD_OUT & set(path.split("/")[:-1]):
                dropped["held_out"] += 1
            elif sha in seen:
                dropped["duplicate"] += 1
            else:
                seen.add(sha)
                keep.append(j)
        table = table.take(pa.array(keep, type=pa.int64()))
        kept.update(table.column("repo").to_pylist())
        if table.num_rows:
            pq.write_table(table, out / f"shard-{shards:05d}.parquet")
            shards += 1
    return kept, dropped


def licences(kept: Counter[str]) -> dict[str, dict]:
    """Distribution name -> version, licence and the files kept from each of its folders."""
    top_level = metadata.packages_distributions()
    out: dict[str, dict] = {}
    for repo, n in kept.items():
        folder = repo.removeprefix("local/")
        for dist in top_level.get(folder, []):
            m = metadata.metadata(dist)
            classifiers = [c.removeprefix("License :: ") for c in (m.get_all("Classifier") or []) if c.startswith("License ::")]
            entry = out.setdefault(m["Name"], {"version": m["Version"], "license": m.get("License-Expression") or (m.get("License") or "")[:120],
                                               "classifiers": classifiers, "folders": {}})
            entry["folders"][folder] = n
    return dict(sorted(out.items()))


def main() -> None:
    out, info_path = Path(sys.argv[1]), Path(sys.argv[2])
    work, t0 = out.parent / "collect_parts", time.time()
    folders = source_folders()
    print(f"collecting {len(folders)} folders", flush=True)
    with Pool() as pool:
        pool.map(collect_folder, [(i, str(f), str(work)) for i, f in enumerate(folders)], chunksize=1)
    held_shas = set(Path(__file__).with_name("heldout_shas.txt").read_text().split())
    kept, dropped = merge(sorted(work.glob("*/shard-*.parquet")), out, held_shas)
    print(f"kept {sum(kept.values())} files; dropped {dict(dropped)}; {time.time() - t0:.0f}s", flush=True)
    info = {"python": sys.version, "files_kept": sum(kept.values()), "dropped": dict(dropped),
            "folders": dict(sorted(kept.items())), "distributions": licences(kept)}
    info_path.write_text(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
