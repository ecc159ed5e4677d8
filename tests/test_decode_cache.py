"""The decode cache: hit on the second pass, rebuilt when data changes, atomic under concurrency."""

import os
import shutil
import time

import numpy as np
from conftest import colour_image, run_concurrently

from autotransfer.data.decode_cache import decode_all
from autotransfer.data.images import ResizeRecipe
from autotransfer.data.sources import index_dataset


def _decode(root, size=16):
    return decode_all(index_dataset(root).paths, ResizeRecipe(size), show_progress=False)


def test_second_pass_is_a_hit_with_identical_pixels(imagefolder):
    first = _decode(imagefolder)
    second = _decode(imagefolder)
    assert not first.cache_hit and second.cache_hit
    assert isinstance(second.pixels, np.memmap)
    np.testing.assert_array_equal(np.asarray(first.pixels), np.asarray(second.pixels))
    assert first.location == second.location


def test_another_resolution_is_another_entry(imagefolder):
    assert _decode(imagefolder, 16).location != _decode(imagefolder, 24).location


def test_changed_added_or_removed_file_invalidates(imagefolder):
    base = _decode(imagefolder)
    target = imagefolder / "cats" / "img_0.png"
    colour_image(99).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = _decode(imagefolder)
    assert not changed.cache_hit and changed.location != base.location
    colour_image(100).save(imagefolder / "dogs" / "new.png")
    assert not _decode(imagefolder).cache_hit
    (imagefolder / "dogs" / "new.png").unlink()
    assert _decode(imagefolder).cache_hit  # back to the earlier content: that entry is reused


def test_cache_is_safe_to_delete_and_damaged_entries_are_rebuilt(imagefolder, isolated_cache):
    entry = _decode(imagefolder).location
    shutil.rmtree(isolated_cache)
    assert not _decode(imagefolder).cache_hit
    (entry / "records.json").write_text("{ truncated")
    rebuilt = _decode(imagefolder)
    assert not rebuilt.cache_hit and len(rebuilt.records) == 17


def test_failed_files_are_remembered_and_have_no_row(imagefolder):
    (imagefolder / "cats" / "bad.png").write_bytes(b"not a png")
    paths = index_dataset(imagefolder).paths
    decoded = decode_all(paths, ResizeRecipe(16), show_progress=False)
    again = decode_all(paths, ResizeRecipe(16), show_progress=False)
    assert again.cache_hit and decoded.pixels.shape[0] == 17 and len(decoded.records) == 18
    bad = [r for p, r in zip(paths, again.records) if p.name == "bad.png"][0]
    assert bad["reason"].startswith("not an image")


def test_concurrent_builders_leave_one_valid_entry(imagefolder, isolated_cache):
    code = (
        "import sys; from autotransfer.data.sources import index_dataset;"
        "from autotransfer.data.decode_cache import decode_all;"
        "from autotransfer.data.images import ResizeRecipe;"
        "d = decode_all(index_dataset(sys.argv[1]).paths, ResizeRecipe(20), show_progress=False);"
        "print(d.pixels.shape[0], d.pixels.sum())"
    )
    outputs = run_concurrently(code, str(imagefolder), isolated_cache)
    assert len(outputs) == 1 and outputs.pop().startswith("17 ")
    entries = [p for p in (isolated_cache / "decoded").iterdir()]
    assert len(entries) == 1 and not entries[0].name.startswith(".")  # no staging folder left behind
