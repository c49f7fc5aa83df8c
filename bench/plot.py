"""The plot in docs/performance.md: latency against offered load, the project beside the bare
relay, drawn as a PNG by the standard library alone (zlib and struct). A plotting library
would bring a dozen packages into the locked test dependencies for one picture."""

from __future__ import annotations

import itertools
import math
import struct
import zlib
from pathlib import Path
from typing import Any

# A 5x7 bitmap font for the labels: seven rows of five pixels per character, 1 is ink.
FONT = {
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    "a": "00000 00000 01110 00001 01111 10001 01111",
    "b": "10000 10000 10110 11001 10001 10001 11110",
    "c": "00000 00000 01110 10000 10000 10001 01110",
    "d": "00001 00001 01101 10011 10001 10001 01111",
    "e": "00000 00000 01110 10001 11111 10000 01110",
    "f": "00110 01001 01000 11100 01000 01000 01000",
    "g": "01111 10001 10001 01111 00001 10001 01110",
    "h": "10000 10000 10110 11001 10001 10001 10001",
    "i": "00100 00000 01100 00100 00100 00100 01110",
    "j": "00010 00000 00110 00010 00010 10010 01100",
    "k": "10000 10000 10010 10100 11000 10100 10010",
    "l": "01100 00100 00100 00100 00100 00100 01110",
    "m": "00000 00000 11010 10101 10101 10001 10001",
    "n": "00000 00000 10110 11001 10001 10001 10001",
    "o": "00000 00000 01110 10001 10001 10001 01110",
    "p": "00000 11110 10001 10001 11110 10000 10000",
    "q": "00000 01111 10001 10001 01111 00001 00001",
    "r": "00000 00000 10110 11001 10000 10000 10000",
    "s": "00000 00000 01110 10000 01110 00001 11110",
    "t": "01000 01000 11100 01000 01000 01001 00110",
    "u": "00000 00000 10001 10001 10001 10011 01101",
    "v": "00000 00000 10001 10001 10001 01010 00100",
    "w": "00000 00000 10001 10001 10101 10101 01010",
    "x": "00000 00000 10001 01010 00100 01010 10001",
    "y": "00000 10001 10001 10001 01111 00001 01110",
    "z": "00000 00000 11111 00010 00100 01000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011",
}
WHITE, BLACK, GREY = (255, 255, 255), (40, 40, 40), (215, 215, 215)
PROJECT, RELAY = (31, 100, 180), (220, 110, 20)


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def dot(self, x: int, y: int, colour: tuple[int, int, int]) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = 3 * (y * self.width + x)
            self.pixels[i : i + 3] = bytes(colour)

    def line(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        colour: tuple[int, int, int],
        width: int = 1,
        dash: int = 0,
    ) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for step in range(steps + 1):
            if dash and (step // dash) % 2:
                continue
            x = round(x0 + (x1 - x0) * step / steps)
            y = round(y0 + (y1 - y0) * step / steps)
            for dx in range(-(width // 2), width - width // 2):
                for dy in range(-(width // 2), width - width // 2):
                    self.dot(x + dx, y + dy, colour)

    def box(self, x: int, y: int, size: int, colour: tuple[int, int, int]) -> None:
        for dx in range(-size, size + 1):
            for dy in range(-size, size + 1):
                self.dot(x + dx, y + dy, colour)

    def text(
        self, x: int, y: int, words: str, colour: tuple[int, int, int] = BLACK, scale: int = 2
    ) -> int:
        for char in words.lower():
            glyph = FONT.get(char, FONT[" "]).split()
            for row in range(7):
                for col in range(5):
                    if glyph[row][col] == "1":
                        for sx in range(scale):
                            for sy in range(scale):
                                self.dot(x + col * scale + sx, y + row * scale + sy, colour)
            x += 6 * scale
        return x

    def png(self) -> bytes:
        rows = b"".join(
            b"\x00" + bytes(self.pixels[3 * y * self.width : 3 * (y + 1) * self.width])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack(">I", len(data))
                + kind
                + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
            )

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b"")
        )


def text_width(words: str, scale: int = 2) -> int:
    return 6 * scale * len(words)


def draw(lines: list[dict[str, Any]], path: Path) -> None:
    """Latency (log scale) against offered load (log scale): p99 solid, p50 dashed."""
    points = [line for line in lines if line.get("offered_rate")]
    if not points:
        return
    width, height = 900, 580
    left, right, top, bottom = 110, 40, 60, 110
    canvas = Canvas(width, height)
    rates = sorted({line["offered_rate"] for line in points})
    latencies = [
        v
        for line in points
        for key in ("p50_ms", "p99_ms", "relay_p50_ms", "relay_p99_ms")
        if (v := line.get(key))
    ]
    y_low = 10 ** math.floor(math.log10(max(0.5, min(latencies, default=1))))
    y_high = 10 ** math.ceil(math.log10(max(latencies, default=100)))
    x_low, x_high = rates[0] / 1.5, rates[-1] * 1.5

    def px(rate: float) -> float:
        span = math.log10(x_high) - math.log10(x_low)
        return left + (math.log10(rate) - math.log10(x_low)) / span * (width - left - right)

    def py(ms: float) -> float:
        span = math.log10(y_high) - math.log10(y_low)
        return (
            height - bottom - (math.log10(ms) - math.log10(y_low)) / span * (height - top - bottom)
        )

    decade = y_low
    while decade <= y_high:
        y = py(decade)
        canvas.line(left, y, width - right, y, GREY)
        label = f"{decade:g}"
        canvas.text(left - 12 - text_width(label), round(y) - 7, label)
        decade *= 10
    for rate in rates:
        x = px(rate)
        canvas.line(x, top, x, height - bottom, GREY)
        label = f"{rate:g}"
        canvas.text(round(x) - text_width(label) // 2, height - bottom + 12, label)
    canvas.line(left, height - bottom, width - right, height - bottom, BLACK, 2)
    canvas.line(left, top, left, height - bottom, BLACK, 2)
    title = "latency, send to receipt (ms, log) against offered load (msgs/s)"
    canvas.text((width - text_width(title)) // 2, 20, title)
    axis = "offered load, msgs/s, 1000 sockets on one process"
    canvas.text((width - text_width(axis)) // 2, height - bottom + 38, axis)

    for key, colour, dash in (
        ("relay_p99_ms", RELAY, 0),
        ("relay_p50_ms", RELAY, 6),
        ("p99_ms", PROJECT, 0),
        ("p50_ms", PROJECT, 6),
    ):
        series = [
            (px(line["offered_rate"]), py(max(line[key], y_low)))
            for line in sorted(points, key=lambda line: line["offered_rate"])
            if line.get(key)
        ]
        for (x0, y0), (x1, y1) in itertools.pairwise(series):
            canvas.line(x0, y0, x1, y1, colour, 3 if not dash else 2, dash)
        for x, y in series:
            canvas.box(round(x), round(y), 3, colour)

    for i, (label, colour, dash) in enumerate(
        (
            ("project p99", PROJECT, 0),
            ("bare channels relay p99", RELAY, 0),
            ("project p50", PROJECT, 6),
            ("bare channels relay p50", RELAY, 6),
        )
    ):
        x = left + (i % 2) * 360
        y = height - 34 + (i // 2) * 18
        canvas.line(x, y + 6, x + 30, y + 6, colour, 3 if not dash else 2, dash)
        canvas.text(x + 38, y, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(canvas.png())
