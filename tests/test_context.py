"""What a run's context does once per run: index and fingerprint the folder; nothing decoded only to count it."""

import pytest
from conftest import SPACE, make_imagefolder

import autotransfer.search.context as context_module
from autotransfer.report.progress import Progress
from autotransfer.search.context import RunContext
from autotransfer.search.settings import SearchSettings
from autotransfer.search.space import load_search_space


@pytest.fixture
def context(tmp_path, isolated_cache, monkeypatch):
    space = tmp_path / "tiny.yaml"
    space.write_text(SPACE)
    data = make_imagefolder(tmp_path / "data", {"a": 6, "b": 6})
    settings = SearchSettings(load_search_space(space), 600.0, tmp_path / "run")
    calls = {"index": 0, "fingerprint": 0}
    real_index, real_fingerprint = context_module.index_dataset, context_module.files_fingerprint

    def counted_index(*args, **kwargs):
        calls["index"] += 1
        return real_index(*args, **kwargs)

    def counted_fingerprint(*args, **kwargs):
        calls["fingerprint"] += 1
        return real_fingerprint(*args, **kwargs)

    monkeypatch.setattr(context_module, "index_dataset", counted_index)
    monkeypatch.setattr(context_module, "files_fingerprint", counted_fingerprint)
    run = RunContext(data, settings, Progress(600.0, verbose=0))
    run.calls = calls
    return run


def test_the_folder_is_indexed_and_fingerprinted_once_per_run(context, monkeypatch):
    import autotransfer.data.decode_cache as decode_cache

    monkeypatch.setattr(decode_cache, "files_fingerprint", lambda paths: pytest.fail("fingerprinted again"))
    assert context.n_images() == 12 and not context.datasets  # counted from the index
    a, b = context.dataset(32), context.dataset(40)
    assert (len(a), len(b)) == (12, 12) and a.fingerprint != b.fingerprint
    assert context.calls == {"index": 1, "fingerprint": 1}


def test_counting_a_resolution_does_not_decode_it(context):
    context.dataset(32)
    assert context.split_sizes(64) == context.split_sizes(32)
    assert list(context.datasets) == [32]


def test_a_sample_is_decoded_without_decoding_the_folder(context):
    sample = context.sample_pixels(48, 4)
    assert sample.shape == (4, 48, 48, 3) and not context.datasets
