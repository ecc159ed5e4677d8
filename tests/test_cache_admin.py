"""Cache management (issue 27.6): `autotransfer cache` lists entries per dataset folder and size with
their last use, `cache clear` removes all or the old ones, a size limit evicts the least recently used
entries, and an entry a process uses is never removed."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import make_imagefolder

import autotransfer.data.cache_index as cache_index
from autotransfer.data.cache_index import clear, enforce_limit, list_cache, parse_age, parse_size
from autotransfer.data.cache_rows import cache_rows
from autotransfer.data.decode_cache import decode_all
from autotransfer.data.images import ResizeRecipe
from autotransfer.data.sources import index_dataset
from autotransfer.errors import AutoTransferError


def _decode(root, size):
    return decode_all(index_dataset(root).paths, ResizeRecipe(size), show_progress=False)


def _in_another_process(isolated_cache, root, size):
    """Decode (build the entry) in a child process that exits: the entry is then in use by nobody."""
    code = (
        "import sys; from pathlib import Path; import autotransfer\n"
        "from autotransfer.data.decode_cache import decode_all\nfrom autotransfer.data.images import ResizeRecipe\n"
        "from autotransfer.data.sources import index_dataset\n"
        "decode_all(index_dataset(sys.argv[1]).paths, ResizeRecipe(int(sys.argv[2])), show_progress=False)"
    )
    env = dict(os.environ, AUTOTRANSFER_CACHE=str(isolated_cache))
    subprocess.run([sys.executable, "-c", code, str(root), str(size)], check=True, env=env, timeout=300)


def _age(isolated_cache, name, seconds_ago):
    marker = isolated_cache / "decoded" / name / cache_index.LAST_USED
    when = time.time() - seconds_ago
    os.utime(marker, (when, when))


@pytest.fixture
def three_entries(tmp_path, isolated_cache):
    """Three datasets decoded by processes that have exited; last used 40, 20 and 1 days ago."""
    names = []
    for i, days in enumerate((40, 20, 1)):
        root = make_imagefolder(tmp_path / f"data{i}", {"a": 3, "b": 3}, seed=i)
        _in_another_process(isolated_cache, root, 16)
        listing = list_cache()
        name = next(e.name for e in listing.entries if e.name not in names)
        names.append(name)
        _age(isolated_cache, name, days * 86400)
    return names


def test_the_listing_names_the_dataset_folder_size_and_last_use(tmp_path, isolated_cache):
    root = make_imagefolder(tmp_path / "data", {"a": 4, "b": 4})
    decoded = _decode(root, 16)
    (isolated_cache / "features" / decoded.location.name / "net").mkdir(parents=True)
    np.save(isolated_cache / "features" / decoded.location.name / "net" / "head.npy", np.zeros((8, 100), np.float32))
    (isolated_cache / "weights").mkdir()
    (isolated_cache / "weights" / "w.safetensors").write_bytes(b"x" * 1000)
    [entry] = list_cache().entries
    assert entry.dataset == str(root) and entry.recipe == "16px-crop-bicubic" and entry.images == 8
    assert entry.decoded_bytes > 8 * 16 * 16 * 3 and entry.feature_bytes >= 8 * 100 * 4
    assert time.time() - entry.last_used < 60 and entry.in_use  # this process holds it
    assert list_cache().other == {"weights": 1000}
    done = subprocess.run(
        [sys.executable, "-c", "from autotransfer.cli import main; main()", "cache", "--json"],
        capture_output=True, text=True, env=dict(os.environ), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["entries"][0]["dataset"] == str(root) and document["never_evicted"] == {"weights": 1000}


def test_opening_an_entry_again_records_its_last_use(tmp_path, isolated_cache):
    root = make_imagefolder(tmp_path / "data", {"a": 3, "b": 3})
    _in_another_process(isolated_cache, root, 16)
    [entry] = list_cache().entries
    _age(isolated_cache, entry.name, 10 * 86400)
    assert time.time() - list_cache().entries[0].last_used > 9 * 86400
    assert _decode(root, 16).cache_hit
    assert time.time() - list_cache().entries[0].last_used < 60


def test_clear_older_than_removes_only_the_old_entries_and_their_features(three_entries, isolated_cache):
    old, middle, recent = three_entries
    (isolated_cache / "features" / old / "net").mkdir(parents=True)
    (isolated_cache / "weights").mkdir()
    (isolated_cache / "weights" / "w.safetensors").write_bytes(b"x")
    removal = clear(older_than=parse_age("30d"))
    assert [e.name for e in removal.removed] == [old] and removal.freed > 0
    assert not (isolated_cache / "features" / old).exists()
    assert [e.name for e in list_cache().entries] == [middle, recent]
    assert [e.name for e in clear().removed] == [middle, recent] and list_cache().entries == []
    assert (isolated_cache / "weights" / "w.safetensors").exists()  # never cleared


def test_the_size_limit_evicts_least_recently_used_first(three_entries, isolated_cache):
    old, middle, recent = three_entries
    sizes = {e.name: e.bytes for e in list_cache().entries}
    removal = enforce_limit(limit=sizes[recent] + sizes[middle])
    assert [e.name for e in removal.removed] == [old]
    assert [e.name for e in enforce_limit(limit=1).removed] == [middle, recent]
    assert enforce_limit(limit=None).removed == []  # AUTOTRANSFER_CACHE_LIMIT unset: nothing happens


def test_an_entry_in_use_is_never_removed(three_entries, tmp_path, isolated_cache):
    """This process opens the oldest entry (memory-mapped): neither clear nor the limit removes it."""
    old, middle, recent = three_entries
    decoded = _decode(tmp_path / "data0", 16)  # the files of the oldest entry
    assert decoded.location.name == old and decoded.cache_hit
    _age(isolated_cache, old, 40 * 86400)
    removal = enforce_limit(limit=1)
    assert [e.name for e in removal.removed] == [middle, recent] and [e.name for e in removal.kept_in_use] == [old]
    assert [e.name for e in clear().kept_in_use] == [old]
    assert int(np.asarray(decoded.pixels).sum()) > 0 and list_cache().entries[0].in_use


def test_a_new_entry_beyond_the_limit_evicts_old_ones_but_not_itself(three_entries, tmp_path, monkeypatch):
    old, middle, recent = three_entries
    monkeypatch.setenv("AUTOTRANSFER_CACHE_LIMIT", "1")
    fresh = _decode(make_imagefolder(tmp_path / "fresh", {"a": 3, "b": 3}, seed=9), 16)
    assert [e.name for e in list_cache().entries] == [fresh.location.name]


def test_sizes_and_ages_are_read_or_refused_clearly():
    assert parse_size("50GB") == 50 * 10**9 and parse_size("2 GiB") == 2 * 2**30 and parse_size("1000") == 1000
    assert parse_age("30d") == 30 * 86400 and parse_age("12h") == 12 * 3600
    with pytest.raises(AutoTransferError, match="50 gigs"):
        parse_size("50 gigs")
    with pytest.raises(AutoTransferError, match="--older-than"):
        parse_age("a month")


def test_an_entry_another_process_holds_is_kept_until_that_process_ends(tmp_path, isolated_cache):
    """The lock is across processes: a running fit keeps its entries whatever `cache clear` is asked."""
    root = make_imagefolder(tmp_path / "data", {"a": 3, "b": 3})
    code = (
        "import sys; import autotransfer\nfrom autotransfer.data.decode_cache import decode_all\n"
        "from autotransfer.data.images import ResizeRecipe\nfrom autotransfer.data.sources import index_dataset\n"
        "decode_all(index_dataset(sys.argv[1]).paths, ResizeRecipe(16), show_progress=False)\n"
        "print('ready', flush=True); sys.stdin.readline()"
    )
    env = dict(os.environ, AUTOTRANSFER_CACHE=str(isolated_cache))
    holder = subprocess.Popen([sys.executable, "-c", code, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "ready"
        [entry] = list_cache().entries
        assert entry.in_use and clear().removed == [] and enforce_limit(limit=1).removed == []
    finally:
        holder.communicate("\n", timeout=60)
    assert not list_cache().entries[0].in_use
    assert [e.name for e in clear().removed] == [entry.name]


def test_fit_says_how_much_it_added_in_its_summary_and_log(tmp_path, isolated_cache, monkeypatch):
    import io

    from rich.console import Console

    import autotransfer.cli.fit as cli_module

    before = cache_index.entry_bytes()
    _decode(make_imagefolder(tmp_path / "data", {"a": 3, "b": 3}), 16)
    added = sum(cache_index.entry_bytes().values()) - sum(before.values())
    # another process's entry, written meanwhile into the shared cache: not this run's (the fresh-user trial)
    other = isolated_cache / "decoded" / "0123456789abcdef01234567-16px-crop-bicubic-v9"
    other.mkdir()
    (other / "images.npy").write_bytes(b"x" * 5_000_000)
    screen = io.StringIO()
    monkeypatch.setattr(cli_module, "out", Console(file=screen, width=300))
    (tmp_path / "run").mkdir()
    cli_module.print_cache_growth(before, tmp_path / "run" / "fit.log")
    assert 0 < added < 5_000_000
    expected = f"cache: +{cache_index.format_bytes(added)} of decoded images and features for this run in "
    expected += str(isolated_cache)
    assert expected in screen.getvalue()
    assert expected in (tmp_path / "run" / "fit.log").read_text()


def _forget_source(isolated_cache, name):
    """The header of an entry written before headers named the dataset folder."""
    path = isolated_cache / "decoded" / name / "records.json"
    header = json.loads(path.read_text())
    del header["source"]
    path.write_text(json.dumps(header))


def test_the_listing_names_the_folder_of_an_entry_written_before_headers_did(tmp_path, isolated_cache):
    """Entries from before the header recorded the folder were listed as "(not recorded)" even where the
    folder was known: the same files at another size, or the entry used again."""
    root = make_imagefolder(tmp_path / "data", {"a": 3, "b": 3})
    _in_another_process(isolated_cache, root, 16)
    _in_another_process(isolated_cache, root, 24)
    small, large = sorted(list_cache().entries, key=lambda e: e.recipe)
    _forget_source(isolated_cache, small.name)
    assert {e.dataset for e in list_cache().entries} == {str(root)}  # from the entry of the same files at 24 px
    _forget_source(isolated_cache, large.name)
    assert {e.dataset for e in list_cache().entries} == {""}  # nothing says where they came from
    _decode(root, 16)  # used again: the header names the folder from now on
    assert {e.recipe: e.dataset for e in list_cache().entries} == {small.recipe: str(root), large.recipe: str(root)}
    header = json.loads((isolated_cache / "decoded" / small.name / "records.json").read_text())
    assert header["source"] == str(root) and len(header["records"]) == 6


def test_the_table_has_one_row_per_folder_and_size_and_one_for_unrecorded_folders(tmp_path, isolated_cache):
    """Issue 26's fourth trial: `cache list` showed 36 "(not recorded)" rows, and one folder at one size twice
    (its files changed between runs: an entry per version)."""
    root = make_imagefolder(tmp_path / "data", {"a": 3, "b": 3})
    _in_another_process(isolated_cache, root, 16)
    (root / "a" / "img_0.png").write_bytes((root / "b" / "img_0.png").read_bytes())  # the folder changes
    _in_another_process(isolated_cache, root, 16)
    for i in range(3):  # entries from before headers named their folder, of folders since deleted
        _in_another_process(isolated_cache, make_imagefolder(tmp_path / f"gone{i}", {"a": 2, "b": 2}, seed=i), 16)
    listing = list_cache()
    for entry in listing.entries:
        if "gone" in entry.dataset:
            _forget_source(isolated_cache, entry.name)
    entries = list_cache().entries
    assert len(entries) == 5
    versions, unrecorded = cache_rows(entries)
    assert versions.label == f"{root} (2 versions of its files)" and versions.recipe == "16px-crop-bicubic"
    assert versions.images == 12 and versions.decoded_bytes == sum(e.decoded_bytes for e in entries if e.dataset)
    assert unrecorded.label == "(folder not recorded: 3 entries)" and unrecorded.images == 12
    assert unrecorded.last_used == max(e.last_used for e in entries if not e.dataset)
    done = subprocess.run(
        [sys.executable, "-c", "from autotransfer.cli import main; main()", "cache", "list"],
        capture_output=True, text=True, env=dict(os.environ, COLUMNS="200"), timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("(folder not recorded: 3 entries)") == 1 and "(not recorded)" not in done.stdout
    assert done.stdout.count("16px-crop-bicubic") == 1  # the folder's two versions: one row (long paths fold)
