"""Background makers follow the folders as named on the command line: symlinked
files and symlinked maker folders keep the maker of the name they are found
under, every image is found once, and a link cycle ends."""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

import pytest

from mimicry.images import ImageBytes, expand_inputs, iter_image_files
from mimicry.portfolio import background_groups


def _file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")  # the walk and the groups never decode
    return path


def _link(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=target.is_dir())
    return link


def _makers(images: list, groups) -> dict[str, set[int]]:
    """Maker (the first sub-folder below ``bg``) -> the groups its images got."""
    out: dict[str, set[int]] = {}
    for img, g in zip(images, groups):
        out.setdefault(Path(img).parts[Path(img).parts.index("bg") + 1], set()).add(int(g))
    return out


@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_symlinked_files_keep_the_maker_they_are_named_under(tmp_path, monkeypatch, relative):
    data = tmp_path / "data" / "x"
    bg = tmp_path / "bg"
    for maker, names in {"monet": ["a.jpg", "b.png"], "degas": ["c.jpg", "d.jpg", "e.webp"]}.items():
        for name in names:
            _link(bg / maker / name, _file(data / f"{maker}-{name}"))
    if relative:
        monkeypatch.chdir(tmp_path)
        bg = Path("bg")
    images = expand_inputs([bg])
    assert images == [bg / "degas" / n for n in ("c.jpg", "d.jpg", "e.webp")] + \
        [bg / "monet" / n for n in ("a.jpg", "b.png")]
    makers = _makers(images, background_groups(images, [bg]))
    assert all(len(g) == 1 for g in makers.values()), makers
    assert makers["monet"] != makers["degas"]


def test_symlinked_maker_folders_are_walked_and_grouped_by_their_names(tmp_path):
    data = tmp_path / "data"
    for rel in ("monet-real/a.jpg", "monet-real/b.png", "degas-real/c.jpg", "degas-real/sketches/d.jpg",
                "degas-real/.hidden.jpg", "degas-real/notes.txt", "hidden-real/h.jpg"):
        _file(data / rel)
    bg = tmp_path / "bg"
    _link(bg / "monet", data / "monet-real")
    _link(bg / "degas", data / "degas-real")
    _link(bg / ".cache", data / "hidden-real")
    _file(bg / "sisley" / "s.jpg")  # a real folder beside the links
    _link(data / "monet-real" / "x", data / "degas-real" / "sketches")  # Degas's, linked from Monet's
    images = expand_inputs([bg])
    assert images == [bg / "degas" / "c.jpg", bg / "degas" / "sketches" / "d.jpg",
                      bg / "monet" / "a.jpg", bg / "monet" / "b.png", bg / "sisley" / "s.jpg"]
    makers = _makers(images, background_groups(images, [bg]))
    assert all(len(g) == 1 for g in makers.values()), makers
    assert len(set().union(*makers.values())) == 3


def test_a_symlink_cycle_ends_and_every_image_is_found_once(tmp_path):
    bg = tmp_path / "bg"
    _file(bg / "monet" / "a.jpg")
    _link(bg / "monet" / "loop", bg / "monet")  # a folder linked into itself
    _link(bg / "monet" / "up", bg)  # and back to the root
    _link(bg / "all", bg)  # a maker folder that is the root itself
    _file(tmp_path / "data" / "degas-real" / "c.jpg")
    _link(bg / "degas", tmp_path / "data" / "degas-real")
    _link(bg / "degas-again", tmp_path / "data" / "degas-real")  # the same real folder twice
    _link(tmp_path / "data" / "degas-real" / "back", bg / "monet")  # a cycle through two links
    # bounded, so that a walk going round the cycle fails here instead of hanging
    found = list(islice(iter_image_files(bg), 50))
    assert found == [bg / "degas" / "c.jpg", bg / "monet" / "a.jpg"]
    assert len({os.path.realpath(p) for p in found}) == len(found)
    groups = background_groups(found, [bg])
    assert groups[0] != groups[1]


def test_groups_as_documented_for_loose_files_uploads_and_side_by_side_folders(tmp_path):
    monet, degas = tmp_path / "monet", tmp_path / "degas"
    m = [_file(monet / "a.jpg"), _file(monet / "b.jpg")]
    d = [_file(degas / "c.jpg"), _file(degas / "sub" / "d.jpg"), _file(degas / "sub" / "e.jpg")]
    loose = _file(tmp_path / "loose.jpg")
    upload = ImageBytes("u.png", b"x")
    g = background_groups(m + d + [loose, upload], [monet, degas, loose, upload])
    assert g[0] == g[1] and g[3] == g[4] and len({g[0], g[2], g[3], g[5], g[6]}) == 5
    # in the only folder given, files lying directly in it are each their own group
    g = background_groups(m, [monet])
    assert g[0] != g[1]
