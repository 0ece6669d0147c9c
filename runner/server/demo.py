"""The demo dataset: 2,537 real COCO val2017 images, built once into a cache, and its queries.

Built from the shipped `runner/server/data/coco-val2017-captions.jsonl` (COCO annotations,
CC BY 4.0, COCO Consortium, cocodataset.org; no images, only names, sizes and captions):

- `caption` = the image's first human caption. It plays the dataset's AI-generated caption
  (CAPTION_IMAGES); the other captions are kept out of the index and make the known-item queries.
- `labels` = the COCO category names that any of the image's captions mentions, found by words
  and a few plural and synonym forms (`people`, `man`, `woman` -> person; `bike` -> bicycle).
  A stand-in for the hosted tagging enrichment (IMAGE_TAGGING): silver, not ground truth.
- `tags` = synthetic user tags, so that tag filters can be tested: `DEMO_TAGS` maps a tag's name
  to its id (uuid5); an image holds a tag by a fixed rule on its COCO image id (see `_tags_for`).
  They mean nothing about the image.
- `media_id` = `derive_media_id(file_name)`; `media_uri` = the image's public COCO URL.
- `image_embedding` = the normalised mean of the MiniLM embeddings of the image's human captions
  beyond the first two: a stand-in for the hosted image-level embedding (MULTIMODEL_IMAGE_ENCODING)
  with no pixels at hand, built from what the data knows about the image beyond its AI caption.
  The first caption plays the AI caption (caption search ranks by it) and the second is the
  known-item query, held out so that semantic search is not asked a question whose answer it was
  built from. Every COCO image here has at least five captions, so at least three are averaged.

`demo_dataset_dir()` builds the dataset once into `$VLBENCH_CACHE` (default `~/.cache/vlbench`)
under `datasets/demo-<key>`, where the key hashes the shipped data and `DEMO_BUILD_VERSION`:
changing either builds afresh. The build goes to a temporary directory renamed into place, so
two processes racing to build both end up using one complete directory.

`write_demo_queries(dir)` writes the demo's known-answer queries (checked in under `queries/`):
`demo-queries.tsv` (`query_id<TAB>text`, no header), `demo.qrels` (TREC: `query_id 0 media_id
grade`; a known-item query's image is graded 2) and `demo-labels.tsv` (`query_id<TAB>label`, one
label a line: the label queries' silver judgments, an image holding the label is relevant).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from runner.errors import DatasetError
from runner.server.dataset import (
    DATASET_FILE,
    FORMAT_VERSION,
    TextEncoder,
    derive_media_id,
    import_dataset,
)

__all__ = [
    "COCO_CATEGORIES",
    "DEMO_BUILD_VERSION",
    "DEMO_DATASET_ID",
    "DEMO_DATA_FILE",
    "DEMO_DISPLAY_NAME",
    "DEMO_LABEL_QUERIES",
    "DEMO_TAGS",
    "DemoImage",
    "cache_dir",
    "demo_dataset_dir",
    "demo_images",
    "image_embedding_captions",
    "demo_queries",
    "labels_mentioned",
    "write_demo_queries",
]

DEMO_DATASET_ID: Final = "demo"
DEMO_DISPLAY_NAME: Final = "COCO val2017 captions (demo)"
# Bump when the demo's rows (captions, labels, tags, image embeddings) or the dataset format change.
DEMO_BUILD_VERSION: Final = 3
DEMO_DATA_FILE: Final = Path(__file__).parent / "data" / "coco-val2017-captions.jsonl"

_TAG_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://vlbench.invalid/demo-tags")
# Synthetic user tags: name -> id.
DEMO_TAGS: Final = {
    name: str(uuid.uuid5(_TAG_NAMESPACE, name)) for name in ("favourite", "needs-review")
}

# The 80 COCO categories, each with the words that name it in captions (the first is the name).
# Forms are singular; `labels_mentioned` also accepts -s/-es/-ies plurals of a form's last word.
COCO_CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "person": (
        "person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children",
        "kid", "guy", "lady", "ladies", "player", "skier", "surfer", "skateboarder",
        "snowboarder", "batter", "pitcher", "catcher", "persons",
    ),
    "bicycle": ("bicycle", "bike", "cyclist"),
    "car": ("car", "automobile", "sedan", "taxi"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "moped", "dirt bike"),
    "airplane": ("airplane", "plane", "jet", "aircraft", "airliner", "aeroplane"),
    "bus": ("bus", "busses", "double decker"),
    "train": ("train", "locomotive"),
    "truck": ("truck", "pickup truck", "lorry"),
    "boat": ("boat", "ship", "sailboat", "kayak", "canoe", "yacht", "ferry"),
    "traffic light": ("traffic light", "stop light", "stoplight", "traffic signal"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench",),
    "bird": ("bird", "pigeon", "seagull", "gull", "duck", "parrot", "goose", "geese"),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "puppies"),
    "horse": ("horse", "pony"),
    "sheep": ("sheep", "lamb"),
    "cow": ("cow", "cattle", "bull", "calf", "calves"),
    "elephant": ("elephant",),
    "bear": ("bear", "polar bear", "grizzly"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "back pack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse", "hand bag"),
    "tie": ("tie", "necktie"),
    "suitcase": ("suitcase", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("sports ball", "ball", "soccer ball", "tennis ball", "baseball", "football"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard", "surf board"),
    "tennis racket": ("tennis racket", "racket", "racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass", "wineglass"),
    "cup": ("cup", "mug"),
    "fork": ("fork",),
    "knife": ("knife", "knives"),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "sandwiches"),
    "orange": ("oranges",),  # the bare word is mostly a colour in captions
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake"),
    "chair": ("chair",),
    "couch": ("couch", "couches", "sofa"),
    "potted plant": ("potted plant", "houseplant", "plant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table"),
    "toilet": ("toilet",),
    "tv": ("tv", "television"),
    "laptop": ("laptop",),
    "mouse": ("computer mouse", "mouse"),
    "remote": ("remote", "remote control"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "cellphone", "phone", "smartphone", "mobile phone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy", "stuffed bear"),
    "hair drier": ("hair drier", "hair dryer", "blow dryer"),
    "toothbrush": ("toothbrush", "tooth brush"),
}  # fmt: skip

# Label queries of the demo: (query id, text, label); silver judgments by label.
DEMO_LABEL_QUERIES: Final = (
    ("label-dog", "a dog", "dog"),
    ("label-cat", "a cat", "cat"),
    ("label-pizza", "pizza", "pizza"),
    ("label-giraffe", "a giraffe", "giraffe"),
    ("label-elephant", "an elephant", "elephant"),
    ("label-train", "a train", "train"),
    ("label-clock", "a clock", "clock"),
    ("label-laptop", "a laptop computer", "laptop"),
    ("label-kite", "a kite in the sky", "kite"),
    ("label-surfboard", "a surfboard", "surfboard"),
    ("label-teddy-bear", "a teddy bear", "teddy bear"),
    ("label-fire-hydrant", "a fire hydrant", "fire hydrant"),
    ("label-toilet", "a toilet", "toilet"),
    ("label-motorcycle", "a motorcycle", "motorcycle"),
    ("label-umbrella", "an umbrella", "umbrella"),
    ("label-stop-sign", "a stop sign", "stop sign"),
)
_KNOWN_ITEM_QUERIES: Final = 60
_QUERY_SEED: Final = 20_170_814
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True, slots=True)
class DemoImage:
    """One row of the shipped data."""

    image_id: int
    file_name: str
    width: int
    height: int
    captions: tuple[str, ...]

    @property
    def media_id(self) -> str:
        return derive_media_id(self.file_name)


def demo_images(path: Path = DEMO_DATA_FILE) -> list[DemoImage]:
    """The shipped COCO rows, in file order."""
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            out.append(
                DemoImage(
                    image_id=int(obj["image_id"]),
                    file_name=str(obj["file_name"]),
                    width=int(obj["width"]),
                    height=int(obj["height"]),
                    captions=tuple(str(c).strip() for c in obj["captions"]),
                )
            )
    return out


def labels_mentioned(texts: Iterator[str] | tuple[str, ...] | list[str]) -> list[str]:
    """The COCO category names the texts mention, in `COCO_CATEGORIES` order.

    A form matches as whole words; its last word may carry an -s, -es or -ies plural. At each
    position the longest form wins, so "teddy bear" is a teddy bear, not also a bear.
    """
    found: set[str] = set()
    for text in texts:
        words = _WORD.findall(text.lower())
        i = 0
        while i < len(words):
            hit = _longest_form_at(words, i)
            if hit is None:
                i += 1
                continue
            category, length = hit
            found.add(category)
            i += length
    return [name for name in COCO_CATEGORIES if name in found]


def demo_queries(
    images: list[DemoImage] | None = None,
) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]], list[tuple[str, str]]]:
    """The demo's queries, qrels and label judgments (see the module docstring).

    Known-item queries: a seeded sample of images with at least two captions; the query is the
    image's second caption, its answer the image (grade 2). Label queries: `DEMO_LABEL_QUERIES`.
    Returns (queries [(id, text)], qrels [(id, media_id, grade)], labels [(id, label)]).
    """
    images = demo_images() if images is None else images
    eligible = [im for im in images if len(im.captions) >= 2]
    picked = random.Random(_QUERY_SEED).sample(eligible, _KNOWN_ITEM_QUERIES)
    picked.sort(key=lambda im: im.image_id)
    queries = [(f"known-{im.image_id}", _one_line(im.captions[1])) for im in picked]
    qrels = [(f"known-{im.image_id}", im.media_id, 2) for im in picked]
    queries += [(qid, text) for qid, text, _ in DEMO_LABEL_QUERIES]
    labels = [(qid, label) for qid, _, label in DEMO_LABEL_QUERIES]
    return queries, qrels, labels


def write_demo_queries(directory: Path) -> list[Path]:
    """Write demo-queries.tsv, demo.qrels and demo-labels.tsv into `directory`; their paths."""
    queries, qrels, labels = demo_queries()
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "demo-queries.tsv": "".join(f"{qid}\t{text}\n" for qid, text in queries),
        "demo.qrels": "".join(f"{qid} 0 {mid} {grade}\n" for qid, mid, grade in qrels),
        "demo-labels.tsv": "".join(f"{qid}\t{label}\n" for qid, label in labels),
    }
    paths = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def cache_dir() -> Path:
    """`$VLBENCH_CACHE`, or `~/.cache/vlbench`."""
    configured = os.environ.get("VLBENCH_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "vlbench"


def demo_dataset_dir(*, encoder: TextEncoder | None = None) -> Path:
    """The demo dataset's directory, built on first use (about a minute on 2 cores).

    Safe when several processes ask at once: each may build, the first rename wins, the others
    use it. `encoder` defaults to the real MiniLM encoder.
    """
    target = cache_dir() / "datasets" / f"demo-{_demo_key()}"
    if (target / DATASET_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    if encoder is None:
        from runner.server.encoder import load_encoder

        encoder = load_encoder()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".demo-rows-") as scratch:
        rows = Path(scratch) / "demo.jsonl"
        _write_demo_rows(rows, encoder)
        try:
            import_dataset(
                rows,
                DEMO_DATASET_ID,
                target,
                encoder=encoder,
                display_name=DEMO_DISPLAY_NAME,
            )
        except DatasetError:
            if (target / DATASET_FILE).is_file():
                return target  # another process finished first
            raise
    return target


def _demo_key() -> str:
    digest = hashlib.sha256()
    digest.update(DEMO_DATA_FILE.read_bytes())
    digest.update(f"build={DEMO_BUILD_VERSION};format={FORMAT_VERSION}".encode())
    return digest.hexdigest()[:16]


def image_embedding_captions(image: DemoImage) -> tuple[str, ...]:
    """The captions whose mean embedding stands in for the image's (see the module docstring)."""
    beyond = image.captions[2:]
    return beyond or image.captions[1:] or image.captions


def _write_demo_rows(path: Path, encoder: TextEncoder) -> None:
    images = demo_images()
    texts = [image_embedding_captions(im) for im in images]
    flat = encoder.encode([c for group in texts for c in group])
    bounds = np.cumsum([0, *(len(group) for group in texts)])
    with path.open("w", encoding="utf-8") as f:
        for i, im in enumerate(images):
            mean = flat[bounds[i] : bounds[i + 1]].astype(np.float64).mean(axis=0)
            row = {
                "media_id": im.media_id,
                "file_name": im.file_name,
                "caption": im.captions[0],
                "labels": labels_mentioned(im.captions) or None,
                "tags": _tags_for(im.image_id) or None,
                "width": im.width,
                "height": im.height,
                "media_uri": f"http://images.cocodataset.org/val2017/{im.file_name}",
                "image_embedding": (mean / np.linalg.norm(mean)).round(7).tolist(),
            }
            f.write(json.dumps(row) + "\n")


def _tags_for(image_id: int) -> list[str]:
    """Synthetic: every 7th image id is a favourite, every 11th needs review (some both)."""
    tags = []
    if image_id % 7 == 0:
        tags.append(DEMO_TAGS["favourite"])
    if image_id % 11 == 0:
        tags.append(DEMO_TAGS["needs-review"])
    return tags


def _one_line(text: str) -> str:
    return " ".join(text.split())


_FORMS: Final = {
    tuple(form.split()): category for category, forms in COCO_CATEGORIES.items() for form in forms
}
_MAX_FORM_WORDS: Final = max(len(words) for words in _FORMS)


def _longest_form_at(words: list[str], i: int) -> tuple[str, int] | None:
    for length in range(min(_MAX_FORM_WORDS, len(words) - i), 0, -1):
        *head, last = words[i : i + length]
        for singular in _singulars(last):
            category = _FORMS.get((*head, singular))
            if category is not None:
                return category, length
    return None


def _singulars(word: str) -> list[str]:
    """The word and the singulars its plural ending could stand for."""
    out = [word]
    if word.endswith("ies") and len(word) > 4:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 3:
        out.append(word[:-2])
    if word.endswith("s") and len(word) > 2:
        out.append(word[:-1])
    return out
