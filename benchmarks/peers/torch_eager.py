"""Peer: the script an engineer would write with PyTorch: a Dataset and a DataLoader decoding
with Pillow, EfficientNet-Lite0 in eager mode, rows collected and written to Parquet at the end.

    python benchmarks/peers/torch_eager.py TREE OUT.parquet
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from lite0_torch import pretrained
from PIL import Image
from torch.utils.data import DataLoader, Dataset

LABELS = ["male_trousers", "female_trousers", "male_jeans", "female_jeans"]


class Images(Dataset):
    def __init__(self, root: Path):
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = Image.open(self.paths[i]).convert("RGB").resize((224, 224), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, np.float32).transpose(2, 0, 1).copy()), str(self.paths[i])


def main(root: str, out: str) -> None:
    torch.set_num_threads(2)
    model = pretrained(len(LABELS))
    rows = {"path": [], "label": [], "confidence": []}
    with torch.inference_mode():
        for pixels, paths in DataLoader(Images(Path(root)), batch_size=32, num_workers=2):
            probs, _ = model(pixels)
            confidence, index = probs.max(dim=1)
            rows["path"] += list(paths)
            rows["label"] += [LABELS[i] for i in index.tolist()]
            rows["confidence"] += confidence.tolist()
    pq.write_table(pa.table(rows), out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
