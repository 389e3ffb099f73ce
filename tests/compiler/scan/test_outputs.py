"""Outputs: JSON, Markdown and SARIF 2.1.0 (checked against a schema of its required fields)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
from anychip.compiler.scan.report import as_json, render_markdown, render_text
from anychip.compiler.scan.sarif import to_sarif
from anychip.compiler.scan.targets import judge, select
from anychip.compiler.scan.walk import scan_path

MIXED = Path(__file__).parent / "fixtures" / "mixed"

# The parts of the OASIS SARIF 2.1.0 schema that GitHub code scanning requires of an upload.
_LOCATION = {
    "type": "object", "required": ["physicalLocation"],
    "properties": {"physicalLocation": {
        "type": "object", "required": ["artifactLocation"],
        "properties": {
            "artifactLocation": {"type": "object", "required": ["uri"],
                                 "properties": {"uri": {"type": "string", "minLength": 1}}},
            "region": {"type": "object", "required": ["startLine"], "properties": {
                "startLine": {"type": "integer", "minimum": 1},
                "startColumn": {"type": "integer", "minimum": 1}}}}}}}
SARIF_REQUIRED = {
    "type": "object", "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "runs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["tool", "results"],
            "properties": {
                "tool": {"type": "object", "required": ["driver"], "properties": {
                    "driver": {"type": "object", "required": ["name"], "properties": {
                        "name": {"type": "string"},
                        "rules": {"type": "array", "items": {
                            "type": "object", "required": ["id"]}}}}}},
                "results": {"type": "array", "items": {
                    "type": "object", "required": ["message", "ruleId", "locations"],
                    "properties": {
                        "message": {"type": "object", "required": ["text"]},
                        "level": {"enum": ["none", "note", "warning", "error"]},
                        "locations": {"type": "array", "minItems": 1, "items": _LOCATION}}}}}}},
    },
}


def _result(target=None):
    result = scan_path(MIXED)
    judge(result, select(target, None))
    return result


def test_sarif_is_valid_and_maps_every_finding():
    result = _result("ascend-910")
    sarif = json.loads(json.dumps(to_sarif(result)))  # what the file will hold
    jsonschema.validate(sarif, SARIF_REQUIRED)
    run = sarif["runs"][0]
    assert len(run["results"]) == len(result.findings)
    rules = run["tool"]["driver"]["rules"]
    assert len({r["id"] for r in rules}) == len(rules)
    for res, f in zip(run["results"], result.findings):
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"] == f.rule
        region = res["locations"][0]["physicalLocation"]["region"]
        assert (region["startLine"], region["startColumn"]) == (f.line, f.column)
        assert res["level"] == {"blocks": "error", "port": "warning", "info": "note"}[f.severity]
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in run["results"]}
    assert "csrc/kernel.cu" in uris and all(not u.startswith("/") for u in uris)
    assert run["properties"]["blockingByTarget"]["ascend-910"] == result.counts()["blocks"]


def test_json_and_text_and_markdown_agree_on_counts():
    result = _result()
    data = as_json(result)
    assert data["summary"]["total"] == len(data["findings"]) == len(result.findings)
    assert data["summary"]["blocks"] == sum(f["severity"] == "blocks" for f in data["findings"])
    assert data["exit_code"] == 1 and data["files"] == 10
    text = render_text(result)
    counts = result.counts()
    assert (f"{len(result.findings)} findings: {counts['blocks']} blocks, {counts['port']} port, "
            f"{counts['info']} info") in text
    assert "train.py:30:9  port    tc.synchronize()" in text  # file:line:col, severity, code
    md = render_markdown(result)
    assert md.count("\n| ") - md.count("\n| line:col") == len(result.findings)
    assert "## `csrc/kernel.cu` (1)" in md
