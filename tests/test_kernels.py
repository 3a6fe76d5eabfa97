"""Loading the numba kernel modules where numba has no writable cache folder
(mitigate.kernels): a folder under the temporary folder, else numpy with a warning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from mitigate import kernels, sigmake
from mitigate.decode import DecodedImage, decode_image

PHOTO = Path(__file__).resolve().parent.parent / "data" / "near_eval" / "animals-donkey.jpg"

# numba's cache locators restricted as a read-only install sees them: the package folder
# and the user's cache folder unwritable, NUMBA_CACHE_DIR unset
SETUP = """
import json, logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
from numba.core import caching, config
caching.CacheImpl._locator_classes = {locators}
config.CACHE_DIR = ""
import numpy as np
from mitigate import kernels, localscore, sigmake, verify
from mitigate.decode import decode_image
from mitigate.neardup import compiled
"""


def _run(tmp_path: Path, locators: str, body: str) -> tuple[dict, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["TMPDIR"] = str(tmp_path)
    script = SETUP.format(locators=locators) + body
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


def test_kernels_are_cached_under_the_temp_folder_where_numba_has_no_folder(
    tmp_path: Path,
) -> None:
    got, log = _run(
        tmp_path,
        "[caching.UserProvidedCacheLocator]",
        "y = np.arange(2 * 16 * 16, dtype=np.float32).reshape(2, 16, 16)\n"
        "same = np.array_equal(localscore.normalise(y, 4.0), localscore.normalise(y, 4.0, False))\n"
        "print(json.dumps({'loaded': localscore._kernels() is not None, 'same': bool(same),\n"
        "    'folder': str(kernels.fallback_cache_dir())}))\n",
    )
    assert got["loaded"] and got["same"]
    folder = Path(got["folder"])
    assert folder.parent == tmp_path
    assert any(folder.rglob("*.nbi")), "no cache index written in the fallback folder"
    assert "its compiled kernels are cached in" in log


def test_without_any_cache_folder_every_kernel_falls_back_to_numpy(tmp_path: Path) -> None:
    (tmp_path / "fallback").write_text("a file where the folder would go")
    data = PHOTO.read_bytes()
    decoded = decode_image(data, max_pixels=10**8)
    assert isinstance(decoded, DecodedImage)
    got, log = _run(
        tmp_path,
        "[caching.UserProvidedCacheLocator]",
        "kernels.fallback_cache_dir = lambda: __import__('pathlib').Path("
        f"{str(tmp_path / 'fallback')!r})\n"
        f"d = decode_image(open({str(PHOTO)!r}, 'rb').read(), max_pixels=10**8)\n"
        "s = verify.pair_scores([0, 0], [0, 1], [d.signature, d.signature])\n"
        "print(json.dumps({'sig': d.signature.hex(), 'scores': s.tolist(),\n"
        "    'sigkernel': sigmake._kernel() is not None,\n"
        "    'scorekernel': localscore._kernels() is not None,\n"
        "    'search': compiled.compiled_available()}))\n",
    )
    assert got == {
        "sig": decoded.signature.hex(),  # numpy's signature: the kernel's bytes
        "scores": [0.0, 0.0],
        "sigkernel": False,
        "scorekernel": False,
        "search": False,
    }
    assert "signatures are computed in numpy" in log
    assert "set NUMBA_CACHE_DIR" in log


def test_the_fallback_folder_is_per_user_under_the_temp_folder() -> None:
    folder = kernels.fallback_cache_dir()
    assert folder.parent == Path(tempfile.gettempdir())
    assert folder.name == f"mitigate-numba-cache-{os.getuid()}"
    assert sigmake._kernel() is not None  # here numba has its own folder


def test_kernels_turned_off_give_their_numpy_references_and_back_on() -> None:
    from mitigate import localscore, thumbnail
    from mitigate.neardup import compiled

    try:
        kernels.set_compiled(False)
        assert not kernels.compiled()
        assert sigmake._kernel() is None and localscore._kernels() is None
        assert thumbnail._kernel() is None and not compiled.compiled_available()
        off = decode_image(PHOTO.read_bytes(), max_pixels=10**8)
    finally:
        kernels.set_compiled(True)
    assert sigmake._kernel() is not None and localscore._kernels() is not None
    assert thumbnail._kernel() is not None and compiled.compiled_available()
    on = decode_image(PHOTO.read_bytes(), max_pixels=10**8)
    assert isinstance(off, DecodedImage) and isinstance(on, DecodedImage)
    assert (off.signature, off.phash, off.phash_mirror) == (on.signature, on.phash, on.phash_mirror)


RUN_SAMPLE = """
import json, sys
sys.path.insert(0, {scripts!r})
from mitigate import kernels
kernels.COMPILED_MIN_SAMPLES = {threshold}
from mitigate.cli import main
from output_digest import digest
args = ["--verbose", "run", "--config", {config!r}, "--output", {out!r}, "--overwrite"]
assert main(args) == 0
files = digest(__import__("pathlib").Path({out!r}))
print(json.dumps({{"numba": "numba" in sys.modules, "digest": files}}))
"""


def test_a_small_run_does_not_load_numba_and_writes_what_a_compiled_run_writes(
    tmp_path: Path,
) -> None:
    """The bundled sample (49 samples) is below ``COMPILED_MIN_SAMPLES``: its run takes
    the kernels' numpy references and never imports numba; with the bar at 0 the same
    run loads the compiled kernels, and every output file is the same."""
    repo = Path(__file__).resolve().parent.parent
    got = {}
    for threshold in (kernels.COMPILED_MIN_SAMPLES, 0):
        out = tmp_path / "out"  # the same folder: the runs' config.yaml name it
        script = RUN_SAMPLE.format(
            scripts=str(repo / "scripts"),
            threshold=threshold,
            config=str(repo / "configs" / "default.yaml"),
            out=str(out),
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        got[threshold] = json.loads(done.stdout.strip().splitlines()[-1])
        assert ("numba not loaded" in done.stderr) == (threshold > 0)
    assert got[kernels.COMPILED_MIN_SAMPLES]["numba"] is False
    assert got[0]["numba"] is True
    small, compiled_run = got[kernels.COMPILED_MIN_SAMPLES]["digest"], got[0]["digest"]
    assert len(small) >= 10 and small == compiled_run
    assert any(line.endswith(".tar") for line in small)  # the shards are compared
