"""The compact image list: the same images, names, paths, order and errors as a list of
``ImageEntry`` objects built the straightforward way, at a few tens of bytes per image."""

from __future__ import annotations

import contextlib
import glob
import os
import pickle
import random
import tracemalloc
from pathlib import Path

import pytest

from vgtool.data import listing
from vgtool.data.image_list import ImageEntry, ImageList, ImageListBuilder
from vgtool.data.listing import image_root, list_images
from vgtool.data.output_folders import OutputFolders
from vgtool.errors import InputError

BIG = 20_000


# ---- the reference: the listing as a dict of ImageEntry objects, sorted at the end -------------


def _reference_is_image(path: Path, exts: tuple[str, ...]) -> bool:
    if path.suffix.lower() not in exts:
        return False
    return path.is_file() or (path.is_symlink() and not path.exists())


def _reference_walk(
    folder: Path, recursive: bool, exts: tuple[str, ...], outputs: OutputFolders
) -> list[Path]:
    if not recursive:
        try:
            return [p for p in folder.iterdir() if _reference_is_image(p, exts)]
        except OSError as err:
            raise InputError(f"{folder}: cannot list folder ({err.strerror})") from err
    found: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if (
            real in seen_dirs
            or outputs.excluded(real, folder=True)
            or (dirpath != str(folder) and outputs.other_run(dirpath, filenames))
        ):
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        found += [Path(dirpath) / n for n in filenames if _reference_is_image(Path(dirpath) / n, exts)]
    return found


def _reference_read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: cannot read image list ({err})") from err
    listed = [
        Path(line.strip()).expanduser() for line in lines if line.strip() and not line.strip().startswith("#")
    ]
    return [p if p.is_absolute() else path.parent / p for p in listed]


def _reference_glob_root(pattern: str) -> Path:
    prefix = []
    for part in Path(pattern).parts:
        if glob.has_magic(part):
            break
        prefix.append(part)
    return Path(*prefix) if prefix else Path(".")


def reference_list_images(inputs, recursive=False, extensions=None, *, exclude=()) -> list[ImageEntry]:
    exts = (
        tuple("." + e.lower().lstrip(".") for e in extensions) if extensions else listing.DEFAULT_EXTENSIONS
    )
    outputs = OutputFolders(exclude)
    groups: list[tuple[Path, list[Path]]] = []
    for raw in inputs:
        text = str(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            groups.append((path, _reference_walk(path, recursive, exts, outputs)))
        elif path.is_file() and path.suffix.lower() in listing.LIST_SUFFIXES:
            groups.append((path.parent, _reference_read_list(path)))
        elif path.is_file() or path.is_symlink():
            groups.append((path.parent, [path]))
        elif glob.has_magic(text):
            root = _reference_glob_root(text)
            matches = [Path(m) for m in glob.glob(text, recursive=recursive)]
            keep = [
                m
                for m in matches
                if _reference_is_image(m, exts)
                and not outputs.excluded(m)
                and not outputs.under_other_run(m, root)
            ]
            groups.append((root, keep))
        else:
            raise InputError(f"{text}: no such file, folder or glob match")
    if not groups:
        raise InputError("no input paths given")
    roots = [os.path.abspath(root) for root, _ in groups]
    common = Path(os.path.commonpath(roots)) if len(set(roots)) > 1 else Path(roots[0])
    entries: dict[str, ImageEntry] = {}
    for _, paths in groups:
        for path in paths:
            if outputs.excluded(path):
                continue
            absolute = os.path.abspath(path)
            try:
                rel = Path(absolute).relative_to(common).as_posix()
            except ValueError:
                rel = Path(absolute).name
            entries.setdefault(rel, ImageEntry(path=Path(path), file_name=rel))
    if not entries:
        where = ", ".join(map(str, inputs))
        if outputs.skipped or outputs.other_runs:
            raise InputError(
                f"no images found in {where}: only outputs of vgtool runs, which are never inputs"
            )
        raise InputError(f"no images found in {where} (extensions: {' '.join(exts)})")
    return [entries[k] for k in sorted(entries)]


def _outcome(lister, inputs, kwargs):
    """``(file_name, path)`` pairs and the image root, or the error's type and message."""
    try:
        entries = lister(inputs, **kwargs)
    except InputError as err:
        return ("error", str(err))
    return [(e.file_name, e.path) for e in entries], image_root(entries)


# ---- trees --------------------------------------------------------------------------------------


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Path:
    """Everything a folder of images may hold that the listing must get right."""
    base = tmp_path_factory.mktemp("odd")
    root = base / "root"
    names = [
        "a.jpg", "B.JPG", "c.Png", "f.jpeg", ".jpg", "d.", "e.txt", "café_日本.jpg", "sp ace.jpg",
        "a/x.jpg", "a/b/y.png", "a-b/z.jpg", "a.b/w.jpg", "a0/v.jpg", "dir.jpg/inner.jpg",
        "oldrun/run-key.json", "oldrun/journal.jsonl", "oldrun/overlays/p.jpg", "out/q.jpg",
        "same/s.jpg", "same/s.png",
    ]  # fmt: skip
    for name in names:
        _touch(root / name)
    _touch(base / "outside" / "o.jpg")
    with contextlib.suppress(OSError):
        _touch(Path(os.fsdecode(os.fsencode(root) + b"/bad\xff.jpg")))  # not UTF-8 on disk
    (root / "link.jpg").symlink_to("a.jpg")
    (root / "dangling.jpg").symlink_to("missing.jpg")
    (root / "loop1.jpg").symlink_to("loop2.jpg")
    (root / "loop2.jpg").symlink_to("loop1.jpg")
    (root / "a" / "up").symlink_to("..", target_is_directory=True)  # a loop back to the root
    (root / "alias").symlink_to("a", target_is_directory=True)  # a second route to a folder
    (root / "into_out.jpg").symlink_to(root / "out" / "q.jpg")
    (root / "list.txt").write_text(
        "a.jpg\r\n# a comment\n\n  a/x.jpg  \nmissing.jpg\x0cB.JPG\n../outside/o.jpg\na/../a/x.jpg\n"
        f"{root / 'a-b' / 'z.jpg'}\nout/q.jpg\n"
    )
    (root / "bad.lst").write_bytes(b"a.jpg\n\xff\xfe\n")
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Path:
    """BIG empty files in folders whose names sort apart from the order they are walked in."""
    root = tmp_path_factory.mktemp("big")
    folders = ["a", "a-b", "a/b", "a/c", "a.b", "b", "b/a", "c"]
    for i in range(BIG):
        _touch(root / folders[i % len(folders)] / f"img_{i:06d}.jpg")
    return root


ODD_CASES = [
    (["{root}"], {}),
    (["{root}"], {"recursive": True}),
    (["{root}"], {"recursive": True, "exclude": ["{root}/out"]}),
    (["{root}"], {"recursive": True, "extensions": ["PNG", ".jpeg"]}),
    (["{root}/a", "{root}"], {"recursive": True}),
    (["{root}", "{root}/a"], {"recursive": True}),
    (["{root}/alias", "{root}/a"], {"recursive": True}),
    (["{root}/a/x.jpg", "{root}/a/../a/x.jpg"], {}),
    (["{root}/a/../a/x.jpg", "{root}/a/x.jpg"], {}),
    (["{root}/a-b/**/*.jpg", "{root}/*/*.jpg"], {"recursive": True}),  # (** follows symlink loops)
    (["{root}/*/*.jpg", "{root}/*/*/*.jpg"], {"exclude": ["{root}/out"]}),
    (["{root}/*.JPG", "{root}/a/*"], {}),
    (["{root}/list.txt"], {}),
    (["{root}/list.txt"], {"exclude": ["{root}/out"]}),
    (["{root}/list.txt", "{root}"], {"recursive": True}),
    (["{root}/link.jpg", "{root}/dangling.jpg"], {}),
    (["."], {"recursive": True}),
    (["./"], {}),
    ([".//a/", "a-b"], {"recursive": True}),
    (["a/*.jpg", "../outside"], {}),
    (["alias/../a"], {"recursive": True}),
    (["{root}/out"], {"exclude": ["{root}/out"]}),
    (["{root}/oldrun"], {"recursive": True}),
    (["{root}/bad.lst", "{root}/nowhere"], {}),
    (["{root}/nowhere", "{root}/bad.lst"], {}),
    (["{root}/e.txt.bak*"], {}),
    (["{root}/a"], {"extensions": ["gif"]}),
    ([], {}),
]


@pytest.mark.parametrize("small_chunks", [False, True], ids=["default-chunks", "small-chunks"])
@pytest.mark.parametrize(("inputs", "kwargs"), ODD_CASES)
def test_the_listing_is_the_reference_one(odd, monkeypatch, small_chunks, inputs, kwargs):
    monkeypatch.chdir(odd)
    if small_chunks:
        monkeypatch.setattr(ImageListBuilder, "chunk", 3)
        monkeypatch.setattr(listing, "FOLDER_BATCH", 2)
    inputs = [i.format(root=odd) for i in inputs]
    kwargs = {k: [v.format(root=odd) for v in vs] if k == "exclude" else vs for k, vs in kwargs.items()}
    assert _outcome(list_images, inputs, kwargs) == _outcome(reference_list_images, inputs, kwargs)


@pytest.mark.parametrize("small_chunks", [False, True], ids=["default-chunks", "small-chunks"])
def test_a_big_tree_lists_as_the_reference_does(big, monkeypatch, small_chunks):
    if small_chunks:  # sorted chunks that overlap, merged
        monkeypatch.setattr(ImageListBuilder, "chunk", 999)
        monkeypatch.setattr(listing, "FOLDER_BATCH", 700)
    inputs = [big, big / "a", f"{big}/b/*.jpg"]
    kwargs = {"recursive": True}
    found = _outcome(list_images, inputs, kwargs)
    assert len(found[0]) == BIG and found == _outcome(reference_list_images, inputs, kwargs)


def test_a_big_tree_costs_under_120_bytes_per_image_and_pickles_small(big):
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = list_images([big], recursive=True)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(entries) == BIG
    assert held / BIG <= 120, f"{held / BIG:.0f} bytes per image"
    pickled = pickle.dumps(entries)
    assert len(pickled) / BIG <= 60, f"{len(pickled) / BIG:.0f} pickled bytes per image"
    again = pickle.loads(pickled)
    assert isinstance(again, ImageList) and again == entries
    assert len(pickle.dumps(entries[:10])) < 2_000  # a small slice sends only its own images
    assert pickle.loads(pickle.dumps(entries[5:15])) == list(entries)[5:15]


def test_listing_never_holds_an_object_per_image(big, monkeypatch):
    """With chunks smaller than the tree, the peak of Python memory while listing stays near the
    list itself."""
    monkeypatch.setattr(ImageListBuilder, "chunk", 2_000)
    monkeypatch.setattr(listing, "FOLDER_BATCH", 1_000)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        entries = list_images([big], recursive=True)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert len(entries) == BIG
    assert peak / BIG <= 120, f"peak {peak / BIG:.0f} bytes per image"


# ---- the sequence -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def listed(big) -> tuple[ImageList, list[ImageEntry]]:
    entries = list_images([big], recursive=True)
    return entries, reference_list_images([big], recursive=True)


def test_it_is_a_read_only_sequence_like_a_list(listed):
    entries, expected = listed
    assert len(entries) == len(expected) and list(entries) == expected and entries == expected
    assert entries[0] == expected[0] and entries[-1] == expected[-1]
    assert list(entries[10:20]) == expected[10:20] and list(entries[::-997]) == expected[::-997]
    assert isinstance(entries[3:9], ImageList) and list(reversed(entries[:5])) == expected[4::-1]
    assert list(entries.file_names()) == [e.file_name for e in expected]
    assert entries.file_name(7) == expected[7].file_name
    with pytest.raises(IndexError):
        entries[len(expected)]
    with pytest.raises(TypeError):
        entries["a"]
    assert entries != expected[:-1] and entries != "text" and repr(entries) == f"ImageList({BIG} images)"


def test_find_take_and_contains(listed):
    entries, expected = listed
    for k in (0, 1, 4_321, BIG - 1):
        assert entries.find(expected[k].file_name) == k
        assert expected[k] in entries
    assert entries.find("a/nothing.jpg") is None and entries.find("") is None
    assert ImageEntry(path=Path("elsewhere.jpg"), file_name=expected[0].file_name) not in entries
    chosen = [9, 3, 3, 12_000]
    taken = entries.take(chosen)
    assert list(taken) == [expected[k] for k in chosen]
    assert taken.find(expected[12_000].file_name) == 3  # out of order: found one by one
    assert entries[::-1].find(expected[0].file_name) == BIG - 1
    assert entries[100:].find(expected[150].file_name) == 50


def test_find_looks_near_first_and_searches_any_list_by_halves(listed):
    entries, expected = listed
    name = expected[4_321].file_name
    for near in (4_321, 4_320, 0, -1, BIG, None):
        assert entries.find(name, near=near) == 4_321
    assert entries.find("a/nothing.jpg", near=3) is None
    shuffled = list(range(BIG))
    random.Random(5).shuffle(shuffled)
    unsorted = entries.take([*shuffled, shuffled[7]])  # a repeat at the end: the first one wins
    assert unsorted.find(expected[shuffled[7]].file_name, near=BIG) == 7
    assert all(unsorted.find(expected[k].file_name) == i for i, k in enumerate(shuffled[:500]))
    assert unsorted.find("a/nothing.jpg") is None and unsorted.find("") is None


def test_from_entries_keeps_the_order_names_and_paths(odd, listed):
    entries, expected = listed
    assert ImageList.from_entries(entries) is entries
    again = ImageList.from_entries(expected)
    assert (
        isinstance(again, ImageList) and again == expected and again.find(expected[-1].file_name) == BIG - 1
    )
    mixed = [
        ImageEntry(path=Path("x/b.jpg"), file_name="b.jpg"),
        ImageEntry(path=Path("/elsewhere/renamed.png"), file_name="sub/a.png"),
        ImageEntry(path=odd / "café_日本.jpg", file_name="café_日本.jpg"),
        ImageEntry(path=Path("z/z\udcff.jpg"), file_name="z\udcff.jpg"),
        ImageEntry(path=Path("x/a.jpg"), file_name="a.jpg"),
    ]
    made = ImageList.from_entries(mixed)
    assert list(made) == mixed and made == mixed and list(made.file_names()) == [e.file_name for e in mixed]
    assert [made.find(e.file_name) for e in mixed] == [0, 1, 2, 3, 4]
    assert pickle.loads(pickle.dumps(made)) == mixed and made.take([4, 0]) == [mixed[4], mixed[0]]
    assert ImageList.from_entries([]) == [] and ImageList.from_entries([]).find("a.jpg") is None


def test_image_root_of_a_list_and_of_images_from_two_folders(odd, big):
    assert image_root(list_images([big], recursive=True)) == big
    assert image_root(list_images([odd / "a", odd / "a-b"])) == odd
    from_list = list_images([odd / "list.txt"])  # ../outside/o.jpg is named by its name alone
    assert image_root(from_list) is None and image_root(list(from_list)) is None


def test_builder_keeps_the_first_of_a_name_and_sorts_by_code_point():
    builder = ImageListBuilder()
    builder.chunk = 2
    builder.add_folder("", "x/", ["b.jpg", "é.jpg", "a.jpg"])
    builder.add("a.jpg", "y/a.jpg")
    builder.add("z\udcff.jpg", "z/z\udcff.jpg")  # a name that is not UTF-8 on disk
    builder.add_folder("sub/", "x/sub/", ["a.jpg"])
    built = builder.build()
    assert [(e.file_name, str(e.path)) for e in built] == [
        ("a.jpg", "x/a.jpg"),
        ("b.jpg", "x/b.jpg"),
        ("sub/a.jpg", "x/sub/a.jpg"),
        ("z\udcff.jpg", "z/z\udcff.jpg"),
        ("é.jpg", "x/é.jpg"),
    ]


@pytest.mark.parametrize(
    "name", ["a.jpg", "A.JPG", ".jpg", "a.", "a.b.png", "..jpg", "a..jpg", "noext", ".", "x.tar.gz"]
)
def test_suffix_is_the_path_suffix(name):
    assert listing._suffix(name) == Path(name).suffix
