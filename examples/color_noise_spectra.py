"""Draw the radially averaged power spectrum of each generated noise colour (PIL + NumPy only)
into docs/color_noise_spectra.png.

    python examples/color_noise_spectra.py [--output docs/color_noise_spectra.png]
"""

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

from mim_hub.layers.mask_color_noise import FILTERS, generate_noise_patterns, radial_power_spectrum

COLOURS = {"red": (200, 30, 30), "blue": (30, 60, 200), "green": (20, 150, 40), "purple": (130, 40, 160)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "..", "docs", "color_noise_spectra.png"))
    args = parser.parse_args()
    width, height, margin = 640, 360, 50
    image = Image.new("RGB", (width, height + 120), "white")
    draw = ImageDraw.Draw(image)
    spectra = {c: np.log10(radial_power_spectrum(generate_noise_patterns(c, count=64, size=64, seed=0)) + 1e-9) for c in FILTERS}
    low = min(s[1:].min() for s in spectra.values())
    high = max(s[1:].max() for s in spectra.values())
    draw.rectangle([margin, 10, width - 10, height - margin], outline="black")
    for colour, spectrum in spectra.items():
        xs = np.linspace(margin, width - 10, len(spectrum) - 1)
        ys = (height - margin) - (spectrum[1:] - low) / (high - low) * (height - margin - 20)
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=COLOURS[colour], width=2)
    draw.text((margin, height - margin + 8), "spatial frequency (cycles per 64 px, 1 ... 31) ->", fill="black")
    draw.text((5, 12), "log10 power", fill="black")
    for i, (colour, (description, _)) in enumerate(FILTERS.items()):
        draw.text((margin, height - 10 + 16 * i), f"{colour}: {description}", fill=COLOURS[colour])
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    image.save(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
