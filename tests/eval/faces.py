"""A fixed set of real face photographs shipped by Debian packages, as faceres inputs.

Sources (Debian 12 packages):
  python3-skimage (0.19.3): /usr/lib/python3/dist-packages/skimage/data/
      astronaut.png    Eileen Collins, NASA portrait (public domain), 512x512 RGB
      camera.png       "cameraman", 512x512 grayscale (face in profile)
      lfw_subset.npy   200 x 25 x 25 grayscale crops from Labeled Faces in the Wild;
                       the first 100 are faces (the rest are non-faces, not used)
  python-matplotlib-data (a dependency of python3-matplotlib):
      /usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg  512x600 RGB portrait
Each photo is cropped to a fixed square around the face (boxes below), resized to
224 x 224 with bilinear filtering and scaled to 0..255, RGB, as @vladmandic/human feeds
faceres (face crop in 0..1, times 255). Grayscale images are replicated to 3 channels.
"""
import hashlib
import os

import numpy as np
from PIL import Image

SKIMAGE_DATA = "/usr/lib/python3/dist-packages/skimage/data"
MPL_DATA = "/usr/share/matplotlib/mpl-data/sample_data"
# (label, path, crop box (left, top, right, bottom) in pixels)
PHOTOS = [
    ("astronaut", os.path.join(SKIMAGE_DATA, "astronaut.png"), (152, 40, 302, 190)),
    ("grace_hopper", os.path.join(MPL_DATA, "grace_hopper.jpg"), (145, 100, 375, 330)),
    ("cameraman", os.path.join(SKIMAGE_DATA, "camera.png"), (150, 70, 270, 190)),
]
LFW = os.path.join(SKIMAGE_DATA, "lfw_subset.npy")
LFW_FACES = 100
SIZE = 224


def missing_sources():
    return [p for _, p, _ in PHOTOS if not os.path.exists(p)] + \
        ([] if os.path.exists(LFW) else [LFW])


def _to_input(img):
    img = img.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(img, np.float32)


def load_faces(max_lfw=LFW_FACES):
    """Returns (labels, float32 [N, 224, 224, 3] in 0..255, {path: sha256})."""
    labels, images, hashes = [], [], {}
    for label, path, box in PHOTOS:
        hashes[path] = hashlib.sha256(open(path, "rb").read()).hexdigest()
        labels.append(label)
        images.append(_to_input(Image.open(path).crop(box)))
    hashes[LFW] = hashlib.sha256(open(LFW, "rb").read()).hexdigest()
    lfw = np.load(LFW)[:min(max_lfw, LFW_FACES)]
    for i, face in enumerate(lfw):
        labels.append("lfw_%03d" % i)
        images.append(_to_input(Image.fromarray(np.uint8(np.round(face * 255)), "L")))
    return labels, np.stack(images), hashes
