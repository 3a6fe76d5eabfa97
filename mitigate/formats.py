"""What an input path is, from its name: a tar shard, a table (Parquet, JSONL, CSV), a
folder of image files (:mod:`mitigate.folders`), or something named for what it is not
(a compressed tar or table, an Arrow or TFRecord file, an image). No Beam here."""

from __future__ import annotations

from mitigate.folders import is_folder

TABLE_FORMATS = ("parquet", "jsonl", "csv")


def table_format(path: str, configured: str) -> str:
    if is_folder(path):  # a folder of image files and captions (mitigate/folders.py)
        return "folder"
    if configured != "auto":
        return configured
    lower = path.lower()
    for fmt, suffixes in {
        "webdataset": (".tar",),
        "parquet": (".parquet", ".pq"),
        "jsonl": (".jsonl", ".ndjson"),
        "csv": (".csv", ".tsv"),
    }.items():
        if lower.endswith(suffixes):
            return fmt
    if lower.endswith(COMPRESSED_TARS):
        raise ValueError(
            f"{path!r} is a compressed tar: shards are read by offset, so decompress it "
            "first (e.g. gunzip, unzstd) and give the .tar"
        )
    inner, dot, packing = lower.rpartition(".")
    if dot and packing in COMPRESSIONS and inner.endswith(TABLE_SUFFIXES):
        raise ValueError(
            f"{path!r} is a compressed table: decompress it first (e.g. gunzip, unzstd) "
            "and give the table"
        )
    if lower.endswith((".arrow", ".feather", ".ipc")):
        raise ValueError(
            f"{path!r} is an Arrow IPC file (Hugging Face datasets' save_to_disk writes "
            "them), not read here: write the table as Parquet (datasets: "
            "ds.to_parquet('x.parquet'))"
        )
    if lower.endswith((".tfrecord", ".tfrecords")):
        raise ValueError(
            f"{path!r} is a TFRecord file, not read here: give WebDataset tars (img2dataset: "
            "output_format webdataset) or a table of image paths"
        )
    if lower.endswith((".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")):
        raise ValueError(
            f"{path!r} is an image, not a dataset: give WebDataset tars, or a table (CSV, "
            "JSONL, Parquet) of key, image path and caption"
        )
    if lower.endswith((".zip", ".7z", ".rar")):
        raise ValueError(
            f"{path!r} is a {lower.rsplit('.', 1)[1]} archive, not a tar: shards are read "
            "by offset, so unpack it and give the folder (input.format: folder reads image "
            "files and captions), or pack the samples into tars"
        )
    if lower.endswith(".json"):
        raise ValueError(
            f"cannot tell the format of {path!r}: tables are read as JSON Lines (one object "
            "a line, .jsonl); set input.format=jsonl if it is one"
        )
    raise ValueError(f"cannot tell the format of {path!r} from its extension; set input.format")


#: File name suffixes of compressions, and of the tables one may hold.
COMPRESSIONS = frozenset({"gz", "zst", "bz2", "xz", "lz4", "zip"})
TABLE_SUFFIXES = (".parquet", ".pq", ".jsonl", ".ndjson", ".json", ".csv", ".tsv")

#: Compressed tars (WebDataset reads them in order; shards here are read by offset).
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.zst", ".tar.bz2", ".tar.xz", ".tar.lz4")
