"""Persons and namespaces: `name@namespace` parsing and face assignment, shared by api and workers."""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from schema.errors import ErrorCode, FacequeueError
from schema.tables import Face, Namespace, Person, utcnow

MAX_NAME, MAX_NAMESPACE = 200, 60
PUNCTUATION = frozenset(" .-'_")
ALL = "all"
RANDOM = "random"


@dataclass(frozen=True)
class PersonId:
    name: str  # "all" means every person of the namespace (as a recognition target)
    namespace: str  # "" is the tenant's default namespace

    def __str__(self) -> str:
        return f"{self.name}@{self.namespace}"


def _allowed(part: str) -> bool:
    """What people are called: letters and marks of any script, digits, spaces and . - ' _"""
    return all(ch in PUNCTUATION or unicodedata.category(ch)[0] in "LMN" for ch in part)


def _namespace_ok(namespace: str) -> bool:
    return len(namespace) <= MAX_NAMESPACE and _allowed(namespace)


def parse_person_id(text: str) -> PersonId:
    """`name@namespace` (NFC-normalised); a superset of Betaface's rule, e.g. `Chen Shui-bian@news`."""
    name, _, namespace = unicodedata.normalize("NFC", text.strip()).partition("@")
    name, namespace = name.strip(), namespace.strip()
    if not (0 < len(name) <= MAX_NAME and _allowed(name) and _namespace_ok(namespace)):
        raise FacequeueError(
            ErrorCode.INVALID_PERSON_ID,
            f"bad person id {text[:80]!r}: name@namespace, name 1-{MAX_NAME} and namespace 0-{MAX_NAMESPACE} "
            "characters of letters, digits, spaces and . - ' _",
        )
    return PersonId(name, namespace)


def parse_namespace(text: str) -> str:
    """A namespace on its own (`?namespace=`), by the rule of the part after `@` in a person id."""
    namespace = unicodedata.normalize("NFC", text.strip())
    if not _namespace_ok(namespace):
        raise FacequeueError(
            ErrorCode.INVALID_PERSON_ID,
            f"bad namespace {text[:80]!r}: 0-{MAX_NAMESPACE} characters of letters, digits, spaces and . - ' _",
        )
    return namespace


def assignable_person_id(text: str) -> PersonId:
    """A person id faces may be assigned to (`all` names every person and cannot be)."""
    pid = parse_person_id(text)
    if pid.name == ALL:
        raise FacequeueError(ErrorCode.INVALID_PERSON_ID, "'all' names every person; it cannot be assigned")
    return pid


def _get_or_create(session: Session, model: type, values: dict, keys: list[str]) -> int:
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(model).values(**values).on_conflict_do_nothing(index_elements=keys))
    return session.execute(select(model.id).filter_by(**{k: values[k] for k in keys})).scalar_one()


def namespace_id(session: Session, tenant_id: int, name: str, create: bool) -> int | None:
    if create:
        return _get_or_create(
            session, Namespace, {"tenant_id": tenant_id, "name": name}, ["tenant_id", "name"]
        )
    return session.execute(
        select(Namespace.id).where(Namespace.tenant_id == tenant_id, Namespace.name == name)
    ).scalar_one_or_none()


def owned_faces(session: Session, tenant_id: int, face_uids: list[str]) -> list[Face]:
    """The tenant's faces, in the order asked; any unknown uid (or another tenant's) is NOT_FOUND."""
    faces = {
        face.uid: face
        for face in session.execute(
            select(Face).where(Face.uid.in_(face_uids), Face.tenant_id == tenant_id)
        ).scalars()
    }
    if missing := [uid for uid in face_uids if uid not in faces]:
        raise FacequeueError(ErrorCode.NOT_FOUND, f"unknown face uid(s): {', '.join(missing[:5])}")
    return [faces[uid] for uid in face_uids]


def set_person(session: Session, tenant_id: int, face_uids: list[str], person: str) -> str | None:
    """Assign faces to a person (created if new); an empty person id unassigns. Returns the person id."""
    owned_faces(session, tenant_id, face_uids)
    person_row_id = None
    if person.strip():
        pid = assignable_person_id(person)
        if pid.name == RANDOM:
            pid = PersonId(f"random {uuid.uuid4().hex[:12]}", pid.namespace)
        ns = namespace_id(session, tenant_id, pid.namespace, create=True)
        person_row_id = _get_or_create(
            session, Person, {"namespace_id": ns, "name": pid.name}, ["namespace_id", "name"]
        )
        person = str(pid)
    session.execute(
        update(Face)
        .execution_options(synchronize_session=False)
        .where(Face.uid.in_(face_uids), Face.tenant_id == tenant_id)
        .values(person_id=person_row_id, updated_at=utcnow())
    )
    return person if person_row_id else None


def list_persons(session: Session, tenant_id: int, person: str) -> list[dict]:
    """`name@ns` -> that person; `all@ns` -> every person of the namespace; each with its face uids."""
    pid = parse_person_id(person)
    ns = namespace_id(session, tenant_id, pid.namespace, create=False)
    if ns is None:
        return []
    query = select(Person.id, Person.name, Face.uid).outerjoin(Face, Face.person_id == Person.id)
    query = query.where(Person.namespace_id == ns)
    if pid.name != ALL:
        query = query.where(Person.name == pid.name)
    persons: dict[int, dict] = {}
    for person_row_id, name, face_uid in session.execute(query.order_by(Person.name)):
        entry = persons.setdefault(person_row_id, {"person_id": f"{name}@{pid.namespace}", "faces_uuids": []})
        if face_uid:
            entry["faces_uuids"].append(face_uid)
    return list(persons.values())


def check_targets(session: Session, tenant_id: int, targets: list[str]) -> None:
    """Recognition targets must exist when asked for: a face uid of this tenant, `name@ns` of a person with
    enrolled faces, or `all@ns` of a namespace with enrolled faces. Otherwise INVALID_TARGET, naming each
    unknown, malformed or empty one."""
    if not targets:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, "targets must not be empty")
    problems: list[str] = []
    face_targets: list[str] = []
    for target in targets:
        if "@" not in target:
            try:
                face_targets.append(str(uuid.UUID(target)))
            except ValueError:
                problems.append(f"{target[:80]!r} is not a face uid, name@namespace or all@namespace")
            continue
        try:
            pid = parse_person_id(target)
        except FacequeueError as exc:
            problems.append(exc.message)
            continue
        ns = namespace_id(session, tenant_id, pid.namespace, create=False)
        if ns is None:
            problems.append(f"namespace {pid.namespace!r} does not exist")
            continue
        enrolled = select(Face.uid).join(Person, Face.person_id == Person.id).where(Person.namespace_id == ns)
        if pid.name != ALL:
            enrolled = enrolled.where(Person.name == pid.name)
        if session.execute(enrolled.limit(1)).first() is None:
            what = f"namespace {pid.namespace!r}" if pid.name == ALL else f"person {str(pid)!r}"
            problems.append(f"{what} has no enrolled faces")
    if face_targets:
        known = set(
            session.execute(
                select(Face.uid).where(Face.uid.in_(face_targets), Face.tenant_id == tenant_id)
            ).scalars()
        )
        problems += [f"unknown target face {uid}" for uid in face_targets if uid not in known]
    if problems:
        raise FacequeueError(ErrorCode.INVALID_TARGET, "; ".join(problems[:5]))
