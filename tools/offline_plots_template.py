"""Write `.dvc/plots.html`: DVC's plots page with Vega, Vega-Lite and Vega-Embed inline, so
`dvc plots show` / `dvc plots diff` pages render without the internet (DVC's own page loads
them from a CDN and is blank offline). `.dvc/config` points `plots.html_template` at it.

    python tools/offline_plots_template.py            # npm pack the pinned versions
    python tools/offline_plots_template.py --from DIR # or take DIR/<name>/package/build

The three libraries are BSD-3-Clause (the Vega project, University of Washington
Interactive Data Lab); their notice is kept in the page.
"""

from __future__ import annotations

import argparse
import subprocess
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = REPO / ".dvc" / "plots.html"
#: (npm package, version, built file): the versions dvc-render expects or newer, compatible
LIBRARIES = (("vega", "5.33.1", "vega.min.js"), ("vega-lite", "5.23.0", "vega-lite.min.js"),
             ("vega-embed", "6.29.0", "vega-embed.min.js"))

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>DVC plots</title>
<!-- Vega {versions}: BSD-3-Clause, Copyright (c) the Vega project / University of
     Washington Interactive Data Lab. Inlined by tools/offline_plots_template.py so the
     page renders offline. -->
{scripts}
<style>body {{ font-family: sans-serif; }} table {{ border-spacing: 15px; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def packed(folder: Path) -> dict[str, str]:
    """{package: minified source} from npm-packed tarballs or unpacked packages in folder."""
    sources = {}
    for name, version, built in LIBRARIES:
        unpacked = folder / f"{name}-{version}" / "package" / "build" / built
        if not unpacked.is_file():
            with tarfile.open(folder / f"{name}-{version}.tgz") as archive:
                archive.extractall(folder / f"{name}-{version}", filter="data")
        sources[name] = unpacked.read_text(encoding="utf-8")
    return sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="folder", type=Path,
                        help="a folder with the packed or unpacked npm packages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        if args.folder is None:
            subprocess.run(["npm", "pack", "--silent",
                            *(f"{name}@{version}" for name, version, _ in LIBRARIES)],
                           cwd=folder, check=True, stdout=subprocess.DEVNULL)
        sources = packed(folder)
    escaped = [source.replace("</script", "<\\/script") for source in sources.values()]
    scripts = "\n".join(f'<script type="text/javascript">\n{source}\n</script>'
                        for source in escaped)
    versions = ", ".join(f"{name} {version}" for name, version, _ in LIBRARIES)
    TARGET.write_text(PAGE.format(versions=versions, scripts=scripts), encoding="utf-8")
    print(f"wrote {TARGET} ({TARGET.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
