"""Captions for photos given without one: the shapes CLIP ranks the world's captions of rendered fixture photos and
names their colour and shape; candidate files are read or refused in one line."""

import pytest
from PIL import Image

from freeprompt.editing.caption import (
    CaptionRanker,
    default_candidates,
    default_clip,
    read_candidates,
    shapes_candidates,
)
from freeprompt.errors import BadInput
from freeprompt.evaluation.edit_sets import shapes_real_edit


@pytest.fixture(scope="module")
def ranker():
    return CaptionRanker("shapes")


def test_the_shapes_clip_names_colour_and_shape_of_rendered_photos(ranker):
    cases = shapes_real_edit(12, seed=5).cases
    hits = 0
    for case in cases:
        caption = ranker.rank(Image.fromarray(case.extra["render"]), shapes_candidates())
        words = caption.text.split()
        hits += case.extra["color"] in words and case.extra["shape"] in words
        assert caption.candidates == len(shapes_candidates()) == 560 and len(caption.best) == 5
        assert caption.best[0] == (caption.text, caption.score) and caption.best[0][1] >= caption.best[1][1]
    assert hits >= 11  # 78 of 80 held-out photos in docs/captionless-photos.md


def test_the_exact_caption_wins_among_close_ones(ranker):
    case = shapes_real_edit(1, seed=3).cases[0]
    close = [f"a {c} {case.extra['shape']}" for c in ("red", "blue", "green", "yellow", "white", "black", "pink",
                                                      "purple", "brown", "orange")]
    caption = ranker.rank(Image.fromarray(case.extra["render"]), close)
    assert caption.text == case.source and caption.record()["found"] == "ranked by CLIP"


def test_defaults_follow_the_model():
    assert default_candidates("shapes") == shapes_candidates() and default_clip("shapes") == "shapes"
    assert default_candidates("stable-diffusion-v1-5/stable-diffusion-v1-5") is None
    assert default_clip("some/model") == "openai/clip-vit-large-patch14"


def test_candidate_files_are_read_or_refused_in_one_line(tmp_path):
    good = tmp_path / "c.txt"
    good.write_text("# a comment\n a photo of a  red car \n\na photo of a red car\na red truck\n")
    assert read_candidates(good) == ["a photo of a red car", "a red truck"]
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    for path, problem in ((tmp_path / "none.txt", "does not exist"), (tmp_path, "is a folder"),
                          (tmp_path / "empty.txt", "holds no caption candidates"),
                          (tmp_path / "binary.txt", "cannot read")):
        with pytest.raises(BadInput) as refused:
            read_candidates(path)
        assert problem in str(refused.value) and "\n" not in str(refused.value)
