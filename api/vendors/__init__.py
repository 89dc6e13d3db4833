"""Drop-in adapters for other vendors' clients: each module maps requests and answers onto the native
service and lists its fields (FIELDS) as supported / mapped / not available.

`python -m api.vendors` prints the README's compatibility tables from those lists.
"""

from __future__ import annotations

VENDORS = {
    "Azure Face v1.0 (`/face/v1.0/…`)": "api.vendors.azure",
    "Face++ v3 (`/facepp/v3/...`)": "api.vendors.facepp",
    "Betaface v1 XML (`/service.svc/<Function>`)": "api.vendors.betaface_xml",
    "Liveness API (`POST /api/v1/face/detect`)": "api.vendors.liveness",
    "Sightcorp F.A.C.E. (`POST /api/detect/`)": "api.vendors.sightcorp",
}
START, END = "<!-- vendor-compatibility:start -->", "<!-- vendor-compatibility:end -->"


def compatibility_markdown() -> str:
    """The README's tables, one per vendor, from each adapter's own FIELDS."""
    from importlib import import_module

    parts = [START]
    for title, module in VENDORS.items():
        fields = import_module(module).FIELDS
        counts = {
            s: sum(1 for _, status, _ in fields if status == s)
            for s in ("supported", "mapped", "not available")
        }
        summary = ", ".join(f"{n} {s}" for s, n in counts.items())
        parts.append(f"\n**{title}**: {summary}.\n")
        parts.append("| field | status | how |\n| --- | --- | --- |")
        parts.extend(f"| {name} | {status} | {how} |" for name, status, how in fields)
    parts.append(END)
    return "\n".join(parts)
