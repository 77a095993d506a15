"""`tttlab embed`: an image data set -> a cached, unit-normalised feature file.

tttlab embed --dataset fashion-mnist --encoder efficientnet-lite0 --resolution 128 --out feats/
tttlab embed --images photos/ --encoder clip-vit-b16 --weights clip-vit-b16/ --out feats/
tttlab ttt --features feats/train --val-features feats/val --test-features feats/test --model linear
"""

from __future__ import annotations

import argparse

from tttlab.encoders.backbones import ENCODERS


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="tttlab embed",
        description="embed an image data set with a pretrained encoder into a feature folder "
        "(resumable: the same command continues after the last finished chunk)",
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--dataset",
        choices=["mnist", "fashion-mnist"],
        help="an MNIST-format set, with the paper's train/val/test splits",
    )
    what.add_argument(
        "--images", metavar="DIR", help="a folder with one sub-folder of images per class"
    )
    parser.add_argument("--data-dir", default=None, help="where the MNIST-format files are")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="at most this many images per split, stratified (quick runs)",
    )
    parser.add_argument("--encoder", choices=ENCODERS, default="efficientnet-lite0")
    parser.add_argument(
        "--weights",
        default=None,
        help="weights file or folder (efficientnet-lite0: default the packaged "
        "ImageNet weights; clip-vit-b16: required, a local folder or file)",
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=None,
        help="input side in px (efficientnet-lite0: default 224, its native)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass")
    parser.add_argument("--chunk-rows", type=int, default=4096, help="rows per chunk file")
    parser.add_argument(
        "--no-normalize",
        action="store_true",
        help="keep the raw features (default: unit-normalise every row)",
    )
    parser.add_argument(
        "--allow-mixed",
        action="store_true",
        help="--images: accept mixed sizes and grey/colour (each to RGB, resized)",
    )
    parser.add_argument("--out", required=True, help="the feature folder to write or resume")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    for name in ("batch_size", "chunk_rows"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")

    from tttlab.encoders.backbones import build_encoder
    from tttlab.encoders.extract import embed, folder_source, mnist_source

    encoder = build_encoder(args.encoder, args.weights, args.resolution)
    if args.dataset:
        source = mnist_source(args.dataset, args.data_dir, args.limit)
    else:
        source = folder_source(args.images, args.allow_mixed)
    out = embed(
        source,
        encoder,
        args.out,
        args.batch_size,
        args.chunk_rows,
        normalize=not args.no_normalize,
        progress=not args.no_progress,
    )
    splits = [s.name for s in source.splits]
    print(
        f"{encoder.name} ({encoder.dim}-d, {encoder.resolution} px) features of "
        f"{sum(len(s) for s in source.splits)} images: {out}"
    )
    if splits == ["train", "val", "test"]:
        print(
            f"next: tttlab ttt --features {out}/train --val-features {out}/val "
            f"--test-features {out}/test --model linear"
        )
    else:
        print(f"next: tttlab ttt --features {out}/all --model linear")
    return 0
