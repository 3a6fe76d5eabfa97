"""The run report: one self-contained HTML page about a finished run.

``build_report(out_dir)`` reads a run's ``summary.json``, ``config.yaml`` and the few
manifest columns it needs, and returns one HTML page with six sections, each under a
stable id:

- ``funnel``: input -> errors -> filtered (per filter and reason) -> duplicates -> kept,
  with counts and shares exactly as in ``summary.json``, plus wall time and throughput;
- ``filters``: per filter, a score histogram (log-scale counts) with the threshold
  drawn, the number dropped, and thumbnail strips of the highest-scored kept and the
  lowest-scored dropped samples (pixel-blurred for ``sexual``-category filters unless
  ``blur_sexual=False``);
- ``dedup``: near-duplicate clusters, example pairs per Hamming distance and the
  measured pair recall, when ``summary.json`` has a ``dedup`` object ("not run" if not);
- ``rebalancing``: weight distribution, effective sample size and the probe-term bias
  table as a grouped bar chart ("not enabled" if the run did not rebalance);
- ``errors``: counts per reason, example keys with their detail text, source issues;
- ``config``: the effective config and model provenance.

Everything is inline (thumbnails as JPEG ``data:`` URIs made by
:func:`mitigate.review.thumbnail`, plots as SVG ``data:`` URIs), and a Content Security
Policy forbids the page any other source, so it opens offline and cannot leak a
request. The page's size is bounded by ``max_thumbs`` and fixed per-section limits, not
by the number of manifest rows. Nothing here imports Beam: image bytes are read through
an ``opener`` (path -> binary file), by default the local filesystem; pass
``mitigate.pipeline.fs.open_read`` for ``gs://`` and friends.

Modules: :mod:`.data` (the numbers' types, no HTML), :mod:`.stats` (the numbers over
every manifest row, gathered a batch of rows at a time: the report's memory does not
grow with the run), :mod:`.common` (shared page pieces), one
module per section (:mod:`.funnel`, :mod:`.filters`, :mod:`.dedup`, :mod:`.rebalancing`,
:mod:`.errors`, :mod:`.config`) and :mod:`.page` (the page, its atomic write, ``main``).
"""

from __future__ import annotations

from mitigate.report.common import (
    THUMB_SIZE,
)
from mitigate.report.data import (
    ERROR_EXAMPLES_PER_REASON,
    HISTOGRAM_BINS,
    ErrorExample,
    FilterData,
    FilterSpec,
    Funnel,
    FunnelStep,
    Histogram,
    cluster_size_bars,
    filter_specs,
    load_run_config,
    load_summary,
    local_open,
    manifest_columns,
    score_histogram,
)
from mitigate.report.dedup import (
    DEDUP_CLUSTERS_SHOWN,
    DEDUP_PAIRS_PER_DISTANCE,
    DEDUP_REFUSED_SHOWN,
)
from mitigate.report.page import (
    SECTION_IDS,
    build_report,
    main,
    write_report,
)
from mitigate.report.stats import (
    ManifestStats,
    error_examples,
    filter_data,
    funnel_data,
)

__all__ = [
    "DEDUP_CLUSTERS_SHOWN",
    "DEDUP_PAIRS_PER_DISTANCE",
    "DEDUP_REFUSED_SHOWN",
    "ERROR_EXAMPLES_PER_REASON",
    "HISTOGRAM_BINS",
    "SECTION_IDS",
    "THUMB_SIZE",
    "ErrorExample",
    "FilterData",
    "FilterSpec",
    "Funnel",
    "FunnelStep",
    "Histogram",
    "ManifestStats",
    "build_report",
    "cluster_size_bars",
    "error_examples",
    "filter_data",
    "filter_specs",
    "funnel_data",
    "load_run_config",
    "load_summary",
    "local_open",
    "main",
    "manifest_columns",
    "score_histogram",
    "write_report",
]
