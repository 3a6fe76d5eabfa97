"""Folder sources: a folder of image files with their captions beside them, as kohya-style
training folders (``photo.jpg`` + ``photo.txt``), img2dataset's ``files`` output
(``00000/000000000.jpg`` + ``.txt`` + ``.json``) and camera dumps hold them. No Beam here.

A folder is read as a tar shard is: its files, at any depth, are the members, grouped by
WebDataset's rule (the key is the path up to the first dot of the file's name:
``sub/photo.jpg`` and ``sub/photo.txt`` are sample ``sub/photo``), so every rule of a
tar sample holds (one image, a caption member or a ``.json`` sidecar, the size limits
checked before a byte is read, other members carried to the kept shard). A member keeps
its file's name (:attr:`mitigate.records.Member.name`, as found: ``IMG_1.JPG`` is
extension ``jpg``); its bytes are read from that file when needed
(:class:`mitigate.samples.SampleReader`), as a tar member's are at its offset.

The listing comes a folder at a time, each folder's entries sorted by name
(:func:`mitigate.pipeline.fs.walk`), so the index holds one folder's names, never the
whole tree's, and the samples' order (and the manifest's) is the same on every machine.
Files that are no sample's member are skipped and counted in a source issue: an
operating system's (``.DS_Store``, ``._NAME``, ``Thumbs.db``: ``os_metadata``, as in a
tar), and hidden files and folders (a name starting with a dot: ``.git``,
``.ipynb_checkpoints``) and links to folders, which are not followed
(``skipped_files``).
"""

from __future__ import annotations

import collections
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence

from mitigate.records import Reason, SampleRecord
from mitigate.sources import (
    LONE_SURROGATE,
    MAX_MEMBERS_PER_SAMPLE,
    Building,
    SourceIssue,
    SourceLimits,
    finish_sample,
    os_metadata_issue,
)
from mitigate.tarscan import is_os_folder, is_os_metadata, split_name
from mitigate.text import escape_surrogates

#: A listing entry: (name relative to the folder, '/'-separated; size in bytes; kind).
Entry = tuple[str, int, str]
FILE = "file"
#: Entry kinds that are no member: a hidden folder (not descended into) and a link to a
#: folder (not followed).
HIDDEN_FOLDER = "hidden folder"
FOLDER_LINK = "link to a folder"
#: A folder that could not be listed (its kind reads ``unreadable folder (Permission
#: denied)``): its samples are lost, how many unknown.
UNREADABLE_FOLDER = "unreadable folder"
#: A sub-folder, listed in its parent's entries (it is descended into, not a member).
FOLDER = "folder"
#: A link to a file outside the folder: its sample's unsupported_member, never read.
LINK_OUTSIDE = "link to a file outside the folder"
#: img2dataset's own files beside its folders of samples (``output_format=files``): the
#: shard's table of urls and statuses (``00000.parquet`` beside ``00000/``) and its
#: statistics (``00000_stats.json``).
_IMG2DATASET = re.compile(r"(\d+)(?:\.parquet|_stats\.json)")


def is_folder(source: str) -> bool:
    """Whether a source is a folder (its name ends with ``/``: :func:`folder_source`)."""
    return source.endswith("/")


def folder_source(path: str) -> str:
    """The source name of folder ``path``: the path with one trailing ``/``."""
    return path.rstrip("/") + "/"


def hidden_folder(name: str) -> bool:
    """Whether a folder is not descended into: hidden (``.git``), or an operating
    system's (macOS' ``__MACOSX``, an SD card's ``System Volume Information``)."""
    return name.startswith(".") or is_os_folder(name)


def index_folder(
    listing: Iterable[Sequence[Entry]], source: str, limits: SourceLimits | None = None
) -> Iterator[SampleRecord | SourceIssue]:
    """One record per sample of folder ``source`` (its files grouped by key), in the
    order of the listing (a folder at a time), each folder's samples by key; then the
    source issues of the files skipped. ``listing``: each folder's entries
    (:data:`Entry`), as :func:`mitigate.pipeline.fs.walk` gives them."""
    limits = limits or SourceLimits()
    skipped: collections.Counter[str] = collections.Counter()
    index = 0
    for entries in listing:
        samples: dict[str, Building] = {}
        here = {e[0].rstrip("/").rpartition("/")[2] for e in entries if e[2] == FOLDER}
        for name, size, kind in entries:
            base = name.rstrip("/").rpartition("/")[2]
            if kind == FOLDER:
                continue
            download = _IMG2DATASET.fullmatch(base)
            if download is not None and download.group(1) in here:
                skipped["img2dataset table or statistics"] += 1
                continue
            if kind.startswith(UNREADABLE_FOLDER):
                yield SourceIssue(
                    source, Reason.READ_ERROR, f"{name}: {kind}: its samples are not read"
                )
                continue
            if kind == HIDDEN_FOLDER and is_os_folder(base):  # __MACOSX, an SD card's
                skipped["os"] += 1
                continue
            if kind in (HIDDEN_FOLDER, FOLDER_LINK):
                skipped[kind] += 1
                continue
            if is_os_metadata(name):
                skipped["os"] += 1
                continue
            if base.startswith("."):
                skipped["hidden file"] += 1
                continue
            bad_name = LONE_SURROGATE.search(name) is not None  # bytes that are not UTF-8
            if bad_name:  # no manifest column could hold it: shown escaped, never read
                name = escape_surrogates(name)
            key, ext = split_name(name)
            # one key for a name in either Unicode form: macOS writes café.jpg decomposed
            # (NFD), a Linux tool its café.txt composed (NFC); they were two samples
            key = unicodedata.normalize("NFC", key)
            current = samples.get(key)
            if current is None:
                current = samples[key] = Building(key, 0)
            if bad_name:
                current.fail(
                    Reason.INVALID_KEY,
                    f"'{name}': the file's name is not UTF-8 (a byte shown as \\xNN); rename "
                    "it (input.name_encoding applies to tar shards)",
                )
            if kind != FILE:
                current.fail(
                    Reason.UNSUPPORTED_MEMBER, f"{name!r} is a {kind}; only regular files are read"
                )
                continue
            twin = next((m[3] for m in current.members if m[0] == ext), None)
            if twin is not None:
                nfc = unicodedata.normalize("NFC", twin) == unicodedata.normalize("NFC", name)
                how = "Unicode forms (NFC, NFD)" if nfc else "cases of its extension"
                current.fail(
                    Reason.DUPLICATE_MEMBER,
                    f"two files named {twin!r} and {name!r} (one name in two {how})",
                )
                # listed too: a second sample of that name (helper-41) is not lost unsaid
                if len(current.members) < MAX_MEMBERS_PER_SAMPLE:
                    current.members.append((ext, 0, size, name))
                continue
            if len(current.members) >= MAX_MEMBERS_PER_SAMPLE:
                current.fail(
                    Reason.TOO_MANY_MEMBERS,
                    f"more than {MAX_MEMBERS_PER_SAMPLE} files with this key",
                )
                continue
            current.members.append((ext, 0, size, name))
        for key in sorted(samples):
            building = samples[key]
            building.index = index
            index += 1
            yield finish_sample(building, source, limits)
    if skipped["os"]:
        yield os_metadata_issue(source, skipped.pop("os"))
    if skipped:
        n = sum(skipped.values())
        what = ", ".join(f"{count} {kind}(s)" for kind, count in sorted(skipped.items()))
        yield SourceIssue(
            source,
            Reason.SKIPPED_FILES,
            f"{what} skipped: a name starting with a dot is hidden (no sample's file, as "
            ".git or .ipynb_checkpoints), links to folders are not followed, and "
            "img2dataset's NNNNN.parquet and NNNNN_stats.json beside NNNNN/ hold no sample",
            count=n,
        )
