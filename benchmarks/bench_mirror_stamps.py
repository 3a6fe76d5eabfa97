"""Letters, sign-language letters and road signs of Tux Paint's stamps (Debian's
tuxpaint-stamps, /usr/share/tuxpaint/stamps) through a whole run with the default
``dedup.mirror: true`` and with ``false``: which stamps are dropped as near duplicates
of which (b of d, q of p, ...). Every stamp is a distinct image; its caption is the
stamp's own description ("The letter b.").

    .venv/bin/python benchmarks/bench_mirror_stamps.py [--all] [--stamps DIR] [--keep-output DIR]

``--all``: every stamp, not only the letters and signs (what mirror off costs: the
``_mirror`` stamps and other flipped versions are then kept).

Prints each setting's merges (``dropped <- kept``, with the captions) and a summary
line; BENCHMARKS.md, "Mirror matching off", has the numbers.
"""

from __future__ import annotations

import argparse
import io
import tarfile
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from mitigate.config import validate_config
from mitigate.pipeline.run import run

STAMPS = Path("/usr/share/tuxpaint/stamps")
#: the letter and sign stamps: every alphabet (filled and outlined, upper and lower
#: case), American Sign Language letters, road signs
FOLDERS = ("symbols/alphabets", "town/roadsigns")


def _caption(png: Path) -> str:
    txt = png.with_suffix(".txt")
    if txt.is_file():
        return txt.read_text(encoding="utf-8", errors="replace").splitlines()[0].strip()
    return png.stem


def build_shard(stamps: Path, path: Path, folders: tuple[str, ...]) -> dict[str, str]:
    """One tar of every PNG stamp under ``folders``; {key: caption}."""
    captions = {}
    with tarfile.open(path, "w") as tar:
        for folder in folders:
            for png in sorted((stamps / folder).rglob("*.png")):
                rel = png.relative_to(stamps).with_suffix("")
                key = str(rel).replace("/", "-").replace(".", "_")
                captions[key] = _caption(png)
                for name, body in (
                    (f"{key}.png", png.read_bytes()),
                    (f"{key}.txt", captions[key].encode()),
                ):
                    info = tarfile.TarInfo(name)
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
    return captions


def merges(shard: Path, out: Path, mirror: bool) -> list[tuple[str, str, int, float]]:
    config = validate_config(
        {
            "input": {"paths": [str(shard)]},
            "output": {"path": str(out)},
            "dedup": {"mirror": mirror, "partition": "none"},
            "filters": [],
        }
    )
    run(config)
    rows = pq.read_table(out / "manifest").to_pylist()
    return sorted(
        (r["key"], r["duplicate_of"], r["distance"], r["verify_score"])
        for r in rows
        if r["reason"] == "near_duplicate"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stamps", type=Path, default=STAMPS)
    ap.add_argument("--keep-output", type=Path, default=None)
    ap.add_argument("--all", action="store_true", help="every stamp, not only FOLDERS")
    args = ap.parse_args()
    folders = (".",) if args.all else FOLDERS
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep_output or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        captions = build_shard(args.stamps, work / "stamps.tar", folders)
        print(f"{len(captions)} stamps under {', '.join(folders)} of {args.stamps}")
        got = {}
        for mirror in (True, False):
            got[mirror] = merges(work / "stamps.tar", work / f"mirror_{mirror}", mirror)
            print(f"\ndedup.mirror: {str(mirror).lower()}: {len(got[mirror])} stamps dropped")
            for key, kept, dist, score in got[mirror]:
                print(
                    f"  {captions[key]!r} <- {captions[kept]!r}  "
                    f"({key} <- {kept}, {dist} bits, score {score:.3f})"
                )
        gone = {m[:2] for m in got[True]} - {m[:2] for m in got[False]}
        new = {m[:2] for m in got[False]} - {m[:2] for m in got[True]}
        print(
            f"\nsummary: {len(captions)} stamps; dropped with mirror true "
            f"{len(got[True])}, with mirror false {len(got[False])}; "
            f"{len(gone)} merges only with mirror true, {len(new)} only with false"
        )


if __name__ == "__main__":
    main()
