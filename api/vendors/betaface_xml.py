"""Betaface v1 XML flavour: POST /service.svc/<Function> with an application/xml body.

Only a mapping: the XML request becomes the v1 JSON function's own request model, the very same handler
runs (api/v1.py, api/recognition.py, api/faces.py), and its JSON answer is written as the documented
XML type. Betaface's service was WCF: responses carry no default namespace, `xmlns:i` for `i:nil`,
the base members (int_response, string_response) first and the others in alphabetical order, lists as
a container element holding one element per item (FaceInfo, PointInfo, TagInfo, ...).
Untrusted input is parsed with defusedxml (no DTDs, entities or external references) after a size check.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import ParseError
from defusedxml.ElementTree import fromstring as parse_xml
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from api.deps import Db
from facequeue.settings import get_settings
from schema.errors import ErrorCode, FacequeueError

PREFIX = "/service.svc"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ARRAYS = "http://schemas.microsoft.com/2003/10/Serialization/Arrays"
MEDIA_TYPE = "application/xml; charset=utf-8"
SMALL_REQUEST_BYTES = 1024 * 1024  # every function but the upload ones carries ids and names only

# function → (request root element, response type). The request roots are the ones Betaface's help page
# and clients use; a request is read by its URL, so a different root element is not refused.
FUNCTIONS: dict[str, tuple[str, str]] = {
    "UploadNewImage_File": ("ImageRequestBinary", "BetafaceImageResponse"),
    "UploadNewImage_Url": ("ImageRequestUrl", "BetafaceImageResponse"),
    "GetImageInfo": ("ImageInfoRequestUid", "BetafaceImageInfoResponse"),
    "GetImageFileInfo": ("ImageInfoRequestChecksum", "BetafaceImageInfoResponse"),
    "Faces_SetPerson": ("FacesSetPersonRequest", "BetafaceResponse"),
    "Faces_Recognize": ("FacesRecognizeRequest", "BetafaceRecognizeRequestResponse"),
    "GetRecognizeResult": ("RecognizeResultRequest", "BetafaceRecognizeResponse"),
    "GetFaceImage": ("FaceRequestId", "BetafaceFaceImageResponse"),
    "Transform_Faces": ("FacesTransformRequest", "BetafaceTransformResponse"),
}
# (vendor field, status, how) for the README's compatibility table (tests check the README against it).
FIELDS = [
    *(
        (f"{function} ({request} → {response})", "supported", "the JSON function's own handler")
        for function, (request, response) in FUNCTIONS.items()
        if function not in ("Faces_SetPerson", "Transform_Faces")
    ),
    ("Faces_SetPerson (→ BetafaceResponse)", "supported", "root element names not shown in the reference"),
    (
        "Transform_Faces (→ BetafaceTransformResponse)",
        "mapped",
        "action 0 (average face) only; names not shown in the reference",
    ),
    ("arrays (guid / string items, Arrays namespace)", "supported", "any item name and namespace is read"),
    ("i:nil", "supported", "read in requests, written for empty values"),
    ("group_results", "not available", "accepted and ignored: persons are always answered per person"),
    (
        "GetImageInfo faces: age, gender, … as FaceInfo members",
        "mapped",
        "as TagInfo items, as the JSON flavour",
    ),
]
# JSON list field → the element name of each item.
ITEMS = {
    "faces": "FaceInfo",
    "points": "PointInfo",
    "user_points": "PointInfo",
    "tags": "TagInfo",
    "faces_matches": "FaceRecognizeInfo",
    "matches": "PersonMatchInfo",
}
BASE_MEMBERS = ("int_response", "string_response")


# Requests ------------------------------------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_request(body: bytes, limit: int) -> dict[str, Any]:
    """Child elements → fields: text, or a list for array elements (<guid>/<string> items), None for i:nil."""
    if len(body) > limit:
        raise FacequeueError(ErrorCode.IMAGE_TOO_LARGE, "XML request larger than the limit")
    try:
        root = parse_xml(body, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise FacequeueError(ErrorCode.INVALID_REQUEST, f"malformed XML: {exc}") from exc
    fields: dict[str, Any] = {}
    for child in root:
        name = _local(child.tag)
        if child.get(f"{{{XSI}}}nil") == "true":
            fields[name] = None
        elif len(child):
            fields[name] = [(item.text or "").strip() for item in child]
        else:
            fields[name] = (child.text or "").strip()
    return fields


# Responses -----------------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _fill(element: ET.Element, data: dict[str, Any]) -> None:
    keys = [k for k in BASE_MEMBERS if k in data] + sorted(k for k in data if k not in BASE_MEMBERS)
    for key in keys:
        _add(element, key, data[key])


def _add(parent: ET.Element, name: str, value: Any) -> None:
    child = ET.SubElement(parent, name)
    if value is None:
        child.set("i:nil", "true")
    elif isinstance(value, dict):
        _fill(child, value)
    elif isinstance(value, list):
        item_name = ITEMS.get(name)
        for item in value:
            if item_name is None:  # a list of plain values: a WCF string array
                ET.SubElement(child, "string", {"xmlns": ARRAYS}).text = _text(item)
            else:
                _fill(ET.SubElement(child, item_name), item)
    else:
        child.text = _text(value)


def render(response_type: str, data: dict[str, Any]) -> bytes:
    root = ET.Element(response_type, {"xmlns:i": XSI})
    _fill(root, data)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def error_response(path: str, code: ErrorCode, message: str) -> Response:
    """Errors keep Betaface's v1 rule: HTTP 200, negative int_response, in the function's response type."""
    function = path.removeprefix(PREFIX + "/")
    response_type = FUNCTIONS.get(function, ("", "BetafaceResponse"))[1]
    data = {"int_response": code.v1, "string_response": message}
    return Response(render(response_type, data), media_type=MEDIA_TYPE)


# Routes --------------------------------------------------------------------------------------------------


def _route(name: str, model: type[BaseModel], handler: Callable[..., dict], response_type: str) -> Callable:
    async def endpoint(request: Request, session: Db) -> Response:
        settings = get_settings()
        uploads = name.startswith("UploadNewImage")
        limit = settings.max_upload_bytes * 4 // 3 + 64 * 1024 if uploads else SMALL_REQUEST_BYTES
        fields = parse_request(await request.body(), limit)
        try:
            body = model.model_validate(fields)
        except ValidationError as exc:
            details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
            raise FacequeueError(ErrorCode.INVALID_REQUEST, details) from exc
        answer = await run_in_threadpool(handler, body=body, request=request, session=session)
        return Response(render(response_type, answer), media_type=MEDIA_TYPE)

    endpoint.__name__ = f"xml_{name}"
    return endpoint


def make_router(json_routes: list[APIRoute]) -> APIRouter:
    """One XML route per v1 JSON function, calling that function's own handler."""
    router = APIRouter(prefix=PREFIX, tags=["v1 (Betaface XML)"], include_in_schema=False)
    for route in json_routes:
        name = route.path.rsplit("/", 1)[-1]
        model = route.dependant.body_params[0].field_info.annotation
        _, response_type = FUNCTIONS[name]  # a new v1 function must say its XML response type here
        router.add_api_route(f"/{name}", _route(name, model, route.endpoint, response_type), methods=["POST"])
    return router
