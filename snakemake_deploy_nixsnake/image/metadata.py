"""What an image says about itself: the metadata object inside every SIF (and a copy at
``/.nixsnake/metadata.json`` in the squashfs).

Only things the image id covers go in -- not the env file's name or path, not the
nixsnake version, not a time -- so one id always means one sequence of bytes. It is read
back without starting a container: ``nixsnake inspect``, the plugin's
``contains_executable``, the store's identity check, ``doctor``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ImageMetadata:
    image_id: str
    image_format: int
    env: dict[str, Any]  # the normalized env file
    lock: dict[str, Any]  # the lock it was built from
    env_root: str  # the environment's store path
    executables: tuple[str, ...]  # commands on the image's PATH
    store_paths: tuple[str, ...]  # the closure
    compression: str
    labels: dict[str, str] = field(default_factory=dict)  # what `apptainer inspect` shows
    #: the version of the image's glibc (the newest GLIBC_x.y its libc.so.6 defines): host
    #: libraries and tools apptainer binds in must not need a newer one. "" when unknown
    #: (images of format 2 do not record it).
    glibc: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImageMetadata:
        """Raises ValueError naming the first field that is missing or of the wrong type."""
        types = {"image_id": str, "image_format": int, "env": dict, "lock": dict, "env_root": str,
                 "executables": list, "store_paths": list, "compression": str, "labels": dict}  # fmt: skip
        for name, t in types.items():
            if name not in data:
                raise ValueError(f"'{name}' is missing")
            if not isinstance(data[name], t) or isinstance(data[name], bool):
                raise ValueError(f"'{name}' is not a {t.__name__}")
        return cls(
            image_id=data["image_id"],
            image_format=data["image_format"],
            env=data["env"],
            lock=data["lock"],
            env_root=data["env_root"],
            executables=tuple(str(x) for x in data["executables"]),
            store_paths=tuple(str(x) for x in data["store_paths"]),
            compression=data["compression"],
            labels={str(k): str(v) for k, v in data["labels"].items()},
            glibc=str(data.get("glibc") or ""),
        )

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
