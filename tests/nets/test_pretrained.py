"""The legacy torch reader (on files written here and on the packaged weights), its refusal of
foreign pickles, the conversion checks, and the imported ImageNet model on two sample photos."""

import pickle
import re
import struct

import numpy as np
import pytest
from PIL import Image

from classify_job.errors import WeightsError
from classify_job.imageio import load_image
from classify_job.nets import pretrained, torchfile
from classify_job.nets.efficientnet_lite import build_backbone, build_imagenet_classifier
from classify_job.runtime import cache_directory


def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _tensor(key: str, storage: np.ndarray, offset: int, shape, stride) -> bytes:
    """The opcodes torch emits for one tensor: _rebuild_tensor_v2(storage by persistent id, ...)."""
    kind = "LongStorage" if storage.dtype == np.int64 else "FloatStorage"
    pid = _tuple(_str("storage"), _global("torch", kind), _str(key), _str("cpu"), _int(storage.size), b"N")
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(
        pid + b"Q", _int(offset), _tuple(*map(_int, shape)), _tuple(*map(_int, stride)), b"\x89", hooks
    )
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def write_legacy_torch(path, tensors, storages, state_pickle: bytes | None = None) -> None:
    """Write the pre-1.6 torch layout: four pickles, the storage keys, then each storage's bytes.

    ``tensors`` maps a name to (storage key, offset, shape, stride); ``storages`` maps a key to
    a flat float32 or int64 array.
    """
    items = b"".join(
        _str(name) + _tensor(key, storages[key], *view) for name, (key, *view) in tensors.items()
    )
    state = b"\x80\x02" + _global("collections", "OrderedDict") + b")R(" + items + b"u."
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 4},
    }
    with open(path, "wb") as f:
        for header in (torchfile.LEGACY_MAGIC, torchfile.LEGACY_PROTOCOL, sys_info):
            f.write(pickle.dumps(header, protocol=2))
        f.write(state_pickle or state)
        f.write(pickle.dumps(list(storages), protocol=2))
        for data in storages.values():
            f.write(struct.pack("<q", data.size) + data.astype(data.dtype.newbyteorder("<")).tobytes())


STORAGES = {"7": np.arange(12, dtype=np.float32), "9": np.array([42], dtype=np.int64)}
TENSORS = {
    "conv.weight": ("7", 0, (3, 4), (4, 1)),
    "conv.transposed": ("7", 0, (4, 3), (1, 4)),  # a non-contiguous view, like the packaged kernels
    "bn.bias": ("7", 2, (2,), (3,)),
    "bn.num_batches_tracked": ("9", 0, (), ()),
}


def test_reader_rebuilds_views_offsets_and_dtypes(tmp_path):
    path = tmp_path / "tiny.pth"
    write_legacy_torch(path, TENSORS, STORAGES)

    state = torchfile.read_legacy_torch(path)

    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert list(state) == list(TENSORS)
    np.testing.assert_array_equal(state["conv.weight"], grid)
    np.testing.assert_array_equal(state["conv.transposed"], grid.T)
    np.testing.assert_array_equal(state["bn.bias"], [2.0, 5.0])
    assert state["bn.num_batches_tracked"].dtype == np.int64 and state["bn.num_batches_tracked"] == 42
    assert state["conv.weight"].flags.writeable and state["conv.weight"].dtype == np.float32


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "eval"), ("torch", "HalfStorage")])
def test_reader_refuses_any_other_global(tmp_path, module, name):
    path = tmp_path / "evil.pth"
    evil = b"\x80\x02" + _global(module, name) + _tuple(_str("echo pwned")) + b"R."
    write_legacy_torch(path, TENSORS, STORAGES, state_pickle=evil)
    with pytest.raises(WeightsError, match=re.escape(f"forbidden global: {module}.{name}")):
        torchfile.read_legacy_torch(path)


def test_reader_rejects_truncated_and_foreign_files(tmp_path):
    path = tmp_path / "tiny.pth"
    write_legacy_torch(path, TENSORS, STORAGES)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(WeightsError, match="cannot read"):
        torchfile.read_legacy_torch(path)
    path.write_bytes(pickle.dumps(123, protocol=2))
    with pytest.raises(WeightsError, match="not a legacy torch file"):
        torchfile.read_legacy_torch(path)


def test_reader_rejects_a_tensor_reaching_past_its_storage(tmp_path):
    path = tmp_path / "bad.pth"
    write_legacy_torch(path, {"w": ("7", 10, (3,), (1,))}, {"7": STORAGES["7"]})
    with pytest.raises(WeightsError, match="past the end"):
        torchfile.read_legacy_torch(path)


def test_packaged_file_has_the_published_tensors():
    state = torchfile.read_legacy_torch(pretrained.package_weights_file())
    assert len(state) == 296
    assert sum(a.size for a in state.values()) == pretrained.TORCH_NUMBERS == 4_694_073
    assert sum(name.endswith(".num_batches_tracked") for name in state) == 49
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)


def test_cache_directory_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSIFY_JOB_CACHE", str(tmp_path))
    assert cache_directory() == tmp_path
    assert cache_directory(tmp_path / "x") == tmp_path / "x"


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    return pretrained.import_pretrained(tmp_path_factory.mktemp("cache"))


def test_import_converts_once_into_the_cache(weights_file):
    assert weights_file.name == pretrained.CACHE_NAME
    mtime = weights_file.stat().st_mtime_ns
    assert pretrained.import_pretrained(weights_file.parent) == weights_file
    assert weights_file.stat().st_mtime_ns == mtime
    assert not [p for p in weights_file.parent.iterdir() if p.name.startswith(".")]
    with np.load(weights_file) as data:
        assert sum(data[k].size for k in data.files) == 4_694_024


def test_conversion_refuses_a_missing_or_misshapen_tensor():
    model = build_imagenet_classifier(32, random_init=False)
    state = torchfile.read_legacy_torch(pretrained.package_weights_file())
    misshapen = dict(state, **{"_blocks.3._bn1.bias": state["_blocks.3._bn1.bias"].reshape(1, -1)})
    with pytest.raises(WeightsError, match="block3_dw_bn"):
        pretrained.convert_state_dict(misshapen, model)
    renamed = {name.replace("_conv_head", "_head"): a for name, a in state.items()}
    with pytest.raises(WeightsError, match=r"_conv_head\.weight"):
        pretrained.convert_state_dict(renamed, model)


def test_imagenet_classifier_recognises_the_sample_photos(weights_file, tmp_path):
    import skimage.data

    pixels = []
    for name in ("chelsea", "coffee"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(getattr(skimage.data, name)()).save(path)
        pixels.append(load_image(path, (224, 224)).pixels.astype(np.float32))
    model = build_imagenet_classifier(224, random_init=False)  # the 1000-class ImageNet network
    pretrained.load_pretrained_weights(model, pretrained.import_pretrained(weights_file.parent))

    probabilities = model.predict(np.stack(pixels), verbose=0)

    assert probabilities.argmax(axis=1).tolist() == [285, 967]  # Egyptian cat, espresso
    assert probabilities.max(axis=1).min() > 0.5


def test_a_damaged_cache_is_a_weights_error(tmp_path):
    damaged = tmp_path / pretrained.CACHE_NAME
    damaged.write_bytes(b"not a zip file")
    with pytest.raises(WeightsError, match="force=True"):
        pretrained.load_pretrained_weights(build_backbone(32, random_init=False), damaged)
