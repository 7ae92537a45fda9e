"""DataLoader iterators saved and re-created (dart.capture.dataloader): the
re-created iterator yields exactly the batches the original had left, for
map-style and iterable-style datasets, several samplers, 0 and 2 workers, held
in a loop, a variable, an attribute or a list; the caller's random state is
left as it was; and skipped batches are not loaded again (map-style)."""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset, RandomSampler  # noqa: E402

from dart.capture import dataloader, pickler  # noqa: E402
from dart.capture.hidden import capture_hidden, restore_hidden  # noqa: E402


class Counting(Dataset):
    """Deterministic samples; counts the loads done in this process."""

    loads = 0

    def __len__(self):
        return 40

    def __getitem__(self, index):
        Counting.loads += 1
        return torch.tensor([index, index * index % 7], dtype=torch.float32)


class Stream(IterableDataset):
    def __iter__(self):
        for index in torch.randperm(25).tolist():
            yield torch.tensor([index, torch.rand(()).item()])


class Holder:
    """An "infinite loader" style object: it keeps the iterator in an attribute."""


def make(kind: str, workers: int):
    data = Counting()
    if kind == "shuffle":
        return DataLoader(data, batch_size=3, shuffle=True, num_workers=workers)
    if kind == "replacement":
        return DataLoader(data, batch_size=4, sampler=RandomSampler(data, replacement=True, num_samples=30), num_workers=workers)
    if kind == "distributed":
        return DataLoader(data, batch_size=5, sampler=DistributedSampler(data, num_replicas=1, rank=0, seed=3), num_workers=workers)
    if kind == "generator":
        return DataLoader(data, batch_size=3, shuffle=True, generator=torch.Generator().manual_seed(8), num_workers=workers)
    if kind == "unbatched":
        return DataLoader(data, batch_size=None, shuffle=True, num_workers=workers)
    if kind == "persistent":
        return DataLoader(data, batch_size=6, shuffle=True, num_workers=workers, persistent_workers=True)
    if kind == "stream":
        return DataLoader(Stream(), batch_size=4, num_workers=workers)
    raise AssertionError(kind)


@pytest.fixture(autouse=True)
def hooked():
    dataloader.install()
    yield
    dataloader.uninstall()


def roundtrip(obj):
    data, buffers = pickler.dumps(obj)
    return pickler.loads(data, [b.raw() for b in buffers])


def rest(iterator) -> list:
    return [batch.tolist() for batch in iterator]


CONFIGS = [(kind, 0) for kind in ("shuffle", "replacement", "distributed", "generator", "unbatched", "stream")]
CONFIGS += [("shuffle", 2), ("replacement", 2), ("persistent", 2)]


@pytest.mark.parametrize("kind,workers", CONFIGS)
@pytest.mark.parametrize("taken", [0, 1, 5])
def test_recreated_iterator_yields_the_rest(kind, workers, taken):
    torch.manual_seed(1)
    loader = make(kind, workers)
    it = iter(loader)
    for _ in range(taken):
        next(it)
    assert dataloader.savable(it)
    saved = pickler.dumps(it)
    at_commit = capture_hidden()
    expected = rest(it)
    if taken == 0 or kind == "stream":
        # Nothing drawn yet, or a dataset that draws as it yields: the next batch
        # draws from the random state of the moment, which resume puts back as
        # it was at the commit.
        restore_hidden(at_commit)
    else:
        torch.manual_seed(99)  # whatever the resumed program's state is, the rest is the same
    state = torch.get_rng_state()
    again = pickler.loads(saved[0], [b.raw() for b in saved[1]])
    assert torch.equal(torch.get_rng_state(), state), "re-creating the iterator changed the random state"
    assert again is not it and again._num_yielded == taken
    assert rest(again) == expected


def test_skipped_batches_are_not_loaded_for_a_map_style_dataset():
    torch.manual_seed(2)
    loader = make("shuffle", 0)
    it = iter(loader)
    for _ in range(10):
        next(it)
    saved = pickler.dumps(it)
    expected = rest(it)
    Counting.loads = 0
    again = pickler.loads(saved[0], [b.raw() for b in saved[1]])
    first = next(again)
    assert Counting.loads == 3, f"{Counting.loads} samples loaded to re-create and take one batch of 3"
    assert [first.tolist(), *rest(again)] == expected


def test_iterators_held_in_objects_and_containers_keep_their_identity():
    torch.manual_seed(3)
    loader = make("shuffle", 0)

    holder = Holder()
    holder.it = iter(loader)
    next(holder.it)
    state = {"holder": holder, "same": [holder.it], "loader": loader}
    data, buffers = pickler.dumps(state)
    expected = rest(holder.it)
    back = pickler.loads(data, [b.raw() for b in buffers])
    assert back["same"][0] is back["holder"].it
    assert rest(back["holder"].it) == expected
    # The loader inside the re-created iterator's origin is the saved loader, and a
    # new epoch from it is the loader's own (not skipped).
    assert len(rest(iter(back["loader"]))) == len(loader)


def test_an_iterator_created_before_dart_watched_is_not_savable():
    loader = make("shuffle", 0)
    dataloader.uninstall()
    it = iter(loader)
    dataloader.install()
    assert not dataloader.savable(it)
    with pytest.raises((pickle.PicklingError, NotImplementedError, TypeError)):
        pickler.dumps(it)


def test_uninstall_puts_the_original_method_back():
    dataloader.uninstall()
    assert not getattr(DataLoader.__iter__, "_dart_hook", False)
    dataloader.install()
    assert DataLoader.__iter__._dart_hook
