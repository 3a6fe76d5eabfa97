"""A finished run's manifest and embeddings, read for a tool that looks at every row
(``mitigate select``, ``mitigate train``) in memory without a Python object a row.

``mitigate select`` read the whole manifest (every column, the 2,315-byte signatures
included) and turned every row into a dict, and the neighbours strategy copied every
embedding into one float32 matrix: 9.9 KB a row for ``uncertain`` and 12 KB for
``neighbours`` (peak RSS 1.7 / 2.4 GB at 160,000 rows: BENCHMARKS.md, "select over a
large run"), so a run of 10**7 samples could not be reviewed on one machine. Here:

* :class:`RunTable` reads only the columns asked for, as Arrow arrays (a key costs its
  UTF-8 bytes and an offset, a score 8 bytes), and gives the keys as a sequence that
  makes a Python string only when one is read (:class:`ArrowKeys`);
* :meth:`RunTable.rows` reads the few rows a tool shows, a part at a time;
* :class:`PartedEmbeddings` is the run's embeddings as one ``(N, D)`` array over the
  parts' memory-mapped ``.npy`` files: a slice or a list of rows reads those rows only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mitigate.layout import Layout
from mitigate.review import manifest_parts

#: Columns never read for a row a tool shows (the verification signature: 2,315 bytes).
_NOT_SHOWN = frozenset({"signature"})


class ArrowKeys(Sequence[str]):
    """The run's keys, one Arrow string array; an item is made a ``str`` when read."""

    def __init__(self, column: pa.ChunkedArray | pa.Array) -> None:
        if pa.types.is_string(column.type):  # 64-bit offsets: past 2 GB of keys in all
            column = column.cast(pa.large_string())
        self._array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def __len__(self) -> int:
        return len(self._array)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return self._array[index].to_pylist()
        return self._array[int(index)].as_py()

    def __iter__(self) -> Iterator[str]:
        for start in range(0, len(self._array), 65536):  # a batch of strings at a time
            yield from self._array[start : start + 65536].to_pylist()

    def rows_of(self, wanted: Iterable[str]) -> np.ndarray:
        """Row indices whose key is one of ``wanted``, ascending (no Python loop over rows)."""
        values = pa.array(sorted(set(wanted)), type=self._array.type)
        hits = pc.is_in(self._array, value_set=values)
        return np.flatnonzero(hits.to_numpy(zero_copy_only=False))


class RunTable:
    """Some columns of every manifest part of a run, in part order (input order)."""

    def __init__(
        self, out_dir: str | Path, columns: Sequence[str] | None, encoded: Sequence[str] = ()
    ) -> None:
        """``columns``: those read for every row (None: all of them); ``encoded``: those
        of them read dictionary-encoded (a few distinct strings, as ``state``: 4 bytes
        a row, not the string's), one dictionary for the whole table."""
        self.out_dir = Path(out_dir)
        self.parts = manifest_parts(out_dir)
        names = list(columns) if columns else None
        encode = [c for c in encoded if names is None or c in names] or None
        for part in self.parts if names else ():
            require_columns(part, names)
        tables = [pq.read_table(p, columns=names, read_dictionary=encode) for p in self.parts]
        self.counts = np.asarray([t.num_rows for t in tables], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        self.table = pa.concat_tables(tables).unify_dictionaries() if tables else None

    @classmethod
    def index(cls, out_dir: str | Path) -> RunTable:
        """The run's parts and their row counts (from the Parquet footers) with no
        column read: for :meth:`rows` and :meth:`key_rows` alone (``table`` is None)."""
        run = cls.__new__(cls)
        run.out_dir = Path(out_dir)
        run.parts = manifest_parts(out_dir)
        counts = []
        for part in run.parts:
            with pq.ParquetFile(part) as file:
                counts.append(file.metadata.num_rows)
        run.counts = np.asarray(counts, dtype=np.int64)
        run.starts = np.concatenate([[0], np.cumsum(run.counts)])
        run.table = None
        return run

    def __len__(self) -> int:
        return int(self.starts[-1])

    def keys(self) -> ArrowKeys:
        assert self.table is not None
        return ArrowKeys(self.table.column("key"))

    def is_state(self, state: str) -> np.ndarray:
        """Whether each row's ``state`` is ``state`` (the table holds the column)."""
        assert self.table is not None
        values = self.table.column("state").combine_chunks()
        return pc.fill_null(pc.equal(values, state), False).to_numpy(zero_copy_only=False)

    def numbers(self, column: str) -> np.ndarray:
        """``column`` as float64, NaN where a cell is null."""
        assert self.table is not None
        values = self.table.column(column).combine_chunks()
        return pc.fill_null(values.cast(pa.float64()), float("nan")).to_numpy(zero_copy_only=False)

    def byte_copies(self, candidates: np.ndarray, labelled: np.ndarray) -> np.ndarray:
        """Rows among ``candidates`` (a bool mask) whose image bytes (``sha256``, which
        the table holds) are those of an earlier candidate or of a ``labelled`` row
        (indices): one label answers for every copy. Rows without a sha256 are never
        copies."""
        assert self.table is not None
        sha = self.table.column("sha256").combine_chunks()
        rows = np.flatnonzero(candidates)
        picked = sha.take(pa.array(rows, type=pa.int64()))
        valid = pc.is_valid(picked).to_numpy(zero_copy_only=False)
        firsts = (
            pa.table({"sha": picked.filter(pa.array(valid)), "row": rows[valid]})
            .group_by("sha")
            .aggregate([("row", "min")])
            .column("row_min")
            .to_numpy()
        )
        copies = np.array(candidates, dtype=bool, copy=True)
        copies[firsts] = False
        copies[rows[~valid]] = False
        labelled = np.asarray(labelled, dtype=np.int64)
        if labelled.size:
            known = pc.drop_null(pc.unique(sha.take(pa.array(labelled))))
            same = pc.fill_null(pc.is_in(sha, value_set=known), False)
            copies |= candidates & same.to_numpy(zero_copy_only=False)
            copies[labelled] = False  # a labelled row is itself, not a copy
        return copies

    def key_rows(self, keys: Iterable[str]) -> list[tuple[int, str, str]]:
        """(row index, key, state) of every row whose key is one of ``keys``, ascending;
        the key and state columns are read a part at a time, not kept."""
        values = pa.array(sorted(set(keys)), type=pa.string())
        out: list[tuple[int, str, str]] = []
        if len(values) == 0:
            return out
        for part, start in zip(self.parts, self.starts.tolist(), strict=False):
            table = pq.read_table(part, columns=["key", "state"])
            hits = pc.is_in(table.column("key"), value_set=values)
            at = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
            if at.size:
                found = table.take(pa.array(at))
                out += zip(
                    (at + start).tolist(),
                    found.column("key").to_pylist(),
                    found.column("state").to_pylist(),
                    strict=True,
                )
        return out

    def rows(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Manifest rows ``indices`` (every column but the signature) as dicts, in the
        order given; only the parts holding them are read, one at a time."""
        where = np.asarray(indices, dtype=np.int64)
        out: list[dict[str, Any] | None] = [None] * len(where)
        part_of = np.searchsorted(self.starts, where, side="right") - 1
        for part in np.unique(part_of).tolist():
            at = np.flatnonzero(part_of == part)
            file = pq.ParquetFile(self.parts[part])
            columns = [c for c in file.schema_arrow.names if c not in _NOT_SHOWN]
            local = where[at] - self.starts[part]
            for slot, row in zip(
                at.tolist(), file.read(columns=columns).take(local).to_pylist(), strict=True
            ):
                out[slot] = row
        assert all(r is not None for r in out)  # every index lies in a part
        return out  # type: ignore[return-value]


def require_columns(part: Path, columns: Sequence[str]) -> None:
    """ValueError naming a manifest part without one of ``columns`` (Arrow's own error
    printed the part's whole schema)."""
    missing = [c for c in columns if c not in pq.read_schema(part).names]
    if missing:
        raise ValueError(
            f"{part}: no column {', '.join(map(repr, missing))}: not a manifest of a run that "
            "stored it (a filter's scores are score_<id>)"
        )


class _NpyRows:
    """Rows of one 2-D C-order ``.npy`` file, read on demand (no memory map: the pages a
    map touches count in the process's resident set, ~2 KB a row here)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with open(path, "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
            except ValueError as exc:
                raise ValueError(f"{path}: not a .npy file ({exc})") from None
            header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if header is None:
                raise ValueError(f"{path}: .npy format version {version} is not read here")
            shape, fortran, dtype = header(f)
            self.offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        if len(shape) != 2 or fortran:
            raise ValueError(f"{path}: not a 2-D C-order matrix (shape {shape})")
        self.rows, self.width = shape
        self.dtype = np.dtype(dtype)
        need = self.offset + self.rows * self.width * self.dtype.itemsize
        if size < need:  # cut: its rows' reads came back short ("cannot reshape")
            raise ValueError(
                f"{path}: cut short ({size:,} bytes where its {self.rows} x {self.width} "
                f"rows need {need:,})"
            )

    def read(self, first: int, stop: int) -> np.ndarray:
        """Rows ``first`` to ``stop - 1``."""
        row_bytes = self.width * self.dtype.itemsize
        with open(self.path, "rb") as f:
            f.seek(self.offset + first * row_bytes)
            data = f.read((stop - first) * row_bytes)
        return np.frombuffer(data, dtype=self.dtype).reshape(stop - first, self.width)


class PartedEmbeddings:
    """One filter's stored embeddings of a run as an ``(N, D)`` array over the parts'
    ``.npy`` files: reading a slice or a list of rows reads those rows from the files (as
    float32). Rows align with :class:`RunTable` (each part's file must have as many rows
    as its manifest part)."""

    def __init__(self, table: RunTable, filter_id: str) -> None:
        layout = Layout(str(table.out_dir))
        self._parts: list[_NpyRows] = []
        for part, rows in zip(table.parts, table.counts.tolist(), strict=True):
            path = Path(layout.embeddings_beside(filter_id, part.name))
            if not path.is_file() and not path.parent.is_dir():
                raise FileNotFoundError(
                    f"no embeddings for {filter_id!r} in {table.out_dir} "
                    "(set store_embeddings: true)"
                )
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing (one a manifest part was written)")
            matrix = _NpyRows(path)
            if matrix.rows != rows:
                raise ValueError(f"{path}: {matrix.rows} rows for {rows} manifest rows")
            self._parts.append(matrix)
        self._starts = table.starts
        # a part whose samples all failed may hold 0-wide rows: NaN rows of the others' width
        widths = {m.width for m in self._parts if m.rows and m.width}
        if len(widths) > 1:
            raise ValueError(f"embeddings of {filter_id!r} differ in width across parts: {widths}")
        self.shape = (int(table.starts[-1]), widths.pop() if widths else 0)

    def __getitem__(self, item: int | slice | Sequence[int] | np.ndarray) -> np.ndarray:
        if isinstance(item, int | np.integer):
            return self[[int(item)]][0]
        if isinstance(item, slice):
            start, stop, step = item.indices(self.shape[0])
            rows = np.arange(start, stop, step)
        else:
            rows = np.asarray(item, dtype=np.int64)
        out = np.empty((rows.shape[0], self.shape[1]), dtype=np.float32)
        part_of = np.searchsorted(self._starts, rows, side="right") - 1
        for part in np.unique(part_of).tolist():
            at = np.flatnonzero(part_of == part)
            local = rows[at] - self._starts[part]
            if not self._parts[part].width:
                out[at] = np.nan
                continue
            first = int(local.min())
            # one read from the first to the last row asked for in this part
            out[at] = self._parts[part].read(first, int(local.max()) + 1)[local - first]
        return out


class RowSubset:
    """Rows ``rows`` of a :class:`PartedEmbeddings` as an ``(len(rows), D)`` array for
    code that reads it a slice at a time (e.g. :func:`mitigate.train.standardiser`)."""

    def __init__(self, parent: PartedEmbeddings, rows: np.ndarray) -> None:
        self.parent, self.rows = parent, rows
        self.shape = (int(rows.shape[0]), parent.shape[1])

    def __getitem__(self, item: slice) -> np.ndarray:
        return self.parent[self.rows[item]]
