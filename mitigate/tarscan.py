"""A defensive tar header scanner: where each member's data lies, and where the archive
is damaged, without extracting anything or trusting any field further than it checks.

Python's :mod:`tarfile` stops silently at the first bad header checksum (every member
after it is lost without a word), reads GNU long names and PAX headers of any size
into memory, and decodes names it cannot decode into surrogates. Shards written by
other tools, cut off, or damaged in transit need more care, so this module reads the
512-byte headers itself (POSIX ustar, GNU and PAX, as GNU tar, bsdtar, Python and
img2dataset write them) and yields:

* :class:`TarMember` for every member, with its raw name bytes (names are decoded by
  the caller, which decides what a non-UTF-8 name means);
* :class:`TarProblem` for every stretch it could not read: a damaged header (it then
  resynchronises to the next valid header, as GNU tar does with "skipping to next
  header", and says which bytes it skipped), a member cut off by the end of the file,
  a missing end-of-archive marker, data after the end marker, or no tar at all.

No Beam here; everything works on any seekable binary file object.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from mitigate.reasons import Reason

BLOCK = 512
_SCAN_CHUNK = 1 << 20  # bytes read at a time while searching for the next valid header
_ZERO_BLOCK = bytes(BLOCK)
# Type flags (POSIX ustar, GNU, PAX).
_FILE_TYPES = frozenset(b"07\x00")
_DIR_TYPE = ord("5")
_GNU_DUMPDIR = ord("D")  # GNU --listed-incremental: a directory with its file list
_GNU_LONGNAME = ord("L")
_GNU_LONGLINK = ord("K")
_PAX_HEADER = ord("x")
_PAX_GLOBAL = ord("g")
_KIND_NAMES = {
    ord("1"): "hard link",
    ord("2"): "symbolic link",
    ord("3"): "character device",
    ord("4"): "block device",
    ord("6"): "FIFO",
    ord("S"): "GNU sparse file",
    ord("V"): "volume label",
    ord("M"): "multi-volume continuation",
}


@dataclass(frozen=True)
class TarMember:
    """One member: its name as stored (bytes), what it is, and where its data lies."""

    raw_name: bytes
    kind: str  # "file", "directory", or a description of a special member
    offset: int  # byte offset of the data (not the header)
    size: int
    header_offset: int
    link: bytes | None = None  # a hard link's target: an earlier member's stored name
    # the first member after an end-of-archive marker: archives joined (`cat`, `tar -A`)
    joined: bool = False

    @property
    def is_file(self) -> bool:
        return self.kind == "file"


@dataclass(frozen=True)
class TarProblem:
    """A stretch of the archive that could not be read as members.

    ``kind``: ``damaged_header`` (bytes ``start``..``end`` skipped, ``headers`` damaged
    headers in them), ``truncated`` (the file ends inside the data of the member just
    yielded), ``truncated_header`` (the file ends inside a header),
    ``missing_end_marker`` (the file ends at a member boundary with no end-of-archive
    blocks: it may have been cut there), ``trailing_data`` (bytes after the end
    marker that hold no valid header), ``oversized_header`` (a long-name or PAX
    header larger than the limit, skipped), ``not_a_tar``.
    """

    kind: str
    start: int
    end: int
    detail: str
    headers: int | None = 0  # damaged member headers (each one member lost); None: unknown
    probable_name: bytes | None = None  # name field of a damaged header, untrusted


_DECIMAL = re.compile(rb"[0-9]+")


def _octal(field: bytes) -> int | None:
    """A numeric header field: octal (NUL/space padded) or GNU base-256."""
    if field and field[0] & 0x80:  # base-256: big-endian, first byte's top bit set
        value = int.from_bytes(field, "big", signed=False) & ~(0x80 << (8 * (len(field) - 1)))
        return value if not field[0] & 0x40 else None  # negative: nonsense here
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    if text.translate(None, b"01234567"):  # anything but octal digits left
        return None
    return int(text, 8)


def _checksum_ok(block: bytes) -> bool:
    stored = _octal(block[148:156])
    if stored is None:
        return False
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored == unsigned:
        return True
    # Some old tars summed signed bytes.
    signed = unsigned - 256 * sum(1 for c in (*block[:148], *block[156:]) if c > 127)
    return stored == signed


def _plausible(block: bytes, strict: bool) -> bool:
    """A valid header: checksum right; when resynchronising also the ustar magic, so a
    stretch of image data is very unlikely to pass for a header."""
    if block == _ZERO_BLOCK:
        return False
    if strict and block[257:262] != b"ustar":
        return False
    return _checksum_ok(block) and _octal(block[124:136]) is not None


def _header_name(block: bytes) -> bytes:
    name = block[0:100].split(b"\x00", 1)[0]
    if block[257:263] == b"ustar\x00":  # POSIX: a prefix field extends the name
        prefix = block[345:500].split(b"\x00", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    """``"%d %s=%s\\n"`` records of a PAX extended header; malformed ones end parsing."""
    out: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0:
            break
        try:
            length = int(data[pos:space])
        except ValueError:
            break
        if length <= 0 or pos + length > len(data):
            break
        record = data[space + 1 : pos + length - 1]  # without the trailing newline
        key, eq, value = record.partition(b"=")
        if eq:
            out[key] = value
        pos += length
    return out


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class _Reader:
    def __init__(self, fileobj: IO[bytes]) -> None:
        self.f = fileobj
        fileobj.seek(0, 2)
        self.size = fileobj.tell()

    def read(self, pos: int, n: int) -> bytes:
        self.f.seek(pos)
        return self.f.read(n)

    def next_header(self, pos: int) -> int | None:
        """Offset of the first block at or after ``pos`` that is a valid ustar header."""
        pos = -(-pos // BLOCK) * BLOCK
        while pos < self.size:
            chunk = self.read(pos, _SCAN_CHUNK)
            if not chunk:
                return None
            start = 0
            while True:
                # The magic sits 257 bytes into a header: find candidates, then check.
                hit = chunk.find(b"ustar", start)
                if hit < 0:
                    break
                at = hit - 257
                start = hit + 1
                if at < 0 or at % BLOCK:
                    continue
                block = chunk[at : at + BLOCK]
                if len(block) < BLOCK:
                    block = self.read(pos + at, BLOCK)
                if len(block) == BLOCK and _plausible(block, strict=True):
                    return pos + at
            pos += max(len(chunk) - BLOCK, BLOCK)  # overlap: a header may span chunks
        return None

    def next_nonzero_block(self, pos: int) -> int | None:
        """Offset of the first block at or after ``pos`` (a block boundary) holding a
        byte that is not zero; None if the file is zeros to its end."""
        while pos < self.size:
            chunk = self.read(pos, _SCAN_CHUNK)
            if not chunk:
                return None
            stripped = chunk.lstrip(b"\x00")
            if stripped:
                return pos + (len(chunk) - len(stripped)) // BLOCK * BLOCK
            pos += len(chunk)
        return None

    def all_zero_from(self, pos: int) -> bool:
        while pos < self.size:
            chunk = self.read(pos, _SCAN_CHUNK)
            if chunk.strip(b"\x00"):
                return False
            pos += len(chunk)
        return True


def _cut_in_header(pos: int, size: int) -> TarProblem:
    return TarProblem(
        "truncated_header", pos, size, f"the archive ends inside a header at byte {pos}"
    )


#: Magic numbers of the compressions a tar is commonly written with.
_COMPRESSIONS = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x04\x22\x4d\x18", "lz4"),
)


def compression(head: bytes) -> str | None:
    """The compression whose magic number starts ``head`` (a file's first bytes)."""
    return next((name for magic, name in _COMPRESSIONS if head.startswith(magic)), None)


#: Archives of other formats, by the magic number at their start.
_ARCHIVES = (
    (b"PK\x03\x04", "a zip archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"070701", "a cpio archive"),
    (b"070702", "a cpio archive"),
    (b"070707", "a cpio archive"),
    (b"\xc7\x71", "a cpio archive"),
    (b"\x71\xc7", "a cpio archive"),
)


def other_archive(head: bytes) -> str | None:
    """What a file that is no tar is, by its first bytes: ``"gzip-compressed"``, ``"a
    zip archive"``, ... (None: not one of those)."""
    packed = compression(head)
    if packed:
        return f"{packed}-compressed"
    return next((name for magic, name in _ARCHIVES if head.startswith(magic)), None)


def _not_a_tar(head: bytes) -> str:
    if compression(head):
        return (
            f"{other_archive(head)}, not a plain tar (decompress it first: shards are read "
            "by offset)"
        )
    other = other_archive(head)
    if other:
        return f"{other}, not a tar (write the samples to a tar: tar -cf, webdataset)"
    return f"no valid tar header found (first bytes: {head[:8].hex(' ')})"


def scan_tar(
    fileobj: IO[bytes], *, max_meta_bytes: int = 1 << 20
) -> Iterator[TarMember | TarProblem]:
    """Yield every member of a tar archive and every problem with it, in file order.

    ``max_meta_bytes`` bounds GNU long names and PAX headers (a hostile archive could
    declare gigabytes); larger ones are skipped and reported.
    """
    reader = _Reader(fileobj)
    pos = 0
    long_name: bytes | None = None
    long_link: bytes | None = None  # GNU 'K': the next member's link target
    joined = False  # an end-of-archive marker lies between this member and the last
    pax: dict[bytes, bytes] = {}
    global_pax: dict[bytes, bytes] = {}
    seen_header = False
    ustar = False  # a header with the ustar magic seen: damage can be resynchronised
    while True:
        block = reader.read(pos, BLOCK)
        if not block:
            if seen_header:
                yield TarProblem(
                    Reason.MISSING_END_MARKER,
                    pos,
                    pos,
                    "the archive ends without its end-of-archive blocks: it may have been "
                    "cut at this member boundary, and members after the cut cannot be counted",
                )
            else:
                yield TarProblem("not_a_tar", 0, 0, "empty file")
            return
        if len(block) < BLOCK and not seen_header:
            yield TarProblem("not_a_tar", 0, reader.size, _not_a_tar(block))
            return
        if len(block) < BLOCK:
            yield _cut_in_header(pos, reader.size)
            return
        if block == _ZERO_BLOCK:
            if not seen_header:
                if reader.all_zero_from(pos):
                    return  # an empty archive: only end-of-archive blocks
            # another archive right after this one's end blocks (`cat` of two tars): its
            # first header, a v7 one too (next_header finds ustar headers only)
            after_end = reader.next_nonzero_block(pos + BLOCK)
            if after_end is not None and _plausible(reader.read(after_end, BLOCK), strict=False):
                pos, joined = after_end, True
                continue
            nxt = reader.next_header(pos + BLOCK)
            if nxt is None and not seen_header:  # zeros, then no tar at all (an ISO image)
                iso = reader.read(0x8001, 5) == b"CD001"
                detail = "an ISO 9660 image, not a tar" if iso else "no tar header after zeros"
                yield TarProblem("not_a_tar", 0, reader.size, detail)
                return
            if nxt is None:
                if not reader.all_zero_from(pos):
                    yield TarProblem(
                        Reason.TRAILING_DATA,
                        pos,
                        reader.size,
                        f"bytes {pos}-{reader.size} after the end-of-archive marker hold "
                        "no tar member",
                    )
                return
            # Data after the end marker (archives joined with `cat`): read on.
            pos, joined = nxt, True
            continue
        if not _plausible(block, strict=False):
            nxt = reader.next_header(pos + BLOCK)
            end = reader.size if nxt is None else nxt
            if not seen_header and nxt is None:
                yield TarProblem("not_a_tar", 0, reader.size, _not_a_tar(block))
                return
            name = block[0:100].split(b"\x00", 1)[0] or None
            yield TarProblem(
                Reason.DAMAGED_HEADER,
                pos,
                end,
                f"damaged tar header at byte {pos} (bad checksum); skipped bytes "
                f"{pos}-{end} to the next valid header"
                + ("" if nxt is not None else " (none: the rest of the file)"),
                # one member in a ustar archive (the next ustar header is the next
                # member's); in a v7 one (no magic to find) the members skipped are unknown
                # (the first header: its own magic, or the next one's, tells)
                headers=1 if ustar or block[257:262] == b"ustar" else None,
                probable_name=name,
            )
            long_name, long_link, pax = None, None, {}
            if nxt is None:
                return
            pos = nxt
            continue

        seen_header = True
        ustar = ustar or block[257:262] == b"ustar"
        typeflag = block[156]
        size = _octal(block[124:136]) or 0
        data_at = pos + BLOCK
        after = data_at + _padded(size)
        if typeflag in (_GNU_LONGNAME, _GNU_LONGLINK, _PAX_HEADER, _PAX_GLOBAL):
            if data_at + size > reader.size:
                yield _cut_in_header(pos, reader.size)
                return
            if size > max_meta_bytes:
                yield TarProblem(
                    "oversized_header",
                    pos,
                    after,
                    f"extended header of {size} bytes at byte {pos} (limit {max_meta_bytes}); "
                    "skipped, the next member keeps its short name",
                )
            else:
                data = reader.read(data_at, size)
                if typeflag == _GNU_LONGNAME:
                    long_name = data.split(b"\x00", 1)[0]
                elif typeflag == _GNU_LONGLINK:
                    long_link = data.split(b"\x00", 1)[0]
                elif typeflag == _PAX_HEADER:
                    pax = _pax_records(data)
                elif typeflag == _PAX_GLOBAL:
                    global_pax.update(_pax_records(data))
            pos = after
            continue

        name = _header_name(block)
        if long_name is not None:
            name = long_name
        merged = {**global_pax, **pax}
        if b"path" in merged:
            name = merged[b"path"]
        # a size of decimal digits only: int() reads "-1536", "+5" and "1_0" too, and a
        # negative size took the scan back to this header, for ever (GNU tar refuses it
        # and reads on with the header's own size, as here)
        if _DECIMAL.fullmatch(merged.get(b"size", b"")):
            size = int(merged[b"size"])
            after = data_at + _padded(size)
        # GNU tar's sparse files in PAX form (formats 0.x and 1.0): the data is chunks
        # without their holes (1.0: after a map), not the file; the real name is a record
        sparse = any(k.startswith(b"GNU.sparse.") for k in merged)
        if sparse and b"GNU.sparse.name" in merged:
            name = merged[b"GNU.sparse.name"]
        link = None
        if typeflag == ord("1"):
            link = merged.get(b"linkpath") or long_link or block[157:257].split(b"\x00", 1)[0]
        long_name, long_link, pax = None, None, {}
        if sparse:
            kind = _KIND_NAMES[ord("S")]
        elif typeflag in _FILE_TYPES:
            kind = "file"
        elif typeflag in (_DIR_TYPE, _GNU_DUMPDIR):
            kind = "directory"
        else:
            kind = _KIND_NAMES.get(typeflag, f"member of unknown type {chr(typeflag)!r}")
            if typeflag in (ord("1"), ord("2")):
                size = 0  # links carry no data, whatever the size field says
                after = data_at
        if typeflag == ord("S") and block[482]:  # old GNU sparse: its map runs on
            data_at = _after_sparse_map(reader, data_at)  # in blocks before the data
            after = data_at + _padded(size)
        if kind in ("file", "directory") and data_at + size > reader.size:
            yield TarMember(name, kind, data_at, size, pos)
            yield TarProblem(
                "truncated",
                pos,
                reader.size,
                f"the archive ends inside member data at byte {reader.size} "
                f"({data_at + size - reader.size} bytes missing)",
            )
            return
        if after > reader.size:  # cut in the padding after the data: no tar ends there
            yield TarMember(name, kind, data_at, size, pos, link, joined)
            yield TarProblem(
                "truncated",
                pos,
                reader.size,
                f"the archive ends inside the padding after a member's data at byte "
                f"{reader.size} (not a whole 512-byte block: cut, e.g. by `head -c` or "
                "`split -b`)",
            )
            return
        yield TarMember(name, kind, data_at, size, pos, link, joined)
        pos, joined = after, False


def _after_sparse_map(reader: _Reader, pos: int) -> int:
    """Where an old GNU sparse member's data starts: after the extension blocks of its
    map (21 entries a block, then a flag at byte 504 set while another block follows).
    GNU tar writes them when a file has more than the header's four holes."""
    while True:
        block = reader.read(pos, BLOCK)
        pos += BLOCK
        if len(block) < BLOCK or not block[504]:
            return pos


def files_before(fileobj: IO[bytes], end: int) -> dict[bytes, tuple[int, int]]:
    """The regular files of a tar whose headers lie before byte ``end``, by stored
    name: (data offset, size). Read again from the headers when the first hard link
    comes (the scan reads by offset, so the caller's scan goes on where it was)."""
    files = {}
    for item in scan_tar(fileobj):
        if isinstance(item, TarMember):
            if item.header_offset >= end:
                break
            if item.is_file:
                files[item.raw_name] = (item.offset, item.size)
    return files


#: Files an operating system adds beside a user's files, never a sample's member.
_OS_FILES = frozenset(
    {".ds_store", "thumbs.db", "ehthumbs.db", "ehthumbs_vista.db", "desktop.ini", "icon\r"}
)
#: Folders an operating system keeps beside a user's files (macOS' zip folder; on a
#: Windows-formatted SD card or USB stick, the volume's and the recycle bin's).
_OS_FOLDERS = frozenset({"__macosx", "system volume information", "$recycle.bin"})


def is_os_folder(name: str) -> bool:
    """Whether a folder's name is an operating system's (:data:`_OS_FOLDERS`)."""
    return name.lower() in _OS_FOLDERS


def is_os_metadata(name: str) -> bool:
    """Whether a member is an operating system's file: macOS AppleDouble ``._NAME``
    (bsdtar on macOS writes one before each file), ``.DS_Store``, a ``__MACOSX/``
    folder, Windows' ``Thumbs.db``, ``ehthumbs.db`` and ``desktop.ini``, anything in
    ``System Volume Information/`` or ``$RECYCLE.BIN/`` (an SD card's)."""
    parts = name.split("/")
    base = parts[-1]
    return (
        base.startswith("._")
        or base.lower() in _OS_FILES
        or any(is_os_folder(p) for p in parts[:-1])
    )


# WebDataset's convention: the key is the path up to the first dot of the basename.
_KEY_EXT = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


def split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name. A leading ``./`` (what ``tar -C dir .``
    writes) is dropped. Names that do not follow the WebDataset convention (hidden
    names, no extension) still get a key, the name up to its last dot, so that the
    sample is listed (as an error) rather than lost."""
    while name.startswith("./"):
        name = name[2:]
    match = _KEY_EXT.match(name)
    if match is not None:
        return match.group(1), match.group(2).lower()
    folder, slash, base = name.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:
        return name, ext.lower() if dot else ""
    return folder + slash + stem, ext.lower()


def decode_name(raw: bytes, fallback: str | None) -> tuple[str, str | None]:
    """A member name as text, and a problem if it is not UTF-8 (nor ``fallback``)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    if fallback:
        try:
            return raw.decode(fallback), None
        except UnicodeDecodeError:
            pass
    shown = raw.decode("utf-8", "backslashreplace")
    hint = (
        f" nor {fallback}"
        if fallback
        else "; set input.name_encoding to read it (cp1252 for names from Windows tools, "
        "shift_jis for Japanese ones, latin-1 for old GNU tars)"
    )
    return shown, f"member name {raw!r} is not UTF-8{hint}"
