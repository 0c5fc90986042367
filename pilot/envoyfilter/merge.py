"""MERGE as Istio does it: protobuf merge, except that a Duration is replaced whole, map
entries are replaced rather than merged, and two filters' typed configs of one type merge
field by field (``MergeAnyWithAny``)."""

from __future__ import annotations

from typing import Any

from pilot.envoyfilter.values import message_class

__all__ = ["copy_message", "merge", "merge_typed_config", "replace_items"]

_DURATION = "google.protobuf.Duration"


def merge(dst: Any, src: Any) -> None:
    """Merge ``src`` into ``dst`` (same message type) in place."""
    for field, value in src.ListFields():
        name = field.name
        message_type = field.message_type
        if message_type is not None and message_type.GetOptions().map_entry:
            target = getattr(dst, name)
            if message_type.fields_by_name["value"].message_type is not None:
                for key, item in value.items():
                    target[key].CopyFrom(item)
            else:
                target.update(value)
        elif field.is_repeated:
            getattr(dst, name).extend(value)
        elif message_type is not None:
            target = getattr(dst, name)
            if message_type.full_name == _DURATION:
                target.CopyFrom(value)
            else:
                target.SetInParent()
                merge(target, value)
        else:
            setattr(dst, name, value)


def merge_typed_config(dst: Any, src: Any) -> bool:
    """Merge the ``Any`` ``src`` into the ``Any`` ``dst`` by unpacking both as ``dst``'s type
    (a user's value may name the type differently, e.g. an older version). False when the
    type cannot be unpacked, leaving ``dst`` unchanged, as Istio does."""
    cls = message_class(dst.type_url.rpartition("/")[2])
    if cls is None:
        return False
    base = cls()
    patch = cls()
    if not dst.Unpack(base):
        return False
    try:
        patch.ParseFromString(src.value)
    except Exception:
        return False
    merge(base, patch)
    dst.Pack(base)
    return True


def copy_message(message: Any) -> Any:
    """A deep copy: patch values are shared by every proxy and must never be mutated."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def replace_items(repeated: Any, items: list[Any]) -> None:
    """Set a repeated message field to ``items`` (which may be its own elements)."""
    copies = [copy_message(item) for item in items]
    del repeated[:]
    repeated.extend(copies)
