"""Checks of a config against the filesystem, done before any work.

Its own module, free of Beam, so that ``mitigate validate`` starts in well under a
second (:mod:`mitigate.pipeline.fs` serves local paths without Beam).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from mitigate.config import Config, ConfigError
from mitigate.folders import folder_source
from mitigate.formats import COMPRESSED_TARS, TABLE_SUFFIXES, table_format
from mitigate.pipeline import fs, outdir
from mitigate.sources import not_text
from mitigate.tables import COLUMN_ALIASES, ROW_KEY, table_problems
from mitigate.text import LONE_SURROGATE, escape_surrogates

log = logging.getLogger(__name__)


def preflight(config: Config, protected: Sequence[str] = (), strict: bool = False) -> list[str]:
    """Checks that need the filesystem, done before any work. Returns the sorted input
    files; raises :class:`ConfigError` naming the field at fault.

    A Dataflow dry run works offline: remote inputs are taken as given (not listed) and
    the output folder is not inspected. ``protected`` are files the run reads (its
    config file), which the output must not replace; nor may it replace an input.

    ``strict`` (``mitigate validate``): a tar whose first samples carry no caption is an
    error too; a run only warns (its samples are listed, each ``missing_caption``: a
    dataset's first tar may hold the images that have none).
    """
    from mitigate.runners.extras import missing_extra

    missing = missing_extra(config.runner.name)
    errors = [missing] if missing else []
    dry = config.runner.dry_run
    errors += _endpoint_errors(config)
    if not config.filters:  # a config whose filters were all commented out (helper-36)
        log.warning(
            "filters: none: nothing is filtered, every sample that decodes is kept "
            "(`mitigate init` writes a config with the default filters)"
        )
    folders = _folder_inputs(config, errors)
    errors += _nested_folders(config, folders)
    local = [p for p in config.input.paths if not (dry and "://" in p) and p not in folders]
    if config.input.format == "folder":  # every input is a folder: a file is refused above
        local = []
    matched = fs.match(local) if local else {}
    sources = [folder_source(p) for p in folders]
    sources += [p for p in config.input.paths if p not in matched and p not in folders]
    for i, pattern in enumerate(config.input.paths):
        if pattern in folders and not (dry and "://" in pattern):
            errors.extend(_output_inside(config, i, pattern))
            for problem in _folder_problems(config, pattern):
                if strict:
                    errors.append(f"input.paths[{i}]: {pattern}: {problem}")
                else:
                    log.warning("input.paths[%d]: %s: %s", i, pattern, problem)
        if pattern not in matched:
            continue
        files = matched[pattern]
        # {0..3} is 0, 1, 2, 3: shards named 00000 need {00000..00003}
        padding = (
            "; a range's numbers are as written: {0..3} is 0, 1, 2, 3 (zero-padded names "
            "need {00000..00003})"
            if re.search(r"\{[1-9]?\d*\.\.\d+\}", pattern) and not re.search(r"\{0\d", pattern)
            else ""
        )
        if not files:
            errors.append(f"input.paths[{i}]: no file matches {pattern!r}{padding}")
        elif len(alts := fs.braces(pattern)) > 1:  # shard-{000..099}.tar: each one there?
            gone = [a for a, found in fs.match(alts).items() if not found]
            if gone:
                shown = ", ".join(gone[:3]) + (", ..." if len(gone) > 3 else "")
                errors.append(
                    f"input.paths[{i}]: {len(gone)} of the {len(alts)} names in {pattern!r} "
                    f"match no file ({shown}): a shard missing, or the range wrong?{padding}"
                )
        first_tar = True
        tars = {p[: -len(".tar")] for p in files if p.endswith(".tar")}
        downloads = 0  # img2dataset's files: the first named, then how many more
        images = 0  # image files matched: the first three named, then how many
        for path in files:
            if (beside := _img2dataset_file(path, tars)) is not None:
                downloads += 1
                if downloads <= 2:
                    errors.append(
                        f"input.paths[{i}]: {path}: img2dataset's {beside}, not samples: "
                        f"give the tars alone ({pattern!r} matches them too; e.g. "
                        f"{os.path.join(os.path.dirname(path), '*.tar')!r})"
                    )
                continue
            if (bad := LONE_SURROGATE.search(path)) is not None:  # Beam's coder fails on it
                errors.append(
                    f"input.paths[{i}]: {escape_surrogates(path)}: the file's name is not "
                    f"UTF-8 ({not_text(bad.group())}): rename it (e.g. convmv -f cp1252 "
                    "-t utf-8 --notest)"
                )
                continue
            if "://" not in path and os.path.isdir(path):
                errors.append(f"input.paths[{i}]: {path} is a folder: {_folder_hint(path)}")
                continue
            try:
                fmt = table_format(path, config.input.format)
            except ValueError as exc:
                image = "is an image, not a dataset" in str(exc)
                images += image
                if not image or images <= 3:  # a glob of 2,000 photos said so 2,000 times
                    errors.append(f"input.paths[{i}]: {exc}")
                continue
            errors.extend(f"input.paths[{i}]: {path}: {p}" for p in _table_problems(config, path))
            for problem in _csv_encoding_problems(config, path, fmt):
                if strict:
                    errors.append(f"input.paths[{i}]: {path}: {problem}")
                else:
                    log.warning("input.paths[%d]: %s: %s", i, path, problem)
            if fmt == "webdataset" and first_tar:  # one tar a pattern: they share a writer
                first_tar = False
                for problem in _tar_problems(config, path):
                    if strict:
                        errors.append(f"input.paths[{i}]: {path}: {problem}")
                    else:
                        log.warning("input.paths[%d]: %s: %s", i, path, problem)
        if downloads > 2:
            errors.append(f"input.paths[{i}]: and {downloads - 2} more of img2dataset's files")
        if images:
            folders_of = sorted({os.path.dirname(f) for f in files})
            errors.append(
                f"input.paths[{i}]: {pattern!r} matches {images} image(s); to read a folder "
                f"of image files and captions, give the folder (--input {folders_of[0]!r})"
            )
        sources.extend(files)
    if not errors and config.input.key_prefix == "none":
        found = sorted({f for files in matched.values() for f in files})  # not a dry run's
        found += [folder_source(p) for p in folders if "://" not in p]
        for problem in _shared_first_keys(found, config.input.format):
            if strict:
                errors.append(f"input.paths: {problem}")
            else:
                log.warning("input.paths: %s", problem)
    if errors:
        raise ConfigError(errors)
    if dry:
        return sorted(set(sources))
    outdir.check_output(config.output.path, config.output.overwrite, [*protected, *sources])
    return sorted(set(sources))


#: Seconds to wait for a job service to answer a connection before the run starts.
ENDPOINT_TIMEOUT = 10.0


def _endpoint_errors(config: Config) -> list[str]:
    """An error where nothing answers at the portable runner's ``job_endpoint``: Beam
    waited 5 minutes in silence, then failed with an empty ``FutureTimeoutError``
    (helper-36). ``embed`` (Beam's in-process job service) needs no answer."""
    import socket

    endpoint = config.runner.job_endpoint
    if config.runner.name not in ("portable", "flink", "spark") or not endpoint:
        return []
    if config.runner.dry_run or endpoint == "embed":
        return []
    address = endpoint.rstrip("/")
    host, _, port = address.rpartition(":")
    if ":/" in endpoint or not port.isdigit() or not host or (":" in host and host[0] != "["):
        # a gRPC target of another form (dns:///h:p, ipv6:[::1]:p, unix:...): gRPC reads
        # it, and Beam passes it on as given (helper-39); only host:port is tried here
        return []
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=ENDPOINT_TIMEOUT).close()
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return [
            f"runner.job_endpoint: nothing answers at {endpoint} ({why}); start the job "
            "service there first (README, 'Runners')"
        ]
    return []


def _folder_inputs(config: Config, errors: list[str]) -> list[str]:
    """The input paths that are folders of image files and captions
    (:mod:`mitigate.folders`): with ``input.format: folder`` all of them (a local one
    that is no folder is an error, appended to ``errors``); with ``auto``, a local
    folder named without a glob that holds no tar nor table at its top level (one that
    does, named ``data/``, is its files, as before; named ``data``, an error)."""
    out = []
    for i, path in enumerate(config.input.paths):
        local = "://" not in path
        if config.input.format == "folder":
            if local and not os.path.isdir(path):
                what = (
                    "no such folder"
                    if not os.path.exists(path)
                    else "not a folder (input.format: auto reads a file by its name)"
                )
                errors.append(f"input.paths[{i}]: {path}: {what} (input.format is folder)")
            else:
                out.append(path)
        elif config.input.format == "auto" and local and os.path.isdir(path):
            if not _datasets_in(path):  # a folder that exists: its name is no glob
                out.append(path)
    return out


def _nested_folders(config: Config, folders: list[str]) -> list[str]:
    """An error for a folder input inside another (``photos`` and ``photos/sub``): its
    samples would be read twice, the second copies exact duplicates (helper-35)."""
    local = {p: os.path.realpath(p) for p in folders if "://" not in p}
    out = []
    for inner, real in local.items():
        outer = next(
            (o for o, r in local.items() if o != inner and real.startswith(r + os.sep)), None
        )
        if outer is not None:
            i, j = config.input.paths.index(inner), config.input.paths.index(outer)
            out.append(
                f"input.paths[{i}]: {inner} lies in the input folder {outer} (input.paths[{j}]), "
                "which reads it already: give one of them"
            )
    return out


def _output_inside(config: Config, i: int, folder: str) -> list[str]:
    """An error where the output folder lies in input folder ``folder`` (or is it): the
    next run would read the shards, manifest and report as samples."""
    from mitigate.review import inside_input_folder  # the tools' test of a run's folders

    if inside_input_folder(config.output.path, [folder_source(folder)]) is None:
        return []
    return [
        f"output.path: {config.output.path} lies in the input folder {config.input.paths[i]} "
        f"(input.paths[{i}]), whose every file is read as a sample's: choose an output "
        "outside it"
    ]


def _datasets_in(folder: str) -> list[str]:
    """The tars and tables at the top level of ``folder`` (what names it as their
    folder rather than a folder of samples)."""
    try:
        names = sorted(e.name for e in os.scandir(folder) if not e.name.startswith("."))
    except OSError:
        return []
    suffixes = (".tar", *COMPRESSED_TARS, *(s for s in TABLE_SUFFIXES if s != ".json"))
    # img2dataset's output_format=files writes NNNNN.parquet (urls, statuses) beside NNNNN/
    downloads = {f"{n}.parquet" for n in names if n.isdigit() and os.path.isdir(f"{folder}/{n}")}
    return [n for n in names if n.lower().endswith(suffixes) and n not in downloads]


def _folder_hint(path: str) -> str:
    """What to give instead of a folder that holds tars or tables."""
    found = _datasets_in(path) or ["no tar nor table"]  # a glob's folder, say
    meta = [n for n in found if n.rsplit(".", 1)[0] == "metadata"]
    if meta:  # a Hugging Face imagefolder: its metadata table names the images
        return (
            f"a Hugging Face imagefolder? give its table ({os.path.join(path, meta[0])!r}: "
            "its file_name column names the images)"
        )
    return (
        f"it holds {found[0]!r}{' and more' if len(found) > 1 else ''}: give its files "
        f"({os.path.join(path, '*.tar')!r}, or *.parquet, ...), or set input.format: folder "
        "to read it as a folder of image files and captions"
    )


def _folder_problems(config: Config, path: str) -> list[str]:
    """A folder source's problems found before any work: it cannot be listed, or none
    of its first :data:`CAPTION_SAMPLES` samples has a caption."""
    import itertools

    from mitigate.folders import index_folder
    from mitigate.records import SampleRecord
    from mitigate.samples import SampleReader

    source = folder_source(path)
    try:
        indexed = index_folder(fs.walk(source), source, config.source_limits())
        records = [
            r for r in itertools.islice(indexed, CAPTION_SAMPLES) if isinstance(r, SampleRecord)
        ]
        if not records:
            return ["no sample in it (no file, or only hidden ones)"]
        exts = {m.ext for r in records for m in r.members}
        tables = sorted(r.key for r in records if r.key.rpartition("/")[2] == "metadata")
        if tables:  # a Hugging Face imagefolder with splits: data/train/metadata.jsonl
            return [
                f"its {tables[0]}.* looks like a Hugging Face imagefolder's table: give the "
                f"tables ({os.path.join(path, '**', 'metadata.jsonl')!r}), whose file_name "
                "column names the images"
            ]
        if exts and exts <= {"tar", *(x.lstrip(".") for x in TABLE_SUFFIXES)}:
            return [  # tars in sub-folders (shards/train/*.tar): samples of no image
                f"its first files are {', '.join(sorted(exts))} files in sub-folders, not "
                f"images: give them ({os.path.join(path, '**', '*.tar')!r})"
            ]
        with SampleReader(fs.open_read) as reader:
            return _caption_problems(config, records, reader.members)
    except OSError as exc:
        return [f"cannot read: {exc}"]


#: Most tars whose first key is compared (:func:`_shared_first_keys`).
FIRST_KEY_TARS = 256


def _shared_first_keys(paths: list[str], fmt: str) -> list[str]:
    """A problem where two tars (or folders) start with the same key: inputs that name their samples
    alike (two img2dataset downloads, each in its folder, both from 000000000: which of a
    shard's first samples failed to download differs), whose samples after the first
    input's would all be ``duplicate_key``. The first header of the first tars of each
    folder is read (up to 8 a folder, :data:`FIRST_KEY_TARS` in all: a run on remote
    storage opens few files for it)."""
    from mitigate.records import SampleRecord
    from mitigate.tarscan import TarMember, decode_name, is_os_metadata, scan_tar, split_name

    def first_name(items: Iterator[Any]) -> str | None:
        """The name of the first file that may be a sample's (no folder, no ._ file)."""
        for item in items:
            if isinstance(item, TarMember) and item.is_file:
                name = decode_name(item.raw_name, None)[0]
                if not is_os_metadata(name):
                    return name
        return None

    def first_key(path: str) -> str | None:
        try:
            if table_format(path, fmt) == "folder":  # its first sample's, as it is read
                from mitigate.folders import index_folder

                items = index_folder(fs.walk(path), path)
                return next((r.key for r in items if isinstance(r, SampleRecord)), None)
            with fs.open_read(path) as f:
                name = first_name(scan_tar(f))
        except OSError:
            return None  # the run says so, as a source issue
        return None if name is None else split_name(name)[0]

    folders: dict[str, list[str]] = {}  # a folder's tars, in order (paths come sorted)
    for path in paths:
        if table_format(path, fmt) in ("webdataset", "folder"):
            folders.setdefault(path.rsplit("/", 1)[0] if "/" in path else "", []).append(path)
    first: dict[str, str] = {}  # key -> the tar it starts
    each = max(1, min(8, FIRST_KEY_TARS // max(len(folders), 1)))  # tars read a folder
    for tars in list(folders.values())[:FIRST_KEY_TARS]:
        for path in tars[:each]:
            key = first_key(path)
            if key is None:
                continue
            if key in first:
                return [
                    f"{path} starts with the key {key!r}, as {first[key]} does: inputs "
                    "that name their samples alike (two img2dataset downloads, both from "
                    "000000000?) make the later one's samples duplicate_key; set "
                    "input.key_prefix: source to keep both"
                ]
            first[key] = path
    return []


def _img2dataset_file(path: str, tars: set[str]) -> str | None:
    """What img2dataset writes beside each shard ``N.tar`` (``N.parquet``: its rows'
    urls and statuses, no images; ``N_stats.json``, whatever its output format), named
    for a message; None for any other file."""
    if path.endswith(".parquet") and path[: -len(".parquet")] in tars:
        return f"table of the download's urls and statuses beside {path[: -len('.parquet')]}.tar"
    if re.fullmatch(r"\d+_stats\.json", os.path.basename(path)):
        return "download statistics"
    return None


def _csv_encoding_problems(config: Config, path: str, fmt: str) -> list[str]:
    """A CSV table whose first rows' captions that are not ASCII are none of them UTF-8:
    a cp1252 table (Excel's "CSV (Comma delimited)"), every such row an error one by one
    (helper-41). ``validate`` stops; a run warns."""
    if fmt != "csv":
        return []
    from mitigate.tables import _first_values

    configured = {
        "key_column": config.input.key_column,
        "image_column": config.input.image_column,
        "caption_column": config.input.caption_column,
    }
    try:
        with fs.open_read(path) as f:
            used, problems = table_problems(f, fmt, configured)
        if problems or "caption_column" not in used:
            return []
        with fs.open_read(path) as f:  # (reading the header closed the first handle)
            values = _first_values(f, fmt, [used["caption_column"]])[used["caption_column"]]
    except (OSError, ValueError, KeyError):
        return []  # told by the other checks
    texts = [v for v in values if isinstance(v, str) and not v.isascii()]
    bad = [v for v in texts if LONE_SURROGATE.search(v)]
    if not bad or len(bad) < len(texts):
        return []
    return [
        f"{len(bad)} of its first {len(values)} captions are not UTF-8 (e.g. "
        f"{escape_surrogates(bad[0])[:60]!r}): a cp1252 table, as Excel's \"CSV (Comma "
        'delimited)" saves? Convert it (iconv -f cp1252 -t utf-8); each such row is '
        "invalid_caption_encoding"
    ]


def _table_problems(config: Config, path: str) -> list[str]:
    """A table's missing key/image/caption columns, found from its schema or header
    before any work; a common name used in place of a default one is logged."""
    fmt = table_format(path, config.input.format)
    if fmt == "webdataset":
        return []
    cfg = config.input
    configured = {
        "key_column": cfg.key_column,
        "image_column": cfg.image_column,
        "caption_column": cfg.caption_column,
    }
    try:
        with fs.open_read(path) as f:
            used, problems = table_problems(f, fmt, configured)
    except OSError as exc:
        return [f"cannot open: {exc}"]
    for field, column in used.items():
        if column == ROW_KEY and configured[field] != ROW_KEY and not problems:
            log.warning(
                "%s: no key column (%s): a row's key is the table's name and its row "
                "number (set input.key_column to use a column)",
                path,
                ", ".join(repr(c) for c in COLUMN_ALIASES[field]),
            )
        elif column != configured[field] and not problems:
            log.warning(
                "%s: no column %r, using %r (set input.%s to choose)",
                path,
                configured[field],
                column,
                field,
            )
    return problems


#: Samples of a pattern's first tar read before any work to tell whether its samples
#: carry captions at all.
CAPTION_SAMPLES = 100


def _tar_problems(config: Config, path: str) -> list[str]:
    """A problem when none of the first :data:`CAPTION_SAMPLES` samples of a tar has a
    caption (a member of :data:`mitigate.sources.CAPTION_EXTS`, or a sidecar field of
    :data:`~mitigate.sources.SIDECAR_CAPTION_FIELDS`): every sample would be a
    ``missing_caption`` error. Tar headers and the samples' sidecars are read, no image."""
    import itertools

    from mitigate.records import SampleRecord
    from mitigate.sources import index_tar, read_members
    from mitigate.tarscan import compression, other_archive

    try:
        with fs.open_read(path) as f:
            head = f.read(8)
            if compression(head):
                return [
                    f"{other_archive(head)}, not a plain tar: shards are read by offset, so "
                    "decompress it first"
                ]
            if other_archive(head):
                return [f"{other_archive(head)}, not a tar: write the samples to a tar first"]
            f.seek(0)
            indexed = index_tar(f, path, limits=config.source_limits())
            records = [
                r for r in itertools.islice(indexed, CAPTION_SAMPLES) if isinstance(r, SampleRecord)
            ]
            if not records:
                return []  # an empty or unreadable tar: the run says so as a source issue
            return _caption_problems(config, records, lambda r, exts: read_members(f, r, exts))
    except OSError as exc:
        return [f"cannot read: {exc}"]


def _caption_problems(
    config: Config, records: list[Any], read: Callable[[Any, set[str]], dict[str, bytes]]
) -> list[str]:
    """A problem when none of ``records`` (a source's first samples) has an image of an
    accepted format, or a caption: a caption member, or a caption field in its sidecar
    (read by ``read``)."""

    from mitigate.sources import (
        CAPTION_EXTS,
        IMAGE_EXTS,
        JSON_EXT,
        SIDECAR_CAPTION_FIELDS,
        caption_member,
        inner_dots,
        parse_sidecar,
        sidecar_caption_field,
    )

    exts: dict[str, None] = {}
    dots = inner_dots(records[0].key, [m.ext for m in records[0].members])
    if not dots and not any(m.ext in IMAGE_EXTS for r in records for m in r.members):
        found = sorted({m.ext for r in records for m in r.members})
        return [  # an iPhone's HEIC dump, captions alone: every sample an error
            f"none of its first {len(records)} samples has an image of an accepted format "
            f"({', '.join(sorted(IMAGE_EXTS))}; found: {', '.join(found) or 'nothing'})"
        ]
    if any(caption_member(r) is not None for r in records):  # their text, where readable
        usable = [r for r in records if caption_member(r) is not None and r.state != "error"]
        return _caption_text_problems(config, usable, read) if usable else []
    for record in records:
        exts.update(dict.fromkeys(m.ext for m in record.members))
        sidecar = next((m for m in record.members if m.ext == JSON_EXT), None)
        if sidecar is None or sidecar.size > config.decode.max_sidecar_bytes:
            continue
        try:
            meta, _ = parse_sidecar(read(record, {JSON_EXT})[JSON_EXT])
        except EOFError:
            continue
        if isinstance(meta, dict) and sidecar_caption_field(meta) is not None:
            return []
    found = ", ".join(f".{e}" for e in exts) or "none"
    members = _either([f".{e}" for e in CAPTION_EXTS])
    fields = _either(list(SIDECAR_CAPTION_FIELDS))
    return [
        f"none of its first {len(records)} samples has a caption (members: {found}); a "
        f"caption is a {members} member, or a string field {fields} of KEY.json"
        + inner_dots(records[0].key, [m.ext for m in records[0].members])
    ]


def _caption_text_problems(
    config: Config, records: list[Any], read: Callable[[Any, set[str]], dict[str, bytes]]
) -> list[str]:
    """A problem when none of ``records``' caption members is text as a run reads it
    (UTF-8, or UTF-16/32 with a byte-order mark): every sample would be an
    ``invalid_caption_encoding`` error (a dataset of cp1252 captions passed here, then
    failed whole, helper-33)."""
    from mitigate.sources import caption_member
    from mitigate.text import ENCODING_NAMES, text_encoding

    first = None
    for record in records:
        member = caption_member(record)
        if member.size > config.decode.max_caption_bytes:
            return []  # too large to judge here: the run names it
        try:
            raw = read(record, {member.ext})[member.ext]
        except (OSError, EOFError):  # a cut shard, a file gone: the run says so
            return []
        codec = text_encoding(raw[:4])
        try:
            raw.decode(codec)
            return []
        except UnicodeDecodeError as exc:
            first = first or f"{record.key}.{member.ext} is not {ENCODING_NAMES[codec]}: {exc}"
    return [
        f"none of its first {len(records)} captions is UTF-8 text (nor UTF-16/32 with a "
        f"byte-order mark), e.g. {first}: convert them (iconv -f cp1252 -t utf-8), or every "
        "sample is an invalid_caption_encoding error"
    ]


def _either(names: list[str]) -> str:
    return ", ".join(names[:-1]) + " or " + names[-1]
