"""Conditional requests (RFC 9110 §13): ETags from resource versions, and their preconditions.

    tag = entity_tag("p", caller.id, version)             # '"p42.3"'
    if fresh(request.headers, tag):                        # If-None-Match: 304, no body
        return not_modified(tag)
    pre = Precondition.of(request.headers, "p", caller.id, required=True)  # 428 if absent
    pre.check(version, updated_at)                         # 412 unless it holds

A mutable resource has a ``version`` column that a trigger bumps whenever its
representation changes (migration 0007); its ETag is that version, prefixed with the
resource's kind and the owner's id. The owner is in the tag because ``/users/me`` names a
different resource for each token: a client that switches accounts must never get a 304
for the other account's copy. Tags are strong, so they serve ``If-Match`` (which compares
strongly, §13.1.1) as well as ``If-None-Match``.

``If-Unmodified-Since`` is honoured against ``updated_at`` to the second (an HTTP-date has
no finer resolution) and ignored when ``If-Match`` is present (§13.1.4). No response
carries ``Last-Modified``: two writes within one second would share it, so the ETag is
the precise tool and the date only a convenience for clients that already send it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from starlette.datastructures import Headers
from starlette.responses import Response

from loopwise.service.exceptions import PreconditionFailed, PreconditionRequired

__all__ = ["Precondition", "entity_tag", "fresh", "not_modified"]

# One entity-tag of a list (RFC 9110 §8.8.3): optional W/, then a quoted opaque string.
_TAG = re.compile(r'\s*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"\s*(?:,|$)')


def entity_tag(kind: str, owner: int, version: int) -> str:
    """The strong ETag of version ``version`` of ``owner``'s resource ``kind``."""
    return f'"{kind}{owner}.{version}"'


def _tags(value: str) -> list[tuple[bool, str]] | None:
    """``(weak, opaque)`` pairs of an If-Match / If-None-Match list; None for ``*``."""
    if value.strip() == "*":
        return None
    tags = []
    position = 0
    while position < len(value):
        match = _TAG.match(value, position)
        if match is None:  # not a list of entity-tags: it names no current version
            break
        tags.append((match[1] is not None, match[2]))
        position = match.end()
    return tags


def fresh(headers: Headers, tag: str) -> bool:
    """Whether ``If-None-Match`` names ``tag`` (weak comparison, §13.1.2) or is ``*``."""
    value = headers.get("if-none-match")
    if value is None:
        return False
    tags = _tags(value)
    return tags is None or any(opaque == tag[1:-1] for _, opaque in tags)


def not_modified(tag: str) -> Response:
    """The 304 answer: no body, and the current ``ETag`` (§15.4.5)."""
    return Response(status_code=304, headers={"ETag": tag})


def _http_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None  # not an HTTP-date: the header is ignored (§13.1.4)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Precondition:
    """What a write's ``If-Match`` / ``If-Unmodified-Since`` require of the resource.

    ``versions`` are those ``If-Match`` names for this resource (``None``: any version, from
    ``*`` or no ``If-Match`` at all); a tag of another resource or a weak one names none.
    """

    kind: str
    owner: int
    versions: frozenset[int] | None
    unmodified_since: datetime | None

    @classmethod
    def of(cls, headers: Headers, kind: str, owner: int, *, required: bool) -> Precondition:
        """Parse the preconditions of a write to ``owner``'s ``kind`` resource.

        Raises:
            PreconditionRequired: ``required`` and the request names no precondition.
        """
        if_match = headers.get("if-match")
        since = None if if_match is not None else _http_date(headers.get("if-unmodified-since"))
        if required and if_match is None and since is None:
            raise PreconditionRequired(
                "This write replaces the whole resource: send the ETag you read in If-Match "
                "(or `If-Match: *` to overwrite whatever is there)."
            )
        versions: frozenset[int] | None = None
        if if_match is not None:
            tags = _tags(if_match)
            if tags is not None:
                prefix = f"{kind}{owner}."
                versions = frozenset(
                    int(opaque[len(prefix) :])
                    for weak, opaque in tags
                    if not weak and opaque.startswith(prefix) and opaque[len(prefix) :].isdigit()
                )
        return cls(kind, owner, versions, since)

    def holds(self, version: int, updated_at: datetime | None) -> bool:
        """Whether the resource at ``version``, last changed at ``updated_at``, satisfies it.

        ``updated_at`` is None for a resource never written (it has no modification date,
        so ``If-Unmodified-Since`` does not apply, §13.1.4).
        """
        if self.versions is not None and version not in self.versions:
            return False
        since = self.unmodified_since
        return since is None or updated_at is None or updated_at.replace(microsecond=0) <= since

    def check(self, version: int, updated_at: datetime | None) -> None:
        """Raise :class:`PreconditionFailed` (with the current ``ETag``) unless :meth:`holds`."""
        if not self.holds(version, updated_at):
            raise PreconditionFailed(
                "The resource changed since the version you name; read it again and retry.",
                headers={"ETag": entity_tag(self.kind, self.owner, version)},
            )
