"""One grounding run over a generated folder of everything real folders hold: broken files, odd
formats and modes, EXIF orientations, odd sizes, odd names, symlinks and unreadable files."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import time
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import STORED_FROM_DISPLAYED
from vgtool.cli.main import app, main
from vgtool.data.decode import ImageDecodeError, load_rgb
from vgtool.data.listing import list_images
from vgtool.ground.pipeline import GroundConfig, ground

PHRASES = ["red car=car", "dog"]
RUN = GroundConfig(
    threshold=0.0, top_k=1, recursive=True, num_workers=2, batch_size=4, crops=True, overlays=True, quiet=True
)
IS_ROOT = os.geteuid() == 0

# EXIF orientation -> the numpy operation that turns the stored pixels into the displayed ones
DISPLAYED_FROM_STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}
# ... and the Pillow transpose that turns a displayed picture into what a camera stores:
# STORED_FROM_DISPLAYED, shared with tests/data/test_decode.py through conftest.


def _picture(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colours plus a block, so JPEG keeps it recognisable."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack([xs * 255 // max(width - 1, 1), ys * 255 // max(height - 1, 1), (xs + ys) % 256], -1)
    base = (base + rng.integers(0, 40, 3)).clip(0, 255).astype(np.uint8)
    base[height // 4 : height // 2, width // 4 : width // 2] = rng.integers(0, 255, 3)
    return Image.fromarray(base)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (its data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _jpeg_with_garbage_scan(jpeg: bytes) -> bytes:
    """Keep a JPEG's headers up to the start of scan, replace the compressed data with noise."""
    sos = jpeg.index(b"\xff\xda")
    start = sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")
    return (
        jpeg[:start] + np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes() + b"\xff\xd9"
    )


@dataclass
class Corpus:
    root: Path
    good: dict[str, tuple[int, int]] = field(default_factory=dict)  # file_name -> displayed (w, h)
    bad: dict[str, str] = field(default_factory=dict)  # file_name -> words the reason must contain

    def add(self, name: str, image: Image.Image, size: tuple[int, int] | None = None, **save) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **save)
        self.good[name] = size or image.size
        return path

    def add_bad(self, name: str, content: bytes, reason: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        self.bad[name] = reason
        return path


def _build_corpus(root: Path) -> Corpus:
    c = Corpus(root)
    # broken
    c.add("plain.jpg", _picture(48, 32, 0), quality=95)
    full = (root / "plain.jpg").read_bytes()
    c.add_bad("broken/truncated.jpg", full[: len(full) // 2], "truncated")
    c.add_bad("broken/corrupt.jpg", _jpeg_with_garbage_scan(full), "corrupt")
    png = io.BytesIO()
    _picture(48, 32, 1).save(png, "PNG")
    full = png.getvalue()
    c.add_bad("broken/truncated.png", full[: len(full) // 2], "truncated")
    c.add_bad("broken/bad_header.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(300), "not an image")
    c.add_bad("broken/empty.jpg", b"", "empty")
    c.add_bad("broken/notes.png", b"shopping list: milk, eggs\n", "not an image")
    c.add_bad("broken/._plain.jpg", b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X" + bytes(64), "not an image")
    (root / "readme.txt").write_text("not listed: .txt is not an image extension\n")
    # decompression bombs: one just over Pillow's limit (warning), one far over it (error)
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(bomb, "PNG")  # 100 Mpx in a 12 kB file
    c.add_bad("broken/bomb.png", bomb.getvalue(), "100000000 pixels")
    c.add_bad("broken/bomb_header.png", _png_claiming(40_000, 40_000), "1600000000 pixels")
    # modes and formats
    c.add("cmyk.jpg", _picture(40, 30, 2).convert("CMYK"))
    c.add("gray.jpg", _picture(36, 28, 3).convert("L"))
    deep = (np.arange(40 * 32, dtype=np.uint16).reshape(32, 40) * 50).astype(np.uint16)
    c.add("deep16.png", Image.fromarray(deep))
    assert Image.open(root / "deep16.png").mode == "I;16"
    c.add("palette.png", _picture(32, 32, 4).convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    c.add("palette_transparent.png", _picture(32, 32, 5).quantize(16), transparency=0)
    rgba = _picture(40, 40, 6).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(0, 240, 6, dtype=np.uint8), (40, 1))))
    c.add("rgba.png", rgba)
    c.add("gray_alpha.png", _picture(30, 30, 7).convert("LA"))
    c.add("photo.webp", _picture(44, 36, 8))
    c.add("photo.bmp", _picture(44, 36, 9))
    c.add("photo.tiff", _picture(44, 36, 10))
    frames = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue", "green")]
    c.add("anim.gif", frames[0], save_all=True, append_images=frames[1:], duration=50, loop=0)
    for orientation, op in STORED_FROM_DISPLAYED.items():
        displayed = _picture(48, 32, 20 + orientation)
        exif = Image.Exif()
        exif[0x0112] = orientation
        stored = displayed if op is None else displayed.transpose(op)
        c.add(f"exif/orient_{orientation}.jpg", stored, size=(48, 32), exif=exif, quality=95)
    corrupt_exif = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03"  # cut mid-entry
    c.add("exif/corrupt_exif.jpg", _picture(48, 32, 30), exif=corrupt_exif)
    # sizes
    c.add("tiny_1x1.png", Image.new("RGB", (1, 1), "orange"))
    c.add("tall_1x400.png", _picture(1, 400, 11))
    c.add("wide_400x1.png", _picture(400, 1, 12))
    # names and folders
    c.add("café_日本.jpg", _picture(40, 30, 13))
    c.add("name with spaces.jpg", _picture(40, 30, 14))
    c.add("UPPER.JPG", _picture(40, 30, 15))
    c.add("png_named.jpg", _picture(40, 30, 16), format="PNG")
    c.add("a/x.jpg", _picture(40, 30, 17))
    c.add("b/x.jpg", _picture(30, 40, 18))
    c.add("folder.jpg/inner.png", _picture(24, 24, 19))
    (root / "link.jpg").symlink_to("plain.jpg")
    c.good["link.jpg"] = (48, 32)
    (root / "b" / "up").symlink_to("..", target_is_directory=True)  # a loop back to the root
    (root / "broken" / "dangling.jpg").symlink_to("gone.jpg")
    c.bad["broken/dangling.jpg"] = "dangling symlink"
    (root / "broken" / "loop_a.jpg").symlink_to("loop_b.jpg")
    (root / "broken" / "loop_b.jpg").symlink_to("loop_a.jpg")
    c.bad["broken/loop_a.jpg"] = c.bad["broken/loop_b.jpg"] = "symbolic links"
    locked = c.add("locked.jpg", _picture(40, 30, 20))
    locked.chmod(0)
    if not IS_ROOT:  # root reads a mode-000 file anyway
        del c.good["locked.jpg"]
        c.bad["locked.jpg"] = "permission denied"
    return c


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    return _build_corpus(tmp_path_factory.mktemp("corpus"))


@dataclass
class Run:
    out: Path
    summary: object
    stderr: str
    document: dict
    manifest: dict


@pytest.fixture(scope="module")
def run(corpus, tiny_checkpoint, tmp_path_factory) -> Run:
    out = tmp_path_factory.mktemp("run") / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        summary = ground([corpus.root], PHRASES, out_dir=out, model=tiny_checkpoint, config=RUN)
    document = json.loads((out / "annotations.json").read_text(encoding="utf-8"))
    manifest = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return Run(out, summary, stderr.getvalue(), document, manifest)


def test_every_good_image_once_with_its_displayed_size(corpus, run):
    sizes = [(img["file_name"], (img["width"], img["height"])) for img in run.document["images"]]
    assert sorted(sizes) == sorted(corpus.good.items())
    assert run.summary.grounded == len(corpus.good)
    assert run.summary.images == len(corpus.good) + len(corpus.bad)


def test_every_bad_file_is_skipped_with_a_reason_and_nothing_else(corpus, run):
    skipped = {s["file"]: s["reason"] for s in run.manifest["skipped"]}
    assert sorted(skipped) == sorted(corpus.bad)
    for name, words in corpus.bad.items():
        assert words in skipped[name], (name, skipped[name])
        assert "\n" not in skipped[name]
    assert "too large" in skipped["broken/bomb.png"]


def test_one_warning_line_per_skipped_file(corpus, run):
    lines = [line for line in run.stderr.splitlines() if line.startswith("warning: skipped ")]
    assert len(lines) == len(corpus.bad), run.stderr
    for name in corpus.bad:
        assert sum(str(corpus.root / name) + ":" in line for line in lines) == 1, name


def test_bombs_are_refused_without_decoding(corpus, monkeypatch):
    def no_decoding(self):
        raise AssertionError("a decompression bomb was decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    for name in ("broken/bomb.png", "broken/bomb_header.png"):
        start = time.perf_counter()
        with pytest.raises(ImageDecodeError, match="too large"):
            load_rgb(corpus.root / name)
        assert time.perf_counter() - start < 1.0


def test_same_names_in_different_folders_stay_apart(run):
    document, out = run.document, run.out
    names = [img["file_name"] for img in document["images"]]
    assert len(names) == len(set(names)) and {"a/x.jpg", "b/x.jpg"} <= set(names)
    from vgtool.writers.overlays import overlay_path

    overlays = [overlay_path(out, name) for name in names]
    assert len(set(overlays)) == len(names) and all(path.is_file() for path in overlays)
    assert (out / "overlays" / "a" / "x.jpg").read_bytes() != (out / "overlays" / "b" / "x.jpg").read_bytes()
    crops = sorted(p.relative_to(out).as_posix() for p in (out / "crops").rglob("*.jpg"))
    assert len(crops) == len(document["annotations"]) == len(names) * 2  # top-1 per phrase
    assert len({p.rsplit("_", 1)[0] for p in crops if "/x_" in p}) == 2  # x_<id> per category


def test_exif_orientations_ground_like_the_upright_picture(corpus, run, tiny_checkpoint, tmp_path):
    """The upright reference is the stored JPEG's own pixels, turned by hand (no EXIF involved)."""
    upright = tmp_path / "upright"
    upright.mkdir()
    for orientation, turn in DISPLAYED_FROM_STORED.items():
        with Image.open(corpus.root / f"exif/orient_{orientation}.jpg") as stored:
            pixels = turn(np.asarray(stored.convert("RGB")))
        Image.fromarray(np.ascontiguousarray(pixels)).save(upright / f"orient_{orientation}.png")
    config = GroundConfig(**{**vars(RUN), "num_workers": 0, "crops": False, "overlays": False})
    ground([upright], PHRASES, out_dir=tmp_path / "out", model=tiny_checkpoint, config=config)
    reference = json.loads((tmp_path / "out" / "annotations.json").read_text())

    def boxes(document, name):
        (image_id,) = [img["id"] for img in document["images"] if img["file_name"] == name]
        return [(a["category_id"], a["bbox"]) for a in document["annotations"] if a["image_id"] == image_id]

    for orientation in DISPLAYED_FROM_STORED:
        expected = boxes(reference, f"orient_{orientation}.png")
        assert expected and boxes(run.document, f"exif/orient_{orientation}.jpg") == expected, orientation


@pytest.mark.parametrize(
    ("name", "pixel", "colour"),
    [
        ("anim.gif", (5, 5), (255, 0, 0)),  # first frame (red), not blue or green
        ("rgba.png", (0, 0), (255, 255, 255)),  # alpha 0 in the top-left corner -> white
        ("tiny_1x1.png", (0, 0), (255, 165, 0)),
    ],
)
def test_decoded_pixels(corpus, name, pixel, colour):
    assert load_rgb(corpus.root / name).getpixel(pixel) == pytest.approx(colour, abs=2)


def test_corrupt_exif_is_decoded_without_noise(corpus):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert load_rgb(corpus.root / "exif/corrupt_exif.jpg").size == (48, 32)
    assert not caught


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (struct.error("unpack requires a buffer of 4 bytes"), "cannot decode (error: unpack requires"),
        (OSError("broken data stream\nwhen reading"), "corrupt or truncated image (broken data stream when"),
        (IsADirectoryError(21, "Is a directory"), "cannot read file (Is a directory)"),
    ],
)
def test_any_decoder_failure_becomes_a_one_line_reason(corpus, monkeypatch, error, reason):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(Image, "open", fail)
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(corpus.root / "plain.jpg")
    assert str(info.value).startswith(reason)


def test_palette_transparency_becomes_white(tmp_path):
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 200, 0, 0] + [0] * 762)
    image.putpixel((0, 0), 0)
    image.save(tmp_path / "p.png", transparency=0)
    loaded = load_rgb(tmp_path / "p.png")
    assert loaded.getpixel((0, 0)) == (255, 255, 255) and loaded.getpixel((1, 1)) == (200, 0, 0)


def test_listing_ignores_text_files_in_folders_but_reads_a_text_path_as_a_list(corpus, tmp_path):
    names = [e.file_name for e in list_images([corpus.root], recursive=True)]
    assert "readme.txt" not in names and "broken/dangling.jpg" in names
    assert not any(n.startswith("b/up/") for n in names)  # the symlink loop is cut
    listing = tmp_path / "images.txt"
    listing.write_text(f"{corpus.root / 'plain.jpg'}\n# a comment\n{corpus.root / 'café_日本.jpg'}\n")
    assert [e.file_name for e in list_images([listing])] == ["café_日本.jpg", "plain.jpg"]


@pytest.fixture
def small_folder(corpus, tmp_path) -> Path:
    folder = tmp_path / "small"
    folder.mkdir()
    (folder / "good.jpg").write_bytes((corpus.root / "plain.jpg").read_bytes())
    (folder / "empty.jpg").write_bytes(b"")
    return folder


def _cli_args(folder: Path, out: Path, model: Path) -> list[str]:
    args = ["ground", str(folder), "-p", "dog", "--model", str(model), "--out", str(out)]
    return [*args, "--threshold", "0", "--top-k", "1", "--workers", "0", "--quiet"]


def test_cli_exits_3_when_something_was_skipped(small_folder, tiny_checkpoint, tmp_path):
    result = CliRunner().invoke(app, _cli_args(small_folder, tmp_path / "out", tiny_checkpoint))
    assert result.exit_code == 3, result.output
    manifest = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [s["file"] for s in manifest["skipped"]] == ["empty.jpg"]


def test_cli_strict_fails_with_one_error_line(small_folder, tiny_checkpoint, tmp_path, capfd):
    with pytest.raises(SystemExit) as exit_info:
        main([*_cli_args(small_folder, tmp_path / "out", tiny_checkpoint), "--strict"])
    assert exit_info.value.code == 1
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "empty.jpg" in err[0], err
