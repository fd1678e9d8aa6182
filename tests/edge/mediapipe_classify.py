"""Classify images with MediaPipe Tasks' ImageClassifier, as an Android app would; prints JSON.

Run by tests/edge/test_edge_mediapipe.py with the Python of the MediaPipe environment (mediapipe cannot share
the project's environment: their absl-py pins conflict). Input, one JSON object on stdin:
{"models": [paths], "images": [paths]}. Output: {model: [[index, category_name, score], ...] per image}.
"""

import json
import sys

import mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision


def classify(models, images):
    out = {}
    loaded = [mp.Image.create_from_file(path) for path in images]
    for model in models:
        options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model), max_results=1)
        with vision.ImageClassifier.create_from_options(options) as classifier:
            rows = []
            for image in loaded:
                top = classifier.classify(image).classifications[0].categories[0]
                rows.append([top.index, top.category_name, top.score])
            out[model] = rows
    return out


if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(classify(request["models"], request["images"]), sys.stdout)
