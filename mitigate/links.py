"""Links out of a table's image folder: whether a local image path, its links followed,
still lies inside the folder a table's paths must stay in (``input.image_root``).

:func:`mitigate.tables.resolve_image_path` keeps a row's path inside the folder by its
name alone (``..``, absolute paths); a link inside the folder may still name any file
(an extracted archive's ``img/a.png -> /etc/passwd``), whose first bytes then reached
the manifest and the report as a ``decode_error``'s detail (helper-38). Folder inputs
refuse such links at their listing (:mod:`mitigate.folders`); here each row's path is
checked where the table is read: its folder's real path (cached: the rows of a table
share a few folders) and one ``lstat`` of the file, so a table of a million rows costs
a million ``lstat`` calls, not a million walks of the path.
"""

from __future__ import annotations

import os


class RootGuard:
    """Where a local path under ``root`` really leads, if outside it."""

    def __init__(self, root: str) -> None:
        self.local = "://" not in root
        self.root = os.path.realpath(root) if self.local else root
        self._folders: dict[str, str] = {}

    def escape(self, path: str) -> str | None:
        """The real path ``path`` leads to where that is outside the root; None where
        it stays inside, is not local, or does not exist (its read says so)."""
        if not self.local:
            return None  # object stores have no links
        folder, name = os.path.split(path)
        real_folder = self._folders.get(folder)
        if real_folder is None:
            if len(self._folders) > 4096:  # a table of images in many folders
                self._folders.clear()
            real_folder = self._folders[folder] = os.path.realpath(folder)
        target = os.path.join(real_folder, name)
        try:
            if os.path.islink(target):
                target = os.path.realpath(target)
        except OSError:
            return None
        inside = target == self.root or target.startswith(self.root.rstrip(os.sep) + os.sep)
        return None if inside else target
