"""Screenshot of a build report in headless Chromium (how docs/report.png was made).

    python -m pipelines.inspect out --html /tmp/report.html
    python scripts/report_screenshot.py /tmp/report.html docs/report.png --anchor src-c4_en

Needs Debian's ``chromium`` (``apt-get install -y chromium``); the DevTools client is ``tests/headless.py``.
The PNG is reduced to a 64-colour palette so it stays small in the repository.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("html")
    ap.add_argument("png")
    ap.add_argument("--anchor", default=None, help="element id to scroll to (e.g. src-c4_en, mix-mpt30b_8k)")
    ap.add_argument("--width", type=int, default=1200)
    ap.add_argument("--height", type=int, default=1000)
    ap.add_argument("--colors", type=int, default=64)
    args = ap.parse_args()
    from PIL import Image

    from tests.headless import ensure_chromium, render

    binary, why = ensure_chromium()
    if binary is None:
        print(f"error: {why}", file=sys.stderr)
        return 2
    js = f"document.getElementById({json.dumps(args.anchor)}).scrollIntoView(); 1" if args.anchor else "1"
    res = render(binary, args.html, js, width=args.width, height=args.height)
    if res["console"] or res["exceptions"] or res["log"]:
        print(f"warning: the page logged {res['console'] + res['exceptions'] + res['log']}", file=sys.stderr)
    img = Image.open(io.BytesIO(res["png"])).convert("RGB").quantize(args.colors)
    img.save(args.png, optimize=True)
    print(f"wrote {args.png} ({Path(args.png).stat().st_size / 1e3:,.1f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
