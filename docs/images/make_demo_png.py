"""Make docs/images/demo.png from a demo run: four annotated frames of the drive video.

    python docs/images/make_demo_png.py edgecam-demo
"""

import sys
from pathlib import Path

import cv2
import numpy as np


def main(demo_dir: str) -> None:
    cap = cv2.VideoCapture(str(Path(demo_dir) / "drive_explained.mp4"))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    picks = [int(count * f) for f in (0.05, 0.3, 0.45, 0.6)]
    frames = []
    for index in picks:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = cap.read()
        if ok:
            frames.append(frame)
    cap.release()
    grid = np.vstack([np.hstack(frames[:2]), np.hstack(frames[2:4])])
    out = Path(__file__).with_name("demo.png")
    cv2.imwrite(str(out), grid, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {out} {grid.shape}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "edgecam-demo")
