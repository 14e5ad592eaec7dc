import warnings
from pathlib import Path

import pytest
import torch

from advnb import core, data
from advnb.data import (DATASETS, ImageTensorDataset, MissingDatasetError, augmentation_policy, crop_flip,
                        load_dataset, make_loader, subset, take)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

REAL = ["cifar10", "cifar100", "mnist", "fashionmnist", "stl10"]
SYNTHETIC = ["synthetic-" + n for n in REAL]


@pytest.fixture
def no_download(monkeypatch):
    "Make every torchvision download path (and urllib) fail loudly, recording any attempt."
    import urllib.request
    import torchvision.datasets.cifar as tv_cifar
    import torchvision.datasets.mnist as tv_mnist
    import torchvision.datasets.stl10 as tv_stl10
    import torchvision.datasets.utils as tv_utils
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"a download was attempted: {args}")

    for mod, attr in [(tv_utils, "download_url"), (tv_utils, "download_and_extract_archive"),
                      (tv_cifar, "download_and_extract_archive"), (tv_mnist, "download_and_extract_archive"),
                      (tv_stl10, "download_and_extract_archive"), (urllib.request, "urlopen")]:
        if hasattr(mod, attr):
            monkeypatch.setattr(mod, attr, refuse)
    return attempts


# ---------------------------------------------------------------------------------------------------------------
# registry

def test_synthetic_lookalikes_match_real_infos():
    for real in REAL:
        r, s = DATASETS[real], DATASETS["synthetic-" + real]
        assert (s.shape, s.num_classes, s.mean, s.std) == (r.shape, r.num_classes, r.mean, r.std)
        assert len(r.classes) == len(s.classes) == r.num_classes
        assert len(r.mean) == len(r.std) == r.shape[0]
        assert s.is_synthetic and not r.is_synthetic and s.real_name == real
    assert len(set(DATASETS["synthetic-cifar100"].classes)) == 100  # 100 distinct factor combinations
    assert DATASETS["cifar100"].classes[:3] == ["apple", "aquarium_fish", "baby"]


# ---------------------------------------------------------------------------------------------------------------
# missing real datasets

@pytest.mark.parametrize("name", REAL)
def test_missing_dataset_error_names_dataset_path_and_fixes(name, tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("ADVNB_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("ADVNB_DOWNLOAD", "0")
    core.get_settings(reload=True)
    try:
        with pytest.raises(MissingDatasetError) as ei:
            load_dataset(name, "train")  # root and download from the settings
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    e = ei.value
    assert isinstance(e, FileNotFoundError)
    msg = str(e)
    expected_path = tmp_path / data._TORCHVISION[name][1]
    assert e.path == expected_path
    assert repr(name) in msg and str(expected_path) in msg
    assert "data_root" in msg and "settings.ini" in msg and "ADVNB_DATA_ROOT" in msg  # fix 1
    assert "download=True" in msg and "ADVNB_DOWNLOAD=1" in msg  # fix 2
    assert not no_download and list(tmp_path.iterdir()) == []  # nothing downloaded, nothing created


def test_half_present_dataset_is_missing_too(tmp_path, no_download):
    (tmp_path / "cifar-10-batches-py").mkdir()  # the folder without its files: torchvision's own check fails
    with pytest.raises(MissingDatasetError) as ei:
        load_dataset("cifar10", "test", root=tmp_path, download=False)
    assert str(tmp_path / "cifar-10-batches-py") in str(ei.value) and not no_download


def test_download_setting_is_honoured_and_overridable(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    class Called(Exception):
        pass

    def fake_download(*args, **kwargs):
        raise Called()

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", fake_download)
    monkeypatch.setenv("ADVNB_DOWNLOAD", "1")
    core.get_settings(reload=True)
    try:
        with pytest.raises(Called):  # the setting allows it: torchvision is asked to download
            load_dataset("cifar10", root=tmp_path)
        with pytest.raises(MissingDatasetError):  # an explicit download=False wins over the setting
            load_dataset("cifar10", root=tmp_path, download=False)
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="no dataset 'imagenet'; registered: .*'fashionmnist'"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="split"):
        load_dataset("synthetic-mnist", "val")


# ---------------------------------------------------------------------------------------------------------------
# synthetic look-alikes

@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_shapes_dtypes_ranges_counts(name):
    info = DATASETS[name]
    for split in ("train", "test"):
        ds = load_dataset(name, split)
        n = data.SYNTHETIC_DEFAULT_PER_CLASS[info.num_classes][split]
        assert isinstance(ds, ImageTensorDataset) and len(ds) == n * info.num_classes
        assert ds.x.dtype == torch.uint8 and tuple(ds.x.shape) == (len(ds), *info.shape)
        assert ds.y.dtype == torch.int64 and ds.class_counts().tolist() == [n] * info.num_classes
        x, y = ds[3]
        assert x.dtype == torch.float32 and tuple(x.shape) == tuple(info.shape) and isinstance(y, int)
        imgs, labels = ds.tensors()
        assert imgs.dtype == torch.float32 and 0 <= imgs.min() and imgs.max() <= 1
        assert torch.equal(labels, ds.y)
        assert ds.x.float().std() > 20  # real contrast, not a constant image
    assert len(load_dataset(name, "test", n_per_class=3)) == 3 * info.num_classes


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_is_deterministic_and_nested(name):
    data._SYN_CACHE.clear()
    torch.manual_seed(1)
    a = load_dataset(name, "test", n_per_class=4, seed=3)
    data._SYN_CACHE.clear()
    torch.manual_seed(2)  # the global RNG plays no part
    b = load_dataset(name, "test", n_per_class=4, seed=3)
    assert a.x is not b.x and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    k = DATASETS[name].num_classes
    smaller = load_dataset(name, "test", n_per_class=2, seed=3)
    assert torch.equal(smaller.x, a.x[: 2 * k])  # fewer per class = a prefix
    assert not torch.equal(load_dataset(name, "test", n_per_class=4, seed=4).x, a.x)  # seed matters
    assert not torch.equal(load_dataset(name, "train", n_per_class=4, seed=3).x, a.x)  # splits differ


def test_synthetic_cifar10_is_learnable_by_a_linear_classifier():
    "Nearest class mean on raw pixels (a linear classifier) on held-out synthetic-cifar10 test images."
    xtr, ytr = load_dataset("synthetic-cifar10", "train").tensors()
    xte, yte = load_dataset("synthetic-cifar10", "test").tensors()
    mu = torch.stack([xtr[ytr == c].flatten(1).mean(0) for c in range(10)])
    pred = (xte.flatten(1) @ mu.T - 0.5 * (mu**2).sum(1)).argmax(1)
    acc = (pred == yte).float().mean().item()
    assert acc > 0.3, f"accuracy {acc:.3f}, chance is 0.1"


# ---------------------------------------------------------------------------------------------------------------
# subsets

def _unbalanced():
    ds = load_dataset("synthetic-mnist", "train", n_per_class=20, seed=5)
    keep = torch.ones(len(ds), dtype=torch.bool)
    keep[(ds.y == 3).nonzero().squeeze(1)[6:]] = False  # class 3 has only 6
    return ds.select(keep.nonzero().squeeze(1))


def test_subset_exact_counts_and_short_class_warning():
    ds = _unbalanced()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s5 = subset(ds, 5, seed=0)
    assert s5.class_counts().tolist() == [5] * 10
    assert isinstance(s5, ImageTensorDataset) and s5.info is ds.info
    with pytest.warns(UserWarning, match="fewer"):
        s10 = subset(ds, 10, seed=0)
    assert s10.class_counts().tolist() == [10, 10, 10, 6, 10, 10, 10, 10, 10, 10]
    # the kept examples are the originals
    assert torch.equal(s10.x, ds.x[torch.cat([(ds.indices == i).nonzero()[0] for i in s10.indices])])


def test_subset_is_deterministic_independent_of_global_rng_and_nested():
    ds = _unbalanced()
    torch.manual_seed(0)
    a = subset(ds, 4, seed=7)
    torch.manual_seed(123)
    b = subset(ds, 4, seed=7)
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(subset(ds, 4, seed=8).indices, a.indices)
    with pytest.warns(UserWarning):
        big = subset(ds, 9, seed=7)
    for c in range(10):  # per class: the first k for n=k are a prefix of those for a larger n
        small_c, big_c = a.indices[a.y == c], big.indices[big.y == c]
        assert torch.equal(big_c[: len(small_c)], small_c)
    assert torch.equal(big.indices[: len(a)], a.indices)  # and the whole subset is a prefix
    assert a.y[:10].tolist() == list(range(10))  # round by round: the first K cover every class once


# ---------------------------------------------------------------------------------------------------------------
# augmentation and loaders

def test_augmentation_policy():
    assert augmentation_policy(DATASETS["cifar10"]) == (4, True)
    assert augmentation_policy(DATASETS["stl10"]) == (12, True)
    assert augmentation_policy(DATASETS["fashionmnist"]) == (0, False)


def _pad_crop_flip_candidates(img: torch.Tensor, pad: int) -> torch.Tensor:
    "Every zero-pad-by-`pad` crop of `img` (C, H, W), plain and mirrored left-right, built without advnb."
    _, h, w = img.shape
    xp = torch.nn.functional.pad(img, (pad, pad, pad, pad))  # zero padding on all four sides
    crops = [xp[:, oy:oy + h, ox:ox + w] for oy in range(2 * pad + 1) for ox in range(2 * pad + 1)]
    return torch.stack(crops + [c.flip(-1) for c in crops])  # (2 (2p+1)^2, C, H, W)


def test_augmentation_is_a_pad_crop_flip_of_the_original():
    ds = load_dataset("synthetic-cifar10", "test", n_per_class=2, augment=True)
    pad = 4
    torch.manual_seed(0)
    changed = flipped = 0
    for i in range(len(ds)):
        xa, y = ds[i]
        assert xa.shape == (3, 32, 32) and xa.dtype == torch.float32 and 0 <= xa.min() and xa.max() <= 1
        cands = _pad_crop_flip_candidates(ds.x[i].float() / 255, pad)
        err = (cands - xa).abs().flatten(1).amax(1)
        assert err.min() == 0  # one of the (2p+1)^2 x 2 zero-padded crops, mirrored (if at all) left-right
        flipped += bool(err[len(err) // 2:].min() == 0 and err[: len(err) // 2].min() > 0)
        changed += not torch.equal(xa, ds.x[i].float() / 255)
    assert changed >= len(ds) // 2
    assert flipped >= 1  # the flip branch is exercised


def test_flip_only_augmentation_mirrors_and_never_shifts():
    ds = load_dataset("synthetic-cifar10", "test", n_per_class=3, augment="flip")
    assert ds.augment == "flip" and ds.select([0, 1]).augment == "flip" and ds.with_augment(False).augment is False
    (x, y), = list(make_loader(ds, len(ds), shuffle=False, seed=1))
    orig = ds.x.float() / 255
    same = (x == orig).flatten(1).all(1)
    mirrored = (x == orig.flip(-1)).flatten(1).all(1)
    assert bool((same | mirrored).all())  # each image is itself or its left-right mirror: no crop
    assert 0 < int(mirrored.sum()) < len(ds)  # and both happen
    with pytest.raises(ValueError, match="flips only"):
        load_dataset("synthetic-cifar10", "test", n_per_class=1, augment="crop")
    from advnb.train import TrainSpec
    with pytest.raises(ValueError, match="flips only"):
        TrainSpec(arch="simple_cnn", dataset="synthetic-cifar10", augment="crop")


def test_paper_d_at_paper_scale_flips_without_cropping():
    from advnb.papers.d_setup import paper_d_specs
    assert {s.augment for s in paper_d_specs("cifar10", augment=True, crop=False).values()} == {"flip"}
    assert {s.augment for s in paper_d_specs("cifar10", augment=True).values()} == {True}
    assert {s.augment for s in paper_d_specs("cifar10", augment=False, crop=False).values()} == {False}
    import yaml
    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params" / "paper.yaml").read_text())
    assert params["d2_results"]["augment"] is True and params["d2_results"]["augment_crop"] is False


def test_crop_flip_matches_an_independent_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (6, 3, 8, 10), generator=g, dtype=torch.uint8)  # no zeros: padding is visible
    pad = 3
    ox, oy = torch.randint(0, 2 * pad + 1, (6,), generator=g), torch.randint(0, 2 * pad + 1, (6,), generator=g)
    flip = torch.tensor([False, True, False, True, True, False])
    out = crop_flip(x, ox, oy, flip, pad)
    assert out.shape == x.shape and out.dtype == x.dtype
    for n in range(6):
        ref = torch.nn.functional.pad(x[n], (pad, pad, pad, pad))[:, int(oy[n]):int(oy[n]) + 8, int(ox[n]):int(ox[n]) + 10]
        assert torch.equal(out[n], ref.flip(-1) if flip[n] else ref)


def test_no_augmentation_for_grey_data():
    ds = load_dataset("synthetic-fashionmnist", "test", n_per_class=2, augment=True)
    x, _ = next(iter(make_loader(ds, len(ds), shuffle=False, seed=0)))
    assert torch.equal(x, ds.images)


def test_seeded_loader_reproduces_order_and_augmentation():
    ds = load_dataset("synthetic-cifar10", "test", augment=True)
    def first(seed, loader=None):
        return next(iter(loader or make_loader(ds, 32, shuffle=True, seed=seed)))
    (x1, y1), (x2, y2), (x3, _) = first(0), first(0), first(1)
    assert x1.shape == (32, 3, 32, 32) and x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    loader = make_loader(ds, 32, shuffle=True, seed=0)
    e1, e2 = first(0, loader), first(0, loader)
    assert torch.equal(e1[0], x1) and not torch.equal(e2[0], e1[0])  # a second epoch is a new draw
    # same order, only the augmentation differs from the un-augmented view
    x0, y0 = first(0, make_loader(ds.with_augment(False), 32, shuffle=True, seed=0))
    assert torch.equal(y0, y1) and not torch.equal(x0, x1)
    # a plain DataLoader (default collate) over the dataset sees the same samples as make_loader
    plain = next(iter(torch.utils.data.DataLoader(ds.with_augment(False), batch_size=16)))
    ours = next(iter(make_loader(ds.with_augment(False), 16)))
    assert torch.equal(plain[0], ours[0]) and torch.equal(plain[1], ours[1])
    # drop_last and batch count
    assert len(make_loader(ds, 64, drop_last=True)) == len(ds) // 64
    assert sum(len(y) for _, y in make_loader(ds, 64)) == len(ds)


def test_seeded_loader_is_independent_of_worker_count():
    ds = load_dataset("synthetic-cifar10", "test", n_per_class=4, augment=True)
    a = [x for x, _ in make_loader(ds, 10, shuffle=True, seed=3, num_workers=0)]
    b = [x for x, _ in make_loader(ds, 10, shuffle=True, seed=3, num_workers=2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and len(a) == len(b) == 4


def test_direct_indexing_uses_torch_rng():
    ds = load_dataset("synthetic-cifar10", "test", augment=True)
    torch.manual_seed(5)
    a = torch.stack([ds[i][0] for i in range(20)])
    torch.manual_seed(5)
    b = torch.stack([ds[i][0] for i in range(20)])
    assert torch.equal(a, b)


def test_make_loader_on_a_plain_dataset():
    tds = torch.utils.data.TensorDataset(torch.arange(50.0), torch.arange(50))
    a = [y for _, y in make_loader(tds, 8, shuffle=True, seed=2)]
    b = [y for _, y in make_loader(tds, 8, shuffle=True, seed=2)]
    assert all(torch.equal(p, q) for p, q in zip(a, b)) and sorted(torch.cat(a).tolist()) == list(range(50))


def test_take_first_and_stratified():
    ds = load_dataset("synthetic-cifar10", "test", augment=True)
    x, y = take(ds, 15)
    assert torch.equal(x, ds.images[:15]) and torch.equal(y, ds.y[:15])  # never augmented
    xs, ys = take(ds, 30, seed=1)
    assert xs.shape == (30, 3, 32, 32) and torch.bincount(ys, minlength=10).tolist() == [3] * 10
    assert torch.equal(take(ds, 30, seed=1)[0], xs)
    with pytest.warns(UserWarning):
        assert len(take(ds, 10_000)[1]) == len(ds)


# ---------------------------------------------------------------------------------------------------------------
# a real dataset from the shared offline folder

@pytest.mark.skipif(not (SHARED_DATA / "FashionMNIST" / "raw").is_dir(), reason="no ../shared/data/FashionMNIST")
def test_fashionmnist_from_shared_data(no_download):
    tr = load_dataset("fashionmnist", "train", root=SHARED_DATA, download=False)
    te = load_dataset("fashionmnist", "test", root=SHARED_DATA, download=False)
    assert tuple(tr.x.shape) == (60000, 1, 28, 28) and tuple(te.x.shape) == (10000, 1, 28, 28)
    assert tr.x.dtype == torch.uint8 and tr.y.dtype == torch.int64
    assert tr.class_counts().tolist() == [6000] * 10 and te.class_counts().tolist() == [1000] * 10
    mean, std = tr.x.float().div(255).mean().item(), tr.x.float().div(255).std().item()
    assert abs(mean - tr.info.mean[0]) < 1e-3 and abs(std - tr.info.std[0]) < 1e-3
    again = load_dataset("fashionmnist", "train", root=SHARED_DATA)
    assert again.x is tr.x  # served from the in-memory cache, not read again
    sub = load_dataset("fashionmnist", "test", root=SHARED_DATA, n_per_class=7, seed=0)
    assert sub.class_counts().tolist() == [7] * 10
    assert torch.equal(sub.x, te.x[sub.indices])


def test_a_generated_dataset_loads_by_name_and_is_found_from_a_fresh_process():
    import subprocess
    import sys
    from advnb import data
    info = data.DatasetInfo("test-generated-bars", (1, 4, 4), 2, (0.5,), (0.5,), ["h", "v"])

    def make(name, split, n_per_class=None, seed=0):
        n = 3 if n_per_class is None else n_per_class
        x = torch.zeros(2 * n, 1, 4, 4, dtype=torch.uint8)
        x[0::2, :, 1, :] = 255  # class 0: a horizontal bar
        x[1::2, :, :, 1] = 255  # class 1: a vertical bar
        return x, torch.arange(2).repeat(n)

    try:
        assert data.register_dataset(info)(make) is make
        ds = data.load_dataset("test-generated-bars", "test", n_per_class=2)
        assert len(ds) == 4 and ds.info is info and float(ds.x[1, 0, :, 1].float().mean()) == 255
    finally:
        data.DATASETS.pop(info.name, None); data.DATASETS.infos.pop(info.name, None)
    with pytest.raises(ValueError, match="no dataset 'test-generated-bars'; registered: .*Register one with @register_dataset"):
        data.load_dataset("test-generated-bars")
    # a process that never imported advnb.papers.b_smooth_kernels still finds paper B's four shapes (plug-ins load on demand)
    code = "from advnb.data import dataset_info; import sys; print(dataset_info('fourshapes').num_classes)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4"


# ---------------------------------------------------------------------------------------------------------------
# Tiny-ImageNet (paper E): read from its own folder layout, never downloaded

TINY_WNIDS = ["n02124075", "n01443537", "n04067472"]  # wnids.txt order, deliberately not sorted


def _fake_tiny_imagenet(root, n_train=(3, 2, 2), grey=True):
    """A tiny `tiny-imagenet-200/` folder: train image j of class i is the flat colour (20 i + j, 100, 200), a val
    image's red channel is 50 + 20 (its class) + 5 k; val files are named against their class order, so only the
    annotations file can give the right labels."""
    from PIL import Image
    tin = root / "tiny-imagenet-200"
    (tin / "val" / "images").mkdir(parents=True)
    (tin / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (tin / "words.txt").write_text("n02124075\tEgyptian cat\nn01443537\tgoldfish, Carassius auratus\n")
    for i, (w, n) in enumerate(zip(TINY_WNIDS, n_train)):
        d = tin / "train" / w / "images"
        d.mkdir(parents=True)
        (tin / "train" / w / f"{w}_boxes.txt").write_text("")  # present in the real layout, not an image
        for j in range(n):
            Image.new("RGB", (64, 64), (20 * i + j, 100, 200)).save(d / f"{w}_{j}.JPEG", "JPEG", quality=100)
    if grey:  # a few real Tiny-ImageNet images are greyscale
        Image.new("L", (64, 64), 77).save(tin / "train" / TINY_WNIDS[2] / "images" / f"{TINY_WNIDS[2]}_9.JPEG", "JPEG")
    val = [(2, 0), (0, 1), (1, 2), (2, 3)]  # (class, k): val_k.JPEG
    lines = []
    for c, k in val:
        Image.new("RGB", (64, 64), (50 + 20 * c + 5 * k, 0, 0)).save(tin / "val" / "images" / f"val_{k}.JPEG", "JPEG",
                                                                     quality=100)
        lines.append(f"val_{k}.JPEG\t{TINY_WNIDS[c]}\t0\t0\t63\t63")
    (tin / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return tin


def test_tinyimagenet_is_registered_without_a_synthetic_lookalike():
    info = DATASETS["tinyimagenet"]
    assert (info.shape, info.num_classes, len(info.classes), len(info.mean), len(info.std)) == ((3, 64, 64), 200, 200, 3, 3)
    assert "synthetic-tinyimagenet" not in DATASETS and augmentation_policy(info) == (8, True)


def test_tinyimagenet_from_its_folder(tmp_path, no_download):
    _fake_tiny_imagenet(tmp_path)
    tr = load_dataset("tinyimagenet", "train", root=tmp_path)
    te = load_dataset("tinyimagenet", "test", root=tmp_path)
    # labels follow wnids.txt's order; files in sorted order within a class (…_9 of the grey image comes last)
    assert tr.y.tolist() == [0, 0, 0, 1, 1, 2, 2, 2] and tr.y.dtype == torch.int64
    assert te.y.tolist() == [2, 0, 1, 2]  # from val_annotations.txt, not from file order or names
    for ds, n in ((tr, 8), (te, 4)):
        assert tuple(ds.x.shape) == (n, 3, 64, 64) and ds.x.dtype == torch.uint8 and ds.num_classes == 200
        x = ds.images
        assert x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    red = tr.images[:, 0].mean((1, 2)) * 255
    assert torch.allclose(red[:7], torch.tensor([0., 1, 2, 20, 21, 40, 41]), atol=2)  # each image with its label
    assert torch.allclose(tr.images[7].mean((1, 2)) * 255, torch.full((3,), 77.0), atol=2)  # grey → 3 equal channels
    assert torch.allclose(te.images[:, 0].mean((1, 2)) * 255, torch.tensor([90., 55, 80, 105]), atol=2)
    assert tr.classes[:4] == ["Egyptian cat (n02124075)", "goldfish (n01443537)", "n04067472",
                              "class 3 (not in this folder)"]
    assert load_dataset("tinyimagenet", "train", root=tmp_path).x is tr.x  # the in-memory cache
    with pytest.warns(UserWarning, match="fewer"):
        sub = load_dataset("tinyimagenet", "train", root=tmp_path, n_per_class=2, seed=0)  # 197 classes are empty
    assert sub.class_counts()[:3].tolist() == [2, 2, 2] and not no_download


def test_missing_tinyimagenet_says_where_to_put_it_and_where_to_get_it(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("ADVNB_DATA_ROOT", str(tmp_path))
    core.get_settings(reload=True)
    try:
        for split, download in (("train", None), ("test", True)):  # no download even when one is allowed
            with pytest.raises(MissingDatasetError) as ei:
                load_dataset("tinyimagenet", split, download=download)
            e, msg = ei.value, str(ei.value)
            assert e.path == tmp_path / "tiny-imagenet-200" and str(e.path) in msg and f"({split} split)" in msg
            assert "https://cs231n.stanford.edu/tiny-imagenet-200.zip" in msg and "unzip it into" in msg
            assert "data_root" in msg and "settings.ini" in msg and "ADVNB_DATA_ROOT" in msg
            assert "wnids.txt" in msg and "val_annotations.txt" in msg and "cannot download" in msg
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    assert not no_download and list(tmp_path.iterdir()) == []  # nothing downloaded, nothing created
    tin = _fake_tiny_imagenet(tmp_path)
    (tin / "val" / "val_annotations.txt").unlink()  # a half-copied folder is missing too, and says what it lacks
    with pytest.raises(MissingDatasetError, match="val_annotations.txt or val/images/ is not there"):
        load_dataset("tinyimagenet", "test", root=tmp_path)


def test_damaged_tinyimagenet(tmp_path):
    tin = _fake_tiny_imagenet(tmp_path)
    bad = tin / "train" / TINY_WNIDS[1] / "images" / f"{TINY_WNIDS[1]}_0.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated
    with pytest.raises(data.DamagedDatasetError, match=f"{bad.name}.*tiny-imagenet-200.zip again"):
        load_dataset("tinyimagenet", "train", root=tmp_path)
    with (tin / "val" / "val_annotations.txt").open("a") as f:
        f.write("val_9.JPEG\tn99999999\t0\t0\t63\t63\n")
    with pytest.raises(data.DamagedDatasetError, match="n99999999"):
        load_dataset("tinyimagenet", "test", root=tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# Restricted ImageNet (paper B): ImageNet in ImageFolder layout, nine super-classes by MadryLab's ranges

def _fake_imagenet(root, with_images=((30, 300, 260), (29, 260, 300), (151, 256, 256), (268, 400, 240), (269, 256, 256),
                                      (319, 240, 320), (999, 256, 256)), n_folders=1000):
    "ImageNet's 1,000 class folders (n00000000 … n00000999, sorted = ImageNet's order) in train/ and val/, empty but for "
    "one flat-red image (red = the class index mod 256) in each listed class, of the listed size."
    from PIL import Image
    inet = root / "imagenet"
    for split in ("train", "val"):
        for i in range(n_folders):
            (inet / split / f"n{i:08d}").mkdir(parents=True)
        for i, w, h in with_images:
            Image.new("RGB", (w, h), (i % 256, 10, 20)).save(inet / split / f"n{i:08d}" / f"img_{i}.JPEG", "JPEG",
                                                              quality=100)
        (inet / split / "n00000030" / "notes.txt").write_text("not an image")
    return inet


def test_restricted_imagenet_ranges_are_madrylabs():
    from advnb.data import RESTRICTED_IMAGENET_INFO, RESTRICTED_IMAGENET_RANGES, restricted_imagenet_label
    # robustness/tools/constants.py line 7 (MadryLab/robustness a954124), inclusive at both ends
    assert RESTRICTED_IMAGENET_RANGES == ((151, 268), (281, 285), (30, 32), (33, 37), (80, 100), (365, 382), (389, 397),
                                          (118, 121), (300, 319))
    labels = [restricted_imagenet_label(i) for i in range(1000)]
    assert sum(v is not None for v in labels) == 203  # 118 + 5 + 3 + 5 + 21 + 18 + 9 + 4 + 20 ImageNet classes
    assert [labels[i] for i in (29, 30, 32, 33, 37, 38, 117, 118, 121, 150, 151, 268, 269, 319, 320, 999)] == \
        [None, 2, 2, 3, 3, None, None, 7, 7, None, 0, 0, None, 8, None, None]
    info = DATASETS["restricted_imagenet"]
    assert info is RESTRICTED_IMAGENET_INFO and (info.shape, info.num_classes) == ((3, 224, 224), 9)
    assert info.classes == ["dog", "cat", "frog", "turtle", "bird", "monkey", "fish", "crab", "insect"]
    assert info.std[2] == 0.2575 and "synthetic-restricted_imagenet" not in DATASETS  # the paper's 0.2575


def test_restricted_imagenet_from_a_fake_imagenet_folder(tmp_path, no_download):
    _fake_imagenet(tmp_path)
    for split in ("train", "test"):
        ds = load_dataset("restricted_imagenet", split, root=tmp_path)
        # only the classes inside the ranges, in sorted folder order: 30 frog, 151 dog, 268 dog, 319 insect
        assert ds.y.tolist() == [2, 0, 0, 8] and ds.y.dtype == torch.int64
        assert tuple(ds.x.shape) == (4, 3, 224, 224) and ds.x.dtype == torch.uint8 and ds.num_classes == 9
        red = ds.images[:, 0].mean((1, 2)) * 255
        assert torch.allclose(red, torch.tensor([30., 151, 268 % 256, 319 % 256]), atol=2)  # each image with its label
        assert ds.classes[2] == "frog"
    with pytest.warns(UserWarning, match="fewer"):  # six super-classes have no image here
        sub = load_dataset("restricted_imagenet", "train", root=tmp_path, n_per_class=1, seed=0)
    assert sorted(sub.y.tolist()) == [0, 2, 8] and not no_download


def test_restricted_imagenet_needs_all_1000_class_folders(tmp_path, no_download):
    _fake_imagenet(tmp_path, with_images=((30, 256, 256), (151, 256, 256)), n_folders=400)  # ranks ≠ ImageNet's indices
    with pytest.raises(data.DamagedDatasetError, match="400 class folders"):
        load_dataset("restricted_imagenet", "train", root=tmp_path)


def test_missing_restricted_imagenet_says_where_to_put_it(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("ADVNB_DATA_ROOT", str(tmp_path))
    core.get_settings(reload=True)
    try:
        for split, download in (("train", None), ("test", True)):  # no download even when one is allowed
            with pytest.raises(MissingDatasetError) as ei:
                load_dataset("restricted_imagenet", split, download=download)
            e, msg = ei.value, str(ei.value)
            assert e.path == tmp_path / "imagenet" and str(e.path) in msg and f"({split} split)" in msg
            assert "ILSVRC2012" in msg and "ImageFolder" in msg and "cannot download" in msg and "ADVNB_DATA_ROOT" in msg
        (tmp_path / "imagenet").mkdir()
        with pytest.raises(MissingDatasetError, match="train/ is not there"):
            load_dataset("restricted_imagenet", "train")
    finally:
        monkeypatch.undo()
        core.get_settings(reload=True)
    assert not no_download and [p.name for p in tmp_path.iterdir()] == ["imagenet"]  # nothing downloaded


def test_one_period_of_augmentation_keys_gives_every_offset_and_flip_once():
    from advnb.data import _key_to_params
    pad = 2
    m = 2 * pad + 1
    ox, oy, flip = _key_to_params(torch.arange(2 * m * m), pad)  # one period of the key
    combos = set(zip(ox.tolist(), oy.tolist(), flip.tolist()))
    assert len(combos) == 2 * m * m  # every (horizontal, vertical, flip) once: none of the three fixes another


def test_each_class_of_a_subset_is_drawn_by_its_own_permutation():
    ds = load_dataset("synthetic-mnist", "train", n_per_class=20, seed=5)
    s = subset(ds, 5, seed=0)
    ranks = []  # where in its class each chosen image stood
    for c in range(10):
        members = ds.indices[ds.y == c].tolist()
        ranks.append(sorted(members.index(i) for i in s.indices[s.y == c].tolist()))
    assert len({tuple(r) for r in ranks}) > 1, ranks


def test_augmentation_keys_follow_the_loaders_seed():
    from advnb.data import KeyedSampler
    keys = [[k for _, k in KeyedSampler(50, True, core.torch_generator(seed))] for seed in (1, 2)]
    assert keys[0] != keys[1]  # another epoch (another seed) augments each image anew
    assert keys[0] == [k for _, k in KeyedSampler(50, True, core.torch_generator(1))]  # and the same seed alike
