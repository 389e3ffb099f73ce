"""SARIF 2.1.0 for GitHub code scanning: one rule per finding kind, one result per finding.

Levels: blocks -> error, port -> warning, info -> note. Locations are relative to the scanned
folder (uriBaseId %SRCROOT%), which is what code scanning expects when the scan runs at the
repository root. Skipped files become tool notifications, so they show up in the upload too.
"""

from __future__ import annotations

from pathlib import Path

from .findings import ScanResult

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {"blocks": "error", "port": "warning", "info": "note"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("anychip")
    except PackageNotFoundError:  # a source checkout: the version is informative only
        return "0.0.0"


def to_sarif(result: ScanResult) -> dict:
    rules, index = [], {}
    for f in result.findings:
        if f.rule not in index:
            index[f.rule] = len(rules)
            rules.append({
                "id": f.rule,
                "name": f.rule.replace("-", " ").title().replace(" ", ""),
                "shortDescription": {"text": f"{f.category}: {f.message}"[:200]},
                "fullDescription": {"text": f"Portable form: {f.portable}"},
                "help": {"text": f"Portable form: {f.portable}"},
                "defaultConfiguration": {"level": LEVELS[f.severity]},
                "properties": {"category": f.category, "tags": ["portability", f.category]},
            })
    results = []
    for f in result.findings:
        text = f"{f.message} [{f.severity}]. Portable form: {f.portable}"
        if f.target_note:
            text += f" ({f.target_note})"
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": LEVELS[f.severity],
            "message": {"text": text},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": f.path, "uriBaseId": "%SRCROOT%"},
                "region": {"startLine": f.line, "startColumn": f.column,
                           "snippet": {"text": f.code}},
            }}],
            "partialFingerprints": {"anychipScan/v1": f"{f.rule}:{f.path}:{f.code}"},
            "properties": {"severity": f.severity, "category": f.category, "api": f.api,
                           "fixable": f.fixable},
        })
    root = Path(result.root).resolve()
    base = root if root.is_dir() else root.parent
    notifications = [{"level": "warning", "message": {"text": f"skipped: {s.reason}"},
                      "locations": [{"physicalLocation": {"artifactLocation": {
                          "uri": s.path, "uriBaseId": "%SRCROOT%"}}}]}
                     for s in result.skipped]
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "anychip-scan", "version": _version(),
                                "rules": rules}},
            "originalUriBaseIds": {"%SRCROOT%": {"uri": base.as_uri() + "/"}},
            "invocations": [{"executionSuccessful": True,
                             "toolExecutionNotifications": notifications}],
            "results": results,
            "properties": {"judgedAgainst": result.judged_against,
                           "blockingByTarget": result.blocking_by_target},
        }],
    }
