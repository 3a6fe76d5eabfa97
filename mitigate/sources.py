"""Read input sources into light :class:`SampleRecord` references (no Beam here).

Two kinds of source:

* **WebDataset tar shards** (``KEY.jpg|jpeg|png|webp`` + ``KEY.txt`` + optional
  ``KEY.json``, consecutive members per sample, as img2dataset writes them).
  :func:`index_tar` streams the tar once, headers only in spirit: it records where each
  member's data lies and never extracts anything or uses a member name as a path.
  :func:`read_sample_payload` later reads one sample's members by offset.
* **Tables** (Parquet, JSONL, CSV) with a key column, an image path relative to the
  table, and a caption: :func:`mitigate.tables.iter_table`.

Problems with a single sample become ``error`` records with a reason; problems with a
whole file (not a tar, cut off) become :class:`SourceIssue` entries for the summary.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from mitigate.records import Member, Reason, SampleRecord
from mitigate.sidecar import (  # noqa: F401 (re-exported: the sidecar's rules were here)
    MAX_JSON_DEPTH,
    SIDECAR_CAPTION_FIELDS,
    other_captions,
    parse_sidecar,
    refused,
    sidecar_caption_field,
)
from mitigate.tarscan import (
    TarProblem,
    decode_name,
    files_before,
    is_os_metadata,
    scan_tar,
    split_name,
)
from mitigate.text import (
    BYTE_ORDER_MARKS,
    ENCODING_NAMES,
    LONE_SURROGATE,
    NUL_IN_TEXT,
    normalize_text,
    text_encoding,
)

# Image formats read, by member extension and by Pillow format name. Decoding is
# restricted to these plugins, so no input can make Pillow start an external program
# (its EPS plugin runs Ghostscript) or reach a rarely used, lightly hardened decoder.
# TIFF is left out on purpose: libtiff is a large attack surface, multi-page files can
# hide huge pages, and web-scraped pre-training data hardly ever holds TIFF.
# (``jfif``, ``jpe``: JPEG files as Windows saves web images; ``mpo``: a phone's
# multi-picture JPEG as its camera names it)
IMAGE_EXTS = frozenset({"jpg", "jpeg", "jfif", "jpe", "mpo", "png", "webp", "gif", "bmp"})
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
#: The file extension of each accepted format (a kept image held in a table is written
#: to its shard as ``KEY.<ext>``).
FORMAT_EXTS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}
# Pillow names a JPEG with a multi-picture index (phones' portrait shots, 3D cameras)
# MPO: it is a JPEG file (its first picture what a loader shows), written as KEY.jpg
FORMAT_EXTS["MPO"] = "jpg"
#: Pillow's formats that are JPEG files (decoded at a reduced scale, a quality read)
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# Extensions of image formats that are recognised but not accepted: such a sample is an
# ``unsupported_format`` error rather than ``missing_image``.
REFUSED_IMAGE_EXTS = frozenset(
    {
        "tif",
        "tiff",
        "eps",
        "ps",
        "pdf",
        "svg",
        "ico",
        "heic",
        "heif",
        "avif",
        "jxl",
        "jp2",
        "j2k",
        "psd",
        "ppm",
        "pgm",
        "pbm",
        "pnm",
        "tga",
        "xbm",
        "xpm",
        "pcx",
        "dds",
        "icns",
    }
)
CAPTION_EXT = "txt"
#: Members that hold a tar sample's caption, the first present taken: WebDataset's and
#: img2dataset's ``.txt``, then what other tools write (kohya-style ``.caption``,
#: ``.text``, ``.cap``). Without one, a string field of the ``.json`` sidecar
#: (:data:`SIDECAR_CAPTION_FIELDS`, the first present). Kept shards always hold it as
#: ``KEY.txt``.
CAPTION_EXTS = (CAPTION_EXT, "caption", "text", "cap")
JSON_EXT = "json"
MAX_MEMBERS_PER_SAMPLE = 16


@dataclass(frozen=True)
class SourceIssue:
    """A problem with a whole source file, or a stretch of one, rather than one sample.

    ``count`` is how many members the problem swallowed where that is known (a damaged
    header is one member), None where it cannot be known (a shard cut at a boundary).
    """

    source: str
    reason: str
    detail: str
    count: int | None = None


@dataclass(frozen=True)
class SourceLimits:
    """Per-sample size limits checked from the tar index, before any byte is read."""

    max_image_bytes: int = 64 * 1024 * 1024
    max_caption_bytes: int = 64 * 1024
    max_sidecar_bytes: int = 1024 * 1024
    name_encoding: str | None = None  # tried for member names that are not UTF-8
    max_table_fields_bytes: int = 4096  # a table row's carried columns (tables.row_fields)


def not_text(surrogate: str) -> str:
    """What a lone surrogate found in text stands for, for an error's detail."""
    code = ord(surrogate)
    if 0xDC80 <= code <= 0xDCFF:
        return f"byte 0x{code - 0xDC00:02x}"
    return f"a lone surrogate U+{code:04X}"


#: A :class:`Member` offset for a tar member that is no regular file (sparse, a link)
#: and that no step reads: its sample keeps it listed, its shards do not copy it.
UNREAD = -1
_NEEDED = frozenset({*IMAGE_EXTS, *CAPTION_EXTS, JSON_EXT})


def key_problem(key: str) -> str | None:
    """Why ``key`` is unusable as a sample key, or None. Keys become member names in
    the output shards, so anything that could act as a path escape is refused."""
    if not key:
        return "empty key"
    surrogate = LONE_SURROGATE.search(key)
    if surrogate:
        return f"key is not UTF-8 text ({not_text(surrogate.group())})"
    if "\x00" in key or "\\" in key:
        return "key contains a NUL or backslash"
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        return "key is an absolute path or has an empty, '.' or '..' segment"
    if any(part.startswith(".") for part in key.split("/")):
        return "key has a hidden ('.'-prefixed) name"
    if any(ord(c) < 32 or ord(c) == 127 for c in key):  # C0 and DEL
        return "key contains a control character"
    if any(128 <= ord(c) < 160 for c in key):  # C1: what cp1252's € “ ” are in latin-1
        return (
            "key contains a control character (U+0080-U+009F: a Windows name read as "
            "latin-1? input.name_encoding: cp1252)"
        )
    return None


class Building:
    """A sample being assembled from the members of one key: light (no record, its
    members as tuples), since :data:`KEY_WINDOW` of them may be open; its record is
    made when it is finished."""

    __slots__ = ("index", "key", "members", "note", "problem")

    def __init__(self, key: str, index: int, note: str = "") -> None:
        self.key = key
        self.index = index
        self.members: list[tuple] = []  # (ext, offset, size[, name]): no object
        self.problem: tuple[str, str] | None = None  # (reason, detail) found while indexing
        self.note = note  # damage nearby, added to the detail of an error

    def fail(self, reason: str, detail: str) -> None:
        if self.problem is None:
            self.problem = (reason, detail)


def _complete(members: list[tuple[str, int, int]]) -> bool:
    """Whether a sample's members hold an image and a caption (a member or a sidecar)."""
    exts = {m[0] for m in members}
    return not exts.isdisjoint(IMAGE_EXTS) and not exts.isdisjoint((*CAPTION_EXTS, JSON_EXT))


def finish_sample(building: Building, source: str, limits: SourceLimits) -> SampleRecord:
    """Structural checks on one sample's members (everything that needs no data)."""
    record = SampleRecord(
        key=building.key,
        source=source,
        index=building.index,
        members=tuple(Member(*m) for m in building.members),
    )
    error = building.problem or _structure_problem(record, limits)
    if error is None:
        return record
    reason, detail = error
    return record.with_error(reason, detail + building.note)


def inner_dots(key: str, exts: Sequence[str]) -> str:
    """A hint where a member's extension holds a dot and ends as an image's, a caption's
    or a sidecar's (``photo.v2.jpg`` is key ``photo``, extension ``v2.jpg``), else ''."""
    known = (*IMAGE_EXTS, *CAPTION_EXTS, JSON_EXT)
    dotted = [e for e in exts if "." in e and e.rsplit(".", 1)[1] in known]
    if not dotted:
        return ""
    shown = ", ".join(repr(e) for e in dotted)
    return (
        f"; a key ends at the first dot of a name: key {key!r} has the extension(s) {shown}; "
        "name the files without inner dots"
    )


def _structure_problem(record: SampleRecord, limits: SourceLimits) -> tuple[str, str] | None:
    problem = key_problem(record.key)
    if problem:
        return Reason.INVALID_KEY, f"{record.key!r}: {problem}"
    images = [m for m in record.members if m.ext in IMAGE_EXTS]
    if not images:
        refused = [m.ext for m in record.members if m.ext in REFUSED_IMAGE_EXTS]
        if refused:
            accepted = ", ".join(sorted(IMAGE_EXTS))
            return Reason.UNSUPPORTED_FORMAT, (
                f"image member .{refused[0]} is not an accepted format (accepted: {accepted})"
            )
        exts = ", ".join(repr(m.ext) for m in record.members) or "none"
        hint = inner_dots(record.key, [m.ext for m in record.members])
        return Reason.MISSING_IMAGE, f"no image member (members: {exts}){hint}"
    if len(images) > 1:
        exts = ", ".join(m.ext for m in images)
        return Reason.MULTIPLE_IMAGES, f"several image members: {exts}"
    image = images[0]
    record.image_ext = image.ext
    record.n_bytes = image.size
    if image.size > limits.max_image_bytes:
        return Reason.IMAGE_TOO_LARGE, (
            f"{image.size} bytes > max_image_bytes {limits.max_image_bytes}"
        )
    caption = caption_member(record)
    sidecar = next((m for m in record.members if m.ext == JSON_EXT), None)
    if caption is None and sidecar is None:
        exts = ", ".join(m.ext for m in record.members)
        hint = inner_dots(record.key, [m.ext for m in record.members])
        return Reason.MISSING_CAPTION, (
            f"no caption member ({_CAPTION_NAMES}) and no .json sidecar (members: {exts}){hint}"
        )
    if caption is not None and caption.size > limits.max_caption_bytes:
        return Reason.CAPTION_TOO_LARGE, (
            f"caption of {caption.size} bytes > max_caption_bytes {limits.max_caption_bytes}"
        )
    if sidecar is not None and sidecar.size > limits.max_sidecar_bytes:
        return Reason.JSON_TOO_LARGE, (
            f"sidecar .json of {sidecar.size} bytes > max_sidecar_bytes {limits.max_sidecar_bytes}"
        )
    return None


_ISSUE_REASONS = {
    "damaged_header": Reason.DAMAGED_HEADER,
    "truncated": Reason.TRUNCATED_SHARD,
    "truncated_header": Reason.TRUNCATED_SHARD,
    "missing_end_marker": Reason.MISSING_END_MARKER,
    "trailing_data": Reason.TRAILING_DATA,
    "oversized_header": Reason.DAMAGED_HEADER,
    "not_a_tar": Reason.READ_ERROR,
}


#: Keys a tar's index holds open: a member joins its key's sample wherever it lies within
#: this many keys of the sample's first member. GNU tar and bsdtar write a folder in its
#: directory order (unsorted unless ``--sort=name``), so a sample's image and caption may
#: lie apart; a shard of img2dataset (10,000 samples) is grouped whole. ~0.9 KB a key.
KEY_WINDOW = 100_000


def index_tar(
    fileobj: IO[bytes],
    source: str,
    *,
    max_image_bytes: int | None = None,
    limits: SourceLimits | None = None,
) -> Iterator[SampleRecord | SourceIssue]:
    """Index a tar shard: one record per sample (members grouped by key, see
    :data:`KEY_WINDOW`), plus source issues, in the order the keys first appear.

    Nothing is extracted and no member name is used as a path. A damaged header is
    skipped (the archive is read on from the next valid header) and reported with the
    bytes skipped; a shard cut off mid-member yields every complete sample before the
    cut, an ``error``/``truncated_shard`` record for the sample being read, and an issue.
    """
    if limits is None:
        limits = SourceLimits()
    if max_image_bytes is not None:
        limits = dataclasses.replace(limits, max_image_bytes=max_image_bytes)
    # samples being built, oldest first, and the open one of each key: a member joins
    # its key's sample wherever it lies within KEY_WINDOW samples of the sample's first
    # member, unless the sample has that member already and other samples' members, an
    # end-of-archive marker or the sample's image and caption came before it (a tar
    # appended to itself, `tar -r`): that member starts another sample of the key
    # (duplicate_key in a run), the first one whole
    building: deque[Building] = deque()
    open_samples: dict[str, Building] = {}
    last: Building | None = None  # the sample of the last member read
    cut = False  # the shard ends inside a member or a header
    skipped = 0  # operating-system files (is_os_metadata)
    # regular files by stored name, kept from the first hard link on (a link names an
    # earlier member): a tar without one pays nothing for it
    files: dict[bytes, tuple[int, int]] | None = None
    index = 0
    complete = 0
    damage_note = ""

    def finished(sample: Building) -> SampleRecord:
        nonlocal complete
        # the sample a cut went through is not complete if the cut did it harm
        complete += not (cut and sample is last and sample.problem is not None)
        return finish_sample(sample, source, limits)

    for item in scan_tar(fileobj):
        if isinstance(item, TarProblem):
            reason = _ISSUE_REASONS[item.kind]
            if item.kind in ("truncated", "truncated_header"):
                cut = True
                if last is not None:
                    if item.kind == "truncated":  # inside this sample's member data
                        last.fail(
                            Reason.TRUNCATED_SHARD, f"shard ends inside this sample: {item.detail}"
                        )
                    else:  # in the next header: this sample may lack a later member
                        last.note += " (the shard is cut off right after it)"
                while building:
                    yield finished(building.popleft())
                if skipped:
                    yield os_metadata_issue(source, skipped)
                yield SourceIssue(
                    source,
                    reason,
                    f"shard is cut off after {complete} complete samples ({item.detail}); "
                    "anything after the cut is lost",
                )
                return
            # bytes after the end marker that hold no member: nothing lost (count 0)
            count = {"damaged_header": item.headers, Reason.TRAILING_DATA: 0}.get(item.kind)
            detail = item.detail
            if item.probable_name:
                detail += f"; the damaged header names {item.probable_name!r}"
            yield SourceIssue(source, reason, detail, count)
            if item.kind == "damaged_header":
                damage_note = f" (a damaged tar header precedes it at byte {item.start})"
                if last is not None:
                    last.note = last.note or damage_note
            continue
        if item.kind in ("directory", "volume label"):  # no sample's member (tar -V labels)
            continue
        if item.kind == "hard link" and item.link is not None:
            if files is None:
                files = files_before(fileobj, item.header_offset)
            target = files.get(item.link)
            if target is not None:  # the data of the file it names (GNU tar's second name)
                item = dataclasses.replace(item, kind="file", offset=target[0], size=target[1])
        if files is not None and item.is_file:
            files[item.raw_name] = (item.offset, item.size)
        name, name_problem = decode_name(item.raw_name, limits.name_encoding)
        if is_os_metadata(name):
            skipped += 1
            continue
        key, ext = split_name(name)
        current = open_samples.get(key)
        if item.joined:  # another archive: a member repeated now is another sample's
            last = None
        if (
            current is not None
            and any(m[0] == ext for m in current.members)
            and (current is not last or _complete(current.members))
        ):
            # its key again after other samples, another archive (`cat`) or after the
            # sample was whole (`tar -r`/`-u` of the last sample): another sample
            current = None
        if current is None:
            if len(building) >= KEY_WINDOW:
                oldest = building.popleft()
                if open_samples.get(oldest.key) is oldest:
                    del open_samples[oldest.key]
                oldest.note += (
                    f" (the tar's members of {KEY_WINDOW:,} other samples came before the "
                    "rest of this one, if it has more: write the tar sorted by name, e.g. "
                    "tar --sort=name)"
                )
                yield finished(oldest)
            current = Building(key, index, damage_note)
            building.append(current)
            open_samples[key] = current
            index += 1
            damage_note = ""
        last = current
        if name_problem:
            current.fail(Reason.INVALID_KEY, name_problem)
        # an extra member the sample does not need (a sparse KEY.npy, a link): listed,
        # never read nor copied (its whole sample was an error: helper-41); a mask
        # KEY.seg.png or a translation KEY.de.txt is no image nor caption of it either
        unread = not item.is_file and ext not in _NEEDED
        if not item.is_file and not unread:
            current.fail(
                Reason.UNSUPPORTED_MEMBER,
                f"{name!r} is a {item.kind}; only regular files are read"
                + (f" (its target {item.link!r} is no earlier file)" if item.link else ""),
            )
            continue
        members = current.members
        if any(m[0] == ext for m in members):
            current.fail(
                Reason.DUPLICATE_MEMBER, f"two members named {name!r} (or differing only in case)"
            )
            continue
        if len(members) >= MAX_MEMBERS_PER_SAMPLE:
            current.fail(
                Reason.TOO_MANY_MEMBERS, f"more than {MAX_MEMBERS_PER_SAMPLE} members with this key"
            )
            continue
        members.append((ext, UNREAD, 0) if unread else (ext, item.offset, item.size))
    while building:
        yield finished(building.popleft())
    if skipped:
        yield os_metadata_issue(source, skipped)


def os_metadata_issue(source: str, skipped: int) -> SourceIssue:
    return SourceIssue(
        source,
        Reason.OS_METADATA,
        f"{skipped} operating-system file(s) skipped (macOS ._ AppleDouble, .DS_Store, "
        "__MACOSX/, Thumbs.db, desktop.ini, System Volume Information/): no sample's member",
        count=skipped,
    )


_CAPTION_NAMES = ", ".join(f".{ext}" for ext in CAPTION_EXTS)


def _from(ext: str) -> str:
    """`` (.caption)`` where a caption came from a member other than ``.txt``."""
    return "" if ext == CAPTION_EXT else f" (.{ext})"


def caption_member(record: SampleRecord) -> Member | None:
    """The member holding ``record``'s caption (:data:`CAPTION_EXTS`), or None."""
    by_ext = {m.ext: m for m in record.members}
    return next((by_ext[ext] for ext in CAPTION_EXTS if ext in by_ext), None)


@dataclass(frozen=True)
class Payload:
    image: bytes
    caption: str
    meta: dict[str, Any] | None
    caption_bytes: bytes = b""  # as a kept shard's KEY.txt holds it
    others: tuple[tuple[str, str], ...] = ()  # the sidecar's other captions (field, text)


def read_members(fileobj: IO[bytes], record: SampleRecord, exts: set[str]) -> dict[str, bytes]:
    """Read the data of ``record``'s members whose extension is in ``exts``."""
    out = {}
    for member in sorted(record.members, key=lambda m: m.offset):
        if member.ext in exts:
            fileobj.seek(member.offset)
            data = fileobj.read(member.size)
            if len(data) != member.size:
                raise EOFError(f"{member.ext}: expected {member.size} bytes, got {len(data)}")
            out[member.ext] = data
    return out


def parse_payload(
    record: SampleRecord, data: dict[str, bytes], max_caption_bytes: int | None = None
) -> Payload | SampleRecord:
    """Check caption and sidecar of a tar sample; an error record if either is bad.

    The caption is the first caption member present (:data:`CAPTION_EXTS`), else the
    sidecar's first string field of :data:`SIDECAR_CAPTION_FIELDS`, held to
    ``max_caption_bytes`` as a member is (a member's size is checked at the index)."""
    ext = next((e for e in CAPTION_EXTS if e in data), None)
    raw, caption = (data[ext], "") if ext is not None else (b"", "")
    if ext is not None:
        codec = text_encoding(raw[:4])
        try:
            caption = raw.decode(codec)
        except UnicodeDecodeError as exc:
            detail = f"caption{_from(ext)} is not {ENCODING_NAMES[codec]}: {exc}"
            return record.with_error(Reason.INVALID_CAPTION_ENCODING, detail)
        if raw.startswith(BYTE_ORDER_MARKS):
            raw = caption.encode("utf-8")  # kept shards hold the caption in UTF-8, no mark
            if max_caption_bytes is not None and len(raw) > max_caption_bytes:
                return record.with_error(  # UTF-16 CJK: 2 bytes a character, 3 in UTF-8
                    Reason.CAPTION_TOO_LARGE,
                    f"caption{_from(ext)} of {len(raw)} bytes in UTF-8 > max_caption_bytes "
                    f"{max_caption_bytes}",
                )
    meta = None
    if JSON_EXT in data:
        meta, problem = parse_sidecar(data[JSON_EXT])
        if problem:
            return record.with_error(Reason.INVALID_JSON, problem)
    if ext is None:
        field = sidecar_caption_field(meta)
        if meta is None or field is None:
            return record.with_error(
                Reason.MISSING_CAPTION,
                f"no caption member ({_CAPTION_NAMES}) and the .json sidecar has no string "
                f"field {'/'.join(SIDECAR_CAPTION_FIELDS)}",
            )
        # a lone surrogate (JSON escapes half of a pair where a string was cut inside an
        # emoji) is no character: U+FFFD stands for it, the sidecar keeps the original
        caption = LONE_SURROGATE.sub("\ufffd", meta[field])
        raw = caption.encode("utf-8")
        if max_caption_bytes is not None and len(raw) > max_caption_bytes:
            return record.with_error(
                Reason.CAPTION_TOO_LARGE,
                f"caption (.json {field!r}) of {len(raw)} bytes > max_caption_bytes "
                f"{max_caption_bytes}",
            )
    if "\x00" in caption:
        where = _from(ext) if ext is not None else f" (.json {sidecar_caption_field(meta)!r})"
        return record.with_error(Reason.INVALID_CAPTION_ENCODING, f"caption{where} {NUL_IN_TEXT}")
    if not normalize_text(caption):  # blank, or only characters that render as nothing
        return record.with_error(Reason.MISSING_CAPTION, "caption is empty")
    others = other_captions(meta, caption)  # read by the caption filters, in the manifest
    if problem := refused(others, max_caption_bytes):
        return record.with_error(*problem)
    return Payload(data[record.image_ext or ""], caption, meta, raw, others)
