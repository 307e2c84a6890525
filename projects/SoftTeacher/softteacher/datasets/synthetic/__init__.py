"""Generated datasets: the embedded shapes (the demo's and the tests' data), glyphs (the second
benchmark dataset) and COCO/VOC-sized pictures for the large-scale configs. Deterministic, written
locally; nothing is downloaded."""
