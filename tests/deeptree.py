"""Trees deeper than Python's recursion limit, and their removal: ``shutil.rmtree`` (and so
pytest's clean-up of old temporary folders) recurses once per level and fails on them."""

from __future__ import annotations

import os
from pathlib import Path

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def deep_tree(root: Path, depth: int, files: tuple[str, ...] = ("a.jpg", "z.jpg")) -> Path:
    """``files`` and a subfolder ``d`` at every level, ``depth`` levels; returns the deepest folder."""
    level = root
    for _ in range(depth):
        level.mkdir(parents=True, exist_ok=True)
        for name in files:
            (level / name).write_bytes(b"x" * 3)
        level = level / "d"
    level.mkdir()
    return level


def remove_tree(root: Path) -> None:
    """Delete ``root`` and everything under it with two descriptors at most, at any depth."""
    fd, names = os.open(root, _DIR), []
    while True:
        sub = None
        for entry in os.scandir(fd):
            if entry.is_dir(follow_symlinks=False):
                sub = entry.name
                break
            os.unlink(entry.name, dir_fd=fd)
        if sub is not None:
            names.append(sub)
            fd, old = os.open(sub, _DIR, dir_fd=fd), fd
            os.close(old)
            continue
        if not names:
            os.close(fd)
            os.rmdir(root)
            return
        fd, old = os.open("..", _DIR, dir_fd=fd), fd
        os.close(old)
        os.rmdir(names.pop(), dir_fd=fd)
