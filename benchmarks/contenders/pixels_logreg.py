"""The no-transfer baseline: logistic regression on raw pixels (grey, 28x28), C chosen by 3-fold CV.

A command-line contender: ``--train DIR --test DIR --seed N``; prints one JSON line with the test
accuracy and the predicted class of every test image, as `autotransfer bench` expects of any external tool.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SIZE = 28
# the image files autotransfer reads (its IMAGE_EXTENSIONS), so the bench scores the same test files
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}


def read_folder(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(pixels (n, SIZE*SIZE) in 0..1, class names (n,), paths) of an ImageFolder's images, in a fixed order."""
    rows, labels, paths = [], [], []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in SUFFIXES:
                with Image.open(path) as image:
                    rows.append(np.asarray(image.convert("L").resize((SIZE, SIZE)), dtype=np.float32).ravel() / 255)
                labels.append(class_dir.name)
                paths.append(str(path))
    return np.stack(rows), np.array(labels), paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--test", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    x_train, y_train, _ = read_folder(args.train)
    x_test, y_test, test_paths = read_folder(args.test)
    model = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(max_iter=500, random_state=args.seed)),
        {"logisticregression__C": [0.01, 0.1, 1.0]},
        cv=3,
    )
    model.fit(x_train, y_train)
    predicted = model.predict(x_test)
    print(
        json.dumps(
            {
                "test_accuracy": float((predicted == y_test).mean()),
                "what": f"logistic regression on {SIZE}x{SIZE} grey pixels, "
                f"C={model.best_params_['logisticregression__C']:g}",
                "test_predictions": dict(zip(test_paths, predicted.tolist())),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
