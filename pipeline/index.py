"""The pipeline's first step: one input source (a tar shard, a table, a folder of image
files) -> chunks of light records, and the source's issues (Beam; the reading itself is
:mod:`mitigate.sources`, :mod:`mitigate.tables` and :mod:`mitigate.folders`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from mitigate import progress, stages
from mitigate.config import Config, InputConfig
from mitigate.folders import index_folder
from mitigate.formats import table_format
from mitigate.pipeline import fs
from mitigate.records import Reason, SampleRecord
from mitigate.sources import SourceIssue, SourceLimits, index_tar
from mitigate.table_rows import row_names
from mitigate.tables import iter_table

# IndexSource's tagged outputs (pipeline/build.split routes them)
CHUNKS = "chunks"
ISSUES = "issues"


class IndexSource(beam.DoFn):
    """One source file -> chunks of light records (and source-level issues)."""

    def __init__(
        self,
        input_cfg: InputConfig,
        limits: SourceLimits,
        row_names: dict[str, str] | None = None,
        fields: bool = False,
    ) -> None:
        self.input_cfg = input_cfg
        self.limits = limits
        self.row_names = row_names or {}
        self.fields = fields  # records carry their table row's other columns

    @classmethod
    def of(cls, config: Config, sources: list[str] | None = None) -> IndexSource:
        names = row_names(sources or [])
        return cls(config.input, config.source_limits(), names, config.output.table_fields)

    def process(self, element: tuple[int, str]) -> Iterator[Any]:
        ordinal, path = element
        cfg = self.input_cfg
        fmt = table_format(path, cfg.format)
        pending: list[SampleRecord] = []
        try:
            with contextlib.nullcontext(None) if fmt == "folder" else fs.open_read(path) as f:
                limits = self.limits
                if fmt == "folder":
                    items = index_folder(fs.walk(path), path, limits)
                elif fmt == "webdataset":
                    items = index_tar(f, path, limits=limits)
                else:
                    items = iter_table(
                        f,
                        path,
                        fmt,
                        key_column=cfg.key_column,
                        image_column=cfg.image_column,
                        caption_column=cfg.caption_column,
                        image_root=cfg.image_root,
                        limits=limits,
                        row_name=self.row_names.get(path),
                        fields=self.fields,
                    )
                for item in items:
                    if isinstance(item, SourceIssue):
                        yield (ISSUES, item)
                        continue
                    if cfg.key_prefix == "source":  # inputs that name their samples alike
                        item.key = f"{self.row_names[path]}/{item.key}"
                    pending.append(item)
                    if len(pending) >= stages.BALANCE_CHUNKS * cfg.chunk_size:
                        progress.emit("indexed", cfg.chunk_size)
                        yield (CHUNKS, (ordinal, pending[: cfg.chunk_size]))
                        del pending[: cfg.chunk_size]
        except OSError as exc:
            yield (ISSUES, SourceIssue(path, Reason.READ_ERROR, f"cannot open: {exc}"))
        for chunk in stages.balanced_chunks(pending, cfg.chunk_size):
            progress.emit("indexed", len(chunk))
            yield (CHUNKS, (ordinal, chunk))
        progress.emit("sources", 1)
