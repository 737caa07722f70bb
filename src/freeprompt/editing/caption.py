"""A caption for a photo given without one: candidate captions ranked by a CLIP model, the best one used as the
source prompt of the inversion and the edit.

An empty source prompt costs a real-image edit its structure: on the shapes fixture, colour edits of photos with
direct inversion keep the object (colour reached AND IoU >= 0.8) far less often with "" than with the photo's
caption (docs/captionless-photos.md). Ranking candidates with a CLIP finds that caption: on the fixture the
candidates are the world's own captions (every colour, shape and one-object template) and the CLIP is the shapes
CLIP that ships with freeprompt; for other models a user gives candidates (a file, one caption per line) and a CLIP
(a hub id or folder, ``openai/clip-vit-large-patch14`` by default).

    from freeprompt.editing.caption import rank_captions, shapes_candidates
    caption = rank_captions(photo, shapes_candidates())   # the shapes CLIP
    edit_real(pipe, photo, caption.text, ["a blue circle"])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput
from ..models.clip import SHAPES_CLIP, load_clip
from ..models.names import FIXTURES
from ..shapes import world

DEFAULT_CLIP = "openai/clip-vit-large-patch14"  # for models other than the shapes fixture
MAX_CANDIDATES = 100_000
SHOWN = 5  # how many of the best candidates a result keeps (run.json records them)


@dataclass
class Caption:
    """The caption chosen for a photo: ``text``, its CLIP similarity, the best candidates with theirs, the CLIP that
    ranked them and how many candidates there were."""

    text: str
    score: float
    clip: str
    candidates: int
    best: list[tuple[str, float]] = field(default_factory=list)

    def record(self) -> dict:
        """What ``run.json`` records."""
        return {"text": self.text, "found": "ranked by CLIP", "clip": self.clip, "score": round(self.score, 4),
                "candidates": self.candidates, "best": [[text, round(score, 4)] for text, score in self.best]}


def shapes_candidates() -> list[str]:
    """The shapes world's captions of one object: every template but ``pair``, colour and shape."""
    return [world.caption(template, color, shape) for template in world.TEMPLATES if template != "pair"
            for color in world.COLORS for shape in world.SHAPES]


def default_candidates(model_id: str) -> list[str] | None:
    """The candidates a photo edit ranks when none are given: the world's captions for the shapes fixture, else
    None (a real model's user gives them)."""
    return shapes_candidates() if model_id in FIXTURES else None


def default_clip(model_id: str) -> str:
    """The CLIP that ranks captions when none is named: the shapes CLIP for the fixture, else ``DEFAULT_CLIP``."""
    return SHAPES_CLIP if model_id in FIXTURES else DEFAULT_CLIP


def read_candidates(path: Path) -> list[str]:
    """Candidate captions from a text file, one per line (blank lines and lines starting with # left out); a
    one-line error for a missing, unreadable or empty file."""
    path = Path(path)
    fix = "give a UTF-8 text file with one candidate caption per line"
    if not path.is_file():
        raise BadInput(f"caption candidates file {path} {'is a folder' if path.is_dir() else 'does not exist'}", fix)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise BadInput(f"cannot read caption candidates from {path} ({type(err).__name__})", fix) from None
    found = list(dict.fromkeys(" ".join(line.split()) for line in lines if line.strip() and
                               not line.lstrip().startswith("#")))
    if not found:
        raise BadInput(f"{path} holds no caption candidates", fix)
    if len(found) > MAX_CANDIDATES:
        raise BadInput(f"{path} holds {len(found)} candidates, more than {MAX_CANDIDATES}", "give fewer candidates")
    return found


class CaptionRanker:
    """A CLIP (``load_clip``: ``shapes``, a hub id or a folder) that ranks candidate captions of a photo."""

    def __init__(self, clip: str = SHAPES_CLIP, device: str = "cpu"):
        self.name, self.device = clip, device
        model, self.processor = load_clip(clip)
        self.model = model.to(device).eval()

    def rank(self, image, candidates: list[str], batch: int = 256) -> Caption:
        """The candidate whose CLIP text embedding is closest (cosine) to the image's."""
        import torch

        candidates = [c for c in dict.fromkeys(candidates) if c.strip()]
        if not candidates:
            raise BadInput("no caption candidates to rank", "give at least one candidate caption")
        with torch.no_grad():
            pixels = self.processor(images=[image.convert("RGB")], return_tensors="pt")["pixel_values"]
            image_emb = _normalised(self.model.get_image_features(pixel_values=pixels.to(self.device)))
            scores = []
            for start in range(0, len(candidates), batch):
                tokens = self.processor(text=candidates[start:start + batch], return_tensors="pt", padding=True,
                                        truncation=True)
                text_emb = _normalised(self.model.get_text_features(**{k: v.to(self.device) for k, v in
                                                                       tokens.items()}))
                scores += (text_emb @ image_emb[0]).tolist()
        order = sorted(range(len(candidates)), key=lambda i: -scores[i])
        best = [(candidates[i], float(scores[i])) for i in order[:SHOWN]]
        return Caption(best[0][0], best[0][1], self.name, len(candidates), best)


def rank_captions(image, candidates: list[str], clip: str = SHAPES_CLIP, device: str = "cpu") -> Caption:
    """The best of ``candidates`` for ``image`` (PIL) by the CLIP ``clip``; see ``CaptionRanker``."""
    return CaptionRanker(clip, device).rank(image, candidates)


def _normalised(features):
    import torch.nn.functional as F

    tensor = features if hasattr(features, "norm") else features.pooler_output  # transformers 5: a model output
    return F.normalize(tensor.float(), dim=-1)


__all__ = ["Caption", "CaptionRanker", "DEFAULT_CLIP", "default_candidates", "default_clip", "rank_captions",
           "read_candidates", "shapes_candidates"]
