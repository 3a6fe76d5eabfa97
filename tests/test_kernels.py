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
