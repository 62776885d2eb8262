"""Results on disk as they come: per-image rows in sharded Parquet files (CSV when pyarrow is absent), maps
as float16 ``.npz`` shards, and a manifest; every shard is written whole (a temporary file renamed), so a run
killed at any moment leaves only complete shards and ``resume`` knows exactly which images are finished.

Layout of an output folder::

    manifest.json                    model, methods, metrics, options, versions, data, world size
    shards/rows-r000-000000.parquet  one row per (image, method): metric values; a failed image: one row
    shards/maps-r000-000000.npz      with an error; the maps of the same images (``--save-maps``)
    per_image.parquet                all rows merged in image order (written at the end)
    summary.json, index.html         the summary (rank 0, at the end)

Between two shards each finished batch is also kept as a small part file
(``shards/part-r000-000000-00003.npz``: the batch's rows and maps), deleted once its shard is written; a run
killed by SIGKILL between shards therefore loses at most the batch it was computing, and the next
``--resume`` turns the parts it finds into the shard they were meant for (:func:`recover_parts`). Parts are
not written when every batch fills a shard anyway (small ``shard_images``). The files are renamed into place
whole, which survives the process being killed at any moment (not a power loss: nothing is fsync'ed).
"""
from __future__ import annotations

import csv
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

BASE_COLUMNS = ("image", "path", "label", "method", "target", "pred", "pred_prob", "error")
INT_COLUMNS = ("image", "label", "target", "pred", "unit")
STR_COLUMNS = ("path", "method", "error")
_SHARD = re.compile(r"^(rows|maps)-r(\d+)-(\d+)\.(parquet|csv|npz)$")
_PART = re.compile(r"^part-r(\d+)-(\d+)-(\d+)\.npz$")


def have_pyarrow() -> bool:
    """Whether pyarrow can be imported (Parquet output); CSV is written otherwise."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], path: Path, fmt: str) -> None:
    """Write ``rows`` (dicts) with ``columns`` to ``path`` as Parquet or CSV, atomically."""
    write_columns({c: [r.get(c) for r in rows] for c in columns}, path, fmt)


def write_columns(table: Mapping[str, Sequence[Any]], path: Path, fmt: str) -> None:
    """Write a table given as {column: values} to ``path`` as Parquet or CSV (every digit kept), atomically."""
    columns = list(table)
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        arrays = {}
        for c in columns:
            vals = table[c]
            if c in INT_COLUMNS:
                arrays[c] = pa.array(vals, type=pa.int64())
            elif c in STR_COLUMNS:
                arrays[c] = pa.array(vals, type=pa.string())
            else:
                arrays[c] = pa.array([math.nan if v is None else float(v) for v in vals], type=pa.float64())
        _atomic(path, lambda tmp: pq.write_table(pa.table(arrays), tmp))
    elif fmt == "csv":
        def cell(c: str, v: Any) -> Any:
            if v is None or (isinstance(v, float) and math.isnan(v)):
                return ""
            return v if c in INT_COLUMNS or c in STR_COLUMNS else repr(float(v))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(columns)
                for vals in zip(*(table[c] for c in columns)):
                    w.writerow([cell(c, v) for c, v in zip(columns, vals)])
        _atomic(path, write)
    else:
        raise ValueError(f"unknown table format {fmt!r}; use 'parquet' or 'csv'")


def read_table(path: Path) -> dict[str, list]:
    """Read a Parquet or CSV table written by :func:`write_table` as {column: values} (None for missing)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        cols = pq.read_table(path).to_pydict()
        return {c: [None if (isinstance(v, float) and math.isnan(v)) else v for v in vals]
                for c, vals in cols.items()}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        cols: dict[str, list] = {c: [] for c in header}
        for row in reader:
            for c, v in zip(header, row):
                if v == "":
                    cols[c].append(None)
                elif c in INT_COLUMNS:
                    cols[c].append(int(v))
                elif c in STR_COLUMNS:
                    cols[c].append(v)
                else:
                    cols[c].append(float(v))
    return cols


def concat(tables: Iterable[dict[str, list]]) -> dict[str, list]:
    """Concatenate tables with the same columns."""
    out: dict[str, list] = {}
    for t in tables:
        for c, vals in t.items():
            out.setdefault(c, []).extend(vals)
    return out


def shard_files(out: Path, kind: str = "rows") -> list[tuple[int, int, Path]]:
    """(rank, sequence number, path) of the complete shards of ``kind`` ('rows' or 'maps'), sorted."""
    folder = Path(out) / "shards"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _SHARD.match(p.name)
        if m and m.group(1) == kind:
            found.append((int(m.group(2)), int(m.group(3)), p))
    return sorted(found)


def read_rows(out: Path) -> dict[str, list]:
    """All per-image rows of every shard in ``out``, in image order (then method order as written)."""
    table = concat(read_table(p) for _, _, p in shard_files(out))
    if not table:
        return {}
    order = sorted(range(len(table["image"])), key=lambda i: table["image"][i])  # stable: method order kept
    return {c: [vals[i] for i in order] for c, vals in table.items()}


def finished_images(out: Path) -> set[int]:
    """The dataset positions of the images whose rows are on disk (done or failed)."""
    done: set[int] = set()
    for _, _, p in shard_files(out):
        done.update(read_table(p)["image"])
    return done


def part_files(out: Path) -> list[tuple[int, int, int, Path]]:
    """(rank, shard sequence number, batch number, path) of the per-batch part files in ``out``, sorted."""
    folder = Path(out) / "shards"
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _PART.match(p.name)
        if m:
            found.append((int(m.group(1)), int(m.group(2)), int(m.group(3)), p))
    return sorted(found)


def _plain(v: Any) -> Any:
    """A numpy / torch scalar as a Python number (for the parts' JSON)."""
    if hasattr(v, "item"):
        return v.item()
    raise TypeError(f"cannot store {type(v).__name__} in a results row")


def _write_part(path: Path, columns: Sequence[str], rows: Sequence[dict[str, Any]], images: Sequence[int],
                maps: Mapping[str, np.ndarray], scales: Mapping[str, Sequence[float]],
                map_index: Sequence[int]) -> None:
    """Write one batch's rows and (scaled float16) maps as a part file, atomically."""
    text = json.dumps({"columns": list(columns), "rows": list(rows), "images": [int(i) for i in images]},
                      default=_plain)
    arrays: dict[str, np.ndarray] = {"meta": np.frombuffer(text.encode(), dtype=np.uint8),
                                     "map_index": np.asarray(map_index, dtype=np.int64)}
    for m, a in maps.items():
        arrays[f"map/{m}"] = a
        arrays[f"scale/{m}"] = np.asarray(scales[m], dtype=np.float32)

    def save(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    _atomic(path, save)


def recover_parts(out: Path, fmt: str) -> int:
    """Turn the part files a killed run left into the shards they belong to (parts whose shard was already
    written are just deleted); returns the number of images recovered."""
    groups: dict[tuple[int, int], list[Path]] = {}
    for rank, seq, _, p in part_files(out):
        groups.setdefault((rank, seq), []).append(p)
    rows_done = {(r, s) for r, s, _ in shard_files(out)}
    recovered = 0
    for (rank, seq), paths in groups.items():
        if (rank, seq) not in rows_done:
            columns: list[str] = []
            rows: list[dict[str, Any]] = []
            images: set[int] = set()
            maps: dict[str, list[np.ndarray]] = {}
            scales: dict[str, list[np.ndarray]] = {}
            index: list[np.ndarray] = []
            for p in paths:
                with np.load(p) as z:
                    meta = json.loads(z["meta"].tobytes().decode())
                    columns = columns or meta["columns"]
                    rows.extend(meta["rows"])
                    images.update(meta["images"])
                    index.append(z["map_index"])
                    for key in z.files:
                        if key.startswith("map/"):
                            maps.setdefault(key[4:], []).append(z[key])
                        elif key.startswith("scale/"):
                            scales.setdefault(key[6:], []).append(z[key])
            name = f"r{rank:03d}-{seq:06d}"
            if maps:
                arrays = {"index": np.concatenate(index)}
                for m, parts in maps.items():
                    arrays[m] = np.concatenate(parts)
                    arrays[f"{m}.scale"] = np.concatenate(scales[m])

                def save(tmp: Path, arrays: dict = arrays) -> None:
                    with open(tmp, "wb") as f:
                        np.savez(f, **arrays)
                _atomic(Path(out) / "shards" / f"maps-{name}.npz", save)
            write_table(rows, columns, Path(out) / "shards" / f"rows-{name}.{'parquet' if fmt == 'parquet' else 'csv'}",
                        fmt)
            recovered += len(images)
        for p in paths:
            p.unlink(missing_ok=True)
    return recovered


def remove_partial(out: Path) -> None:
    """Delete temporary files a killed run left behind (never complete shards)."""
    folder = Path(out) / "shards"
    if folder.is_dir():
        for p in folder.glob("*.tmp"):
            p.unlink(missing_ok=True)


class ShardWriter:
    """Collects one process's rows (and maps) and writes them as numbered shards of ``shard_images`` images.

    A shard is written when it holds ``shard_images`` images or ``max_seconds`` have passed since the last
    one, and at :meth:`close`; maps are kept as float16, scaled to [-1, 1] per map with the scale stored.
    Every :meth:`add` that does not write a shard writes the added batch as a part file (see the module doc).
    """

    def __init__(self, out: str | Path, rank: int, metrics: Sequence[str], *, fmt: str = "parquet",
                 shard_images: int = 256, max_seconds: float = 120.0, save_maps: bool = False) -> None:
        self.folder = Path(out) / "shards"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rank = rank
        self.columns = list(BASE_COLUMNS) + list(metrics)
        self.fmt = fmt
        self.suffix = "parquet" if fmt == "parquet" else "csv"
        self.shard_images = shard_images
        self.max_seconds = max_seconds
        self.save_maps = save_maps
        mine = [s for r, s, _ in shard_files(out, "rows") + shard_files(out, "maps") if r == rank]
        self.seq = max(mine) + 1 if mine else 0
        self.rows: list[dict[str, Any]] = []
        self.images: list[int] = []
        self.maps: dict[str, list[np.ndarray]] = {}
        self.scales: dict[str, list[float]] = {}
        self.map_index: list[int] = []
        self.last = time.monotonic()
        self.written = 0
        self.batch = 0  # part files of the current shard

    def add(self, rows: Sequence[dict[str, Any]], images: Sequence[int],
            maps: dict[str, np.ndarray] | None = None, map_images: Sequence[int] = ()) -> None:
        """Add the rows of some images (and, with ``save_maps``, their (n, H, W) maps per method); writes a
        shard when one is full."""
        self.rows.extend(rows)
        self.images.extend(images)
        new_maps: dict[str, np.ndarray] = {}
        new_scales: dict[str, list[float]] = {}
        if self.save_maps and maps:
            self.map_index.extend(map_images)
            for m, arr in maps.items():
                a = np.asarray(arr, dtype=np.float32)
                scale = np.abs(a).reshape(a.shape[0], -1).max(axis=1) if a.size else np.zeros(0, np.float32)
                safe = np.where(scale > 0, scale, 1.0)
                new_maps[m] = (a / safe[:, None, None]).astype(np.float16)
                new_scales[m] = scale.tolist()
                self.maps.setdefault(m, []).append(new_maps[m])
                self.scales.setdefault(m, []).extend(new_scales[m])
        if len(self.images) >= self.shard_images or time.monotonic() - self.last >= self.max_seconds:
            self.flush()
        elif images:  # kept on disk until its shard is written: a kill loses at most the batch being computed
            _write_part(self.folder / f"part-r{self.rank:03d}-{self.seq:06d}-{self.batch:05d}.npz", self.columns,
                        rows, images, new_maps, new_scales, list(map_images) if new_maps else [])
            self.batch += 1

    def flush(self) -> None:
        """Write what is collected as the next shard (maps first: a rows shard marks its images finished)."""
        if not self.images:
            return
        name = f"r{self.rank:03d}-{self.seq:06d}"
        if self.save_maps and self.map_index:
            arrays: dict[str, np.ndarray] = {"index": np.asarray(self.map_index, dtype=np.int64)}
            for m, parts in self.maps.items():
                arrays[m] = np.concatenate(parts)
                arrays[f"{m}.scale"] = np.asarray(self.scales[m], dtype=np.float32)
            def save(tmp: Path) -> None:
                with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
                    np.savez(f, **arrays)

            _atomic(self.folder / f"maps-{name}.npz", save)
        write_table(self.rows, self.columns, self.folder / f"rows-{name}.{self.suffix}", self.fmt)
        for rank, seq, _, p in part_files(self.folder.parent):  # the shard now holds them
            if rank == self.rank and seq == self.seq:
                p.unlink(missing_ok=True)
        self.batch = 0
        self.written += len(set(self.images))
        self.seq += 1
        self.rows, self.images, self.map_index = [], [], []
        self.maps, self.scales = {}, {}
        self.last = time.monotonic()

    def close(self) -> None:
        """Write the last, partly filled shard."""
        self.flush()


def load_maps(out: str | Path, method: str, images: Sequence[int] | None = None) -> dict[int, np.ndarray]:
    """The saved maps of ``method`` ({image position: (H, W) float32}), only ``images`` when given."""
    want = None if images is None else set(int(i) for i in images)
    found: dict[int, np.ndarray] = {}
    for _, _, p in shard_files(Path(out), "maps"):
        with np.load(p) as z:
            if method not in z.files:
                continue
            idx = z["index"]
            sel = [k for k, i in enumerate(idx) if want is None or int(i) in want]
            if not sel:
                continue
            maps, scale = z[method], z[f"{method}.scale"]
            for k in sel:
                found[int(idx[k])] = maps[k].astype(np.float32) * float(scale[k])
    return found


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON (NaN-free) atomically; returns the path."""
    p = Path(path)
    _atomic(p, lambda tmp: tmp.write_text(json.dumps(data, indent=2, allow_nan=False)))
    return p
