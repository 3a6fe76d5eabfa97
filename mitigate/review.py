"""Tools that work on a finished run's output: read its manifest, scores, embeddings and
images back, and render a labeller's contact sheet.

Used by ``mitigate calibrate`` and ``mitigate select``. Nothing here imports Beam; file
access goes through an ``opener`` (a function from path to binary file object) so the
command line can pass Beam's filesystems for ``gs://`` and friends.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import io
import itertools
import json
import os
import unicodedata
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import yaml
from PIL import ImageFilter

from mitigate import layout
from mitigate.decode import open_image, viewable_rgb
from mitigate.output import record_from_row
from mitigate.samples import Opener, SampleReader
from mitigate.table_rows import csv_dialect, excel_sep
from mitigate.text import ENCODING_NAMES, text_encoding

# "yes"/"no" are refused: whether "yes" means "harmful" or "fine to keep" depends on the
# question the labeller was asked, and a silent guess flips every label.
# "1.0"/"0.0": a label column pandas wrote as floats (a column with a gap)
_TRUE = {"1", "1.0", "true", "harmful", "positive"}
_FALSE = {"0", "0.0", "false", "benign", "negative"}
LABEL_VALUES = "1/true/harmful/positive (harmful) or 0/false/benign/negative (benign)"
_AMBIGUOUS = {"yes", "y", "no", "n"}


def manifest_parts(out_dir: str | Path) -> list[Path]:
    """The run's manifest parts, checked whole before a tool reads them: each a Parquet
    file (its footer read), and, where the run's ``summary.json`` says how many rows it
    wrote, that many rows in all. A part deleted, cut or copied in from a smaller run
    stops the tool naming it, rather than leaving its samples out of a calibration, a
    selection, a probe or a redecided output (helper-34: a redecide dropped a whole
    input file without a word)."""
    import pyarrow.parquet as pq

    parts = sorted(Path(out_dir, layout.MANIFEST).glob(layout.MANIFEST_PATTERN))
    if not parts:
        raise FileNotFoundError(f"{out_dir} has no manifest (manifest/part-*.parquet)")
    rows = 0
    for part in parts:
        try:
            rows += pq.ParquetFile(part).metadata.num_rows
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            raise ValueError(f"{part}: not a readable manifest part ({exc})") from None
    expected, sources = _summary_rows(out_dir)
    if expected is not None and rows != expected:
        gone = _missing_parts([p.stem for p in parts], sources)
        which = f": {', '.join(gone[:3])}{', ...' if len(gone) > 3 else ''} missing" if gone else ""
        raise ValueError(
            f"{out_dir}: its manifest parts hold {rows:,} rows, its summary.json says the run "
            f"wrote {expected:,}: a part is missing or not this run's ({len(parts)} found"
            f"{which})"
        )
    return parts


def _missing_parts(names: Sequence[str], sources: int | None) -> list[str]:
    """Part names a run wrote that ``names`` lack: each input's first part (one an input,
    ``sources`` of them) and the blocks before a block that is there."""
    have = set(names)
    gone = [layout.part_name(i) for i in range(sources or 0) if layout.part_name(i) not in have]
    for name in names:
        ordinal, _, block = name.removeprefix("part-").partition("_")
        if block.isdigit() and ordinal.isdigit():
            for b in range(1, int(block)):
                if layout.part_name(int(ordinal), b) not in have:
                    gone.append(layout.part_name(int(ordinal), b))
    return sorted(set(gone))


def inside_input_folder(out: str | Path, sources: Sequence[str]) -> str | None:
    """The folder input of ``sources`` (a run's, as its summary lists them: a folder
    ends in ``/``) that ``out`` lies in, or None: the next run of that folder would read
    what is written there as samples (helper-40: a redecide's config.yaml and summary
    became five missing_image samples)."""
    if "://" in str(out):
        return None
    target = os.path.abspath(out)
    for source in sources:
        if not source.endswith("/") or "://" in source:
            continue
        folder = os.path.abspath(source)
        if target == folder or target.startswith(folder.rstrip(os.sep) + os.sep):
            return source
    return None


def run_inputs(out_dir: str | Path) -> list[str]:
    """The inputs a finished run read: its manifest's sources (none where it has no
    readable manifest; the tool reading the run then names why)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    found: set[str] = set()
    for part in sorted(Path(out_dir, layout.MANIFEST).glob(layout.MANIFEST_PATTERN)):
        try:
            column = pq.read_table(part, columns=["source"]).column("source")
        except (OSError, ValueError, KeyError):
            return []
        found.update(s for s in pc.unique(column).to_pylist() if isinstance(s, str))
    return sorted(found)


def _summary_rows(out_dir: str | Path) -> tuple[int | None, int | None]:
    """``manifest_rows`` and the number of ``sources`` of the run's summary.json; None
    without one (a run stopped before it, an older layout)."""
    try:
        summary = json.loads(Path(out_dir, layout.SUMMARY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, None
    summary = summary if isinstance(summary, dict) else {}
    rows, sources = summary.get("manifest_rows"), summary.get("sources")
    return (rows if isinstance(rows, int) else None), (
        sources if isinstance(sources, int) else None
    )


def load_manifest(out_dir: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """All manifest rows of a run, in part order (input order); every column without
    ``columns``."""
    from mitigate.runtable import RunTable

    return RunTable(out_dir, columns).table


def run_config(out_dir: str | Path) -> dict[str, Any]:
    """A run's effective ``config.yaml`` as a mapping whose ``filters`` is a list of
    mappings; ValueError naming the file where it is not (an edited, cut or foreign
    file: a parser's or an AttributeError's message named nothing)."""
    path = Path(out_dir, layout.CONFIG)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path}: not the run's config (not YAML: {first})") from None
    filters = config.get("filters", []) if isinstance(config, dict) else None
    if not isinstance(filters, list) or not all(isinstance(f, dict) for f in filters):
        raise ValueError(f"{path}: not the run's config (no mapping with a filters list)")
    return config


def run_filter_config(out_dir: str | Path, filter_id: str) -> dict[str, Any]:
    """The effective config entry of ``filter_id`` in a run's ``config.yaml``."""
    if not Path(out_dir, layout.CONFIG).is_file():
        raise FileNotFoundError(
            f"{out_dir}: not the output folder of a finished run (it has no {layout.CONFIG}); "
            "pass the folder that `mitigate run --output` wrote"
        )
    config = run_config(out_dir)
    for entry in config.get("filters", []):
        if (entry.get("id") or entry["name"]) == filter_id:
            return entry
    ids = [e.get("id") or e["name"] for e in config.get("filters", [])]
    raise KeyError(f"run in {out_dir} has no filter {filter_id!r}; it has {ids}")


def read_labels(path: str | Path) -> dict[str, bool]:
    """``key,label`` CSV (header required); label 1/0, true/false, harmful/benign,
    positive/negative (any case). A bad row raises ValueError naming its line."""
    out: dict[str, bool] = {}
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"{path}: no such labels file (a key,label CSV, e.g. the labels.csv that "
            "`mitigate select`'s contact sheet downloads)"
        )
    # a spreadsheet's "CSV UTF-8" export starts with a byte-order mark, its "Unicode
    # Text" is UTF-16 with one, tab-separated: the mark names the codec, the header
    # line the delimiter
    with open(path, "rb") as raw:
        codec = text_encoding(raw.read(4))
    with open(path, newline="", encoding=codec) as f:
        try:
            header = f.readline()
            sep = excel_sep(header)  # Excel's "sep=;" line before the header
            header = f.readline() if sep is not None else header
            rows = itertools.chain([header], f)
            _read_label_rows(csv.DictReader(rows, **csv_dialect(header, sep)), path, out)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not {ENCODING_NAMES[codec]} text ({exc})") from None
    return out


def _read_label_rows(reader: csv.DictReader, path: str | Path, out: dict[str, bool]) -> None:
    """Rows into ``out``; a key labelled twice alike is one label, twice unalike an
    error naming both lines (the last one won, silently: helper-34 flipped 50 of 146
    positives so). Header names match whatever their case and spaces (``Key, Label``)."""
    if reader.fieldnames:
        reader.fieldnames = [(n or "").strip().lower() for n in reader.fieldnames]
    if not reader.fieldnames or not {"key", "label"} <= set(reader.fieldnames):
        raise ValueError(f"{path}: needs a header with columns key,label")
    first: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not (row["key"] or "").strip() and not (row["label"] or "").strip():
            continue  # a spreadsheet's blank row (",")
        value = (row["label"] or "").strip().lower()
        if value not in _TRUE | _FALSE:
            hint = " (ambiguous: say harmful or benign)" if value in _AMBIGUOUS else ""
            raise ValueError(
                f"{path}:{line}: label {row['label']!r} is not one of {LABEL_VALUES}{hint}"
            )
        key, label = row["key"], value in _TRUE
        if key[:1] == "'" and key[1:2] in _AFTER_MARK:  # written by csv_safe
            key = key[1:]
        if key in out and out[key] != label:
            said = "harmful" if out[key] else "benign"
            raise ValueError(
                f"{path}:{line}: key {key!r} is labelled {row['label']!r} here and {said} "
                f"at line {first[key]}: keep the one that holds"
            )
        first.setdefault(key, line)
        out[key] = label


#: A cell a spreadsheet takes for a formula when it starts so (``=cmd|' /C calc'!A0``).
FORMULA_STARTS = frozenset("=+-@\t\r")
#: What follows a ``'`` that :func:`csv_safe` wrote: a formula's start, or a key's own
#: ``'`` before one (``'-5``, which read back as ``-5``: another sample's key)
_AFTER_MARK = FORMULA_STARTS | {"'"}


def csv_safe(text: str) -> str:
    """A key or path as a CSV cell a spreadsheet shows as text: a leading ``'`` where it
    would start a formula (keys come from the dataset: helper-44), which
    :func:`read_labels` takes off again."""
    mark = text[:1] in FORMULA_STARTS or (text[:1] == "'" and text[1:2] in _AFTER_MARK)
    return "'" + text if mark else text


def key_forms(key: str) -> list[str]:
    """``key`` as written, then its NFC and NFD forms where they differ: a label saved on
    another system (macOS writes ``café`` decomposed) names the same sample."""
    forms = [key]
    for form in ("NFC", "NFD"):
        other = unicodedata.normalize(form, key)
        if other not in forms:
            forms.append(other)
    return forms


def all_key_forms(keys: Iterable[str]) -> list[str]:
    """Every :func:`key_forms` of ``keys``: what to look a run's keys up by."""
    return [form for key in keys for form in key_forms(key)]


def run_key(key: str, known: Container[str]) -> str | None:
    """The run's key a label's ``key`` names (itself, else its other normal form)."""
    return next((form for form in key_forms(key) if form in known), None)


def resolve_labels(
    labels: dict[str, bool], known: Container[str]
) -> tuple[dict[str, str], list[str]]:
    """Each label's run key (:func:`run_key`), one label a sample: the same key in two
    normal forms labelled alike counts once, unalike is a ValueError naming both (it
    counted as a positive and a negative, helper-44); and the labels no key matches."""
    found: dict[str, str] = {}
    first: dict[str, str] = {}  # run key -> the label that named it first
    missing = []
    for key in labels:
        at = run_key(key, known)
        if at is None:
            missing.append(key)
        elif at not in first:
            first[at], found[key] = key, at
        elif labels[first[at]] != labels[key]:
            raise ValueError(
                f"labels {first[at]!r} and {key!r} name one sample, {at!r} (one key in two "
                "Unicode forms), and disagree: keep the one that holds"
            )
    return found, missing


def rows_of_labels(keys: Any, wanted: Iterable[str]) -> Any:
    """Rows of a run's keys (:class:`mitigate.runtable.ArrowKeys`) that ``wanted`` name:
    a key as written, else its other normal form (a run may hold both as two samples)."""
    wanted = list(wanted)
    exact = keys.rows_of(wanted)
    held = {keys[i] for i in exact.tolist()}
    others = [f for k in wanted if k not in held for f in key_forms(k)[1:]]
    return np.union1d(exact, keys.rows_of(others)) if others else exact


def read_image_bytes(row: dict[str, Any], opener: Opener) -> bytes:
    """A sample's original image bytes, from its tar member, its file or its image path;
    ValueError where they are no longer those the run hashed (an input rewritten since:
    a contact sheet showed the new image under the old sample's score, helper-34)."""
    record = record_from_row(row, [])
    with SampleReader(opener) as reader:
        data = reader.image(record)
    if record.sha256 is not None and hashlib.sha256(data).hexdigest() != record.sha256:
        raise ValueError(
            f"{record.source}: {record.key}: the image changed since the run (its sha256 "
            f"is no longer {record.sha256[:12]}...)"
        )
    return data


def thumbnail(data: bytes, size: int = 160, blur: bool = False) -> str:
    """A small JPEG as a data: URI (blurred when asked); empty string if undecodable."""
    try:
        image = open_image(data)  # the accepted formats only, as in the run
        # as the run saw it: oriented, alpha on white, 16-bit scaled (helper-48)
        image = viewable_rgb(image, size)
        image.thumbnail((size, size))
    except Exception:  # anything a decoder raises (Pillow's SyntaxError, struct.error):
        return ""  # no picture for that card, as the run made the sample a decode_error
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(radius=max(4, size // 16)))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@dataclass(frozen=True)
class SheetEntry:
    key: str
    score: float | None
    caption: str
    note: str
    image_uri: str  # data: URI, or "" when the image could not be read


_SHEET_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
.card{border:1px solid #ccc;border-radius:6px;padding:8px;font-size:12px}
.card img{width:100%;height:160px;object-fit:contain;background:#eee;cursor:pointer}
.card img.hide{filter:blur(14px);clip-path:inset(0)}
.card .cap{height:3em;overflow:hidden}
.card.pos{outline:3px solid #c0392b}.card.neg{outline:3px solid #27ae60}
button{margin:2px}
"""

_SHEET_JS = """
const labels = new Map();  // not an object: a key "__proto__" was lost (helper-44)
function mark(key, value, el) {
  labels.set(key, value);
  const card = el.closest('.card');
  card.classList.toggle('pos', value === 1);
  card.classList.toggle('neg', value === 0);
}
// a key as a CSV cell: a ' before one a spreadsheet would take for a formula (= + - @),
// quoted where it holds a comma, a quote, a line break or edge spaces
function cell(s) {
  if (/^([=+\\-@\\t\\r]|'[=+\\-@\\t\\r'])/.test(s)) s = "'" + s;  // as csv_safe
  return /[",\\r\\n]|^\\s|\\s$/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
}
function labelsCsv() {
  const rows = ['key,label'].concat(Array.from(labels, ([k, v]) => `${cell(k)},${v}`));
  return rows.join('\\n') + '\\n';
}
function download() {
  const blob = new Blob([labelsCsv()], {type: 'text/csv'});
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = 'labels.csv';
  a.click();
}
document.querySelectorAll('img.hide').forEach(i => i.addEventListener(
  'click', () => i.classList.toggle('hide')));
"""


def contact_sheet(title: str, intro: str, entries: Sequence[SheetEntry], blurred: bool) -> str:
    """A self-contained HTML page of thumbnails with harmful/benign buttons that export
    ``labels.csv`` for ``mitigate calibrate --labels`` (the active-learning loop)."""
    cards = []
    for e in entries:
        score = "" if e.score is None else f"{e.score:.4f}"
        key = html.escape(e.key, quote=True)
        img = (
            f'<img src="{e.image_uri}" alt="{key}" class="{"hide" if blurred else ""}">'
            if e.image_uri
            else '<div class="cap">(image unreadable)</div>'
        )
        key_js = html.escape(json.dumps(e.key), quote=True)
        cards.append(
            f'<div class="card" data-key="{key}">{img}<div><b>{key}</b> score {score}</div>'
            f'<div class="cap">{html.escape(e.caption)}</div><div>{html.escape(e.note)}</div>'
            f'<button onclick="mark({key_js},1,this)">harmful</button>'
            f'<button onclick="mark({key_js},0,this)">benign</button></div>'
        )
    blur_note = " Images are blurred; click one to reveal it." if blurred else ""
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_SHEET_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}{blur_note}</p>"
        "<p><button onclick='download()'>Download labels.csv</button></p>"
        f"<div class='grid'>{''.join(cards)}</div><script>{_SHEET_JS}</script></body></html>"
    )


def calibration_data(
    out_dir: str | Path, filter_id: str, labels: dict[str, bool]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """(labelled scores, labels, every stored score, labelled keys without a score).

    The manifest is read a part at a time: every row's score is kept (8 bytes a row:
    the drop fraction is over all of them), keys only where labelled (every key in a
    dict cost ~0.15 KB a row). Error rows are no sample of the run: a ``duplicate_key``
    copy was scored, then refused, and its key names the sample the run holds (whose
    score a label is about); nor does the drop fraction count them."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = f"score_{filter_id}"
    wanted = pa.array(sorted(set(all_key_forms(labels))), type=pa.string())
    by_key: dict[str, float] = {}
    every: list[np.ndarray] = []
    from mitigate.runtable import require_columns

    for part in manifest_parts(out_dir):
        require_columns(part, ["key", column, "state"])
        table = pq.read_table(part, columns=["key", column, "state"])
        scores = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        error = pc.fill_null(pc.equal(table.column("state"), "error"), False)
        finite = np.isfinite(scores) & ~error.to_numpy(zero_copy_only=False)
        every.append(scores[finite])
        hits = pc.is_in(table.column("key"), value_set=wanted).to_numpy(zero_copy_only=False)
        at = np.flatnonzero(hits & finite)
        keys = table.column("key").take(pa.array(at, type=pa.int64())).to_pylist()
        by_key.update(zip(keys, scores[at].tolist(), strict=True))
    at, missing = resolve_labels(labels, by_key)
    return (
        np.array([by_key[run] for run in at.values()], dtype=np.float64),
        np.array([labels[k] for k in at], dtype=bool),
        np.concatenate(every) if every else np.empty(0, dtype=np.float64),
        sorted(missing),
    )
