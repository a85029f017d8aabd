from __future__ import annotations

import os

import pytest

from vgtool.data.listing import list_images
from vgtool.errors import InputError


@pytest.fixture
def tree(tmp_path, image_folder):
    (image_folder / "notes.txt.bak").write_text("x")
    return image_folder


def names(entries):
    return [e.file_name for e in entries]


def test_folder_flat_and_recursive(tree):
    assert names(list_images([tree])) == ["img0.jpg", "img1.jpg", "img2.jpg", "img3.jpg"]
    assert names(list_images([tree], recursive=True))[-1] == "sub/deep.png"


def test_file_glob_and_list_file(tree, tmp_path):
    assert names(list_images([tree / "img1.jpg"])) == ["img1.jpg"]
    assert names(list_images([str(tree / "img[12].jpg")])) == ["img1.jpg", "img2.jpg"]
    listing = tree / "list.txt"
    listing.write_text("# chosen\nimg3.jpg\nsub/deep.png\n\n")
    assert names(list_images([listing])) == ["img3.jpg", "sub/deep.png"]


def test_extension_filter(tree):
    assert names(list_images([tree], recursive=True, extensions=["png"])) == ["sub/deep.png"]


def test_symlink_loop_is_cut(tree):
    os.symlink(tree, tree / "sub" / "loop")
    found = names(list_images([tree], recursive=True))
    assert len(found) == len(set(found)) and "sub/deep.png" in found


@pytest.mark.parametrize("bad", ["does/not/exist", "nothing*.jpg"])
def test_missing_inputs_are_clean_errors(tmp_path, bad):
    with pytest.raises(InputError):
        list_images([str(tmp_path / bad)])
