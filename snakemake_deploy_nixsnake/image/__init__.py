"""Image writing: skeleton + nix closure -> squashfs -> deterministic SIF.

``skeleton()`` lists the non-store entries, ``pack_squashfs()`` streams closure and
skeleton into mksquashfs, ``write_sif()`` wraps the squashfs (partition first, at
``PARTITION_OFFSET``) and ``read_sif()`` reads an image's header and metadata back.
"""

from __future__ import annotations

from .sif import PARTITION_OFFSET, SifInfo, labels_from_metadata, metadata_json, read_sif, write_sif, write_sif_to
from .skeleton import Entry, skeleton
from .squashfs import COMPRESSIONS, mksquashfs_argv, pack_squashfs

__all__ = [
    "COMPRESSIONS",
    "PARTITION_OFFSET",
    "Entry",
    "SifInfo",
    "labels_from_metadata",
    "metadata_json",
    "mksquashfs_argv",
    "pack_squashfs",
    "read_sif",
    "skeleton",
    "write_sif",
    "write_sif_to",
]
