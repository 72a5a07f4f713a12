"""Load CloudFormation/SAM YAML templates into plain dicts, offline.

PyYAML does not know CloudFormation's short-form intrinsic tags (`!Ref`, `!Sub`, ...).
This loader maps every one of them to its long `{"Fn::X": ...}` / `{"Ref": ...}` form,
which is what the SAM translator and most assertions expect.

    from tests.cfn_yaml import load_template
    template = load_template("template.yaml")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

# Short tag -> long key. `!GetAtt a.b` is special-cased (string form -> [a, b]).
_INTRINSICS = {
    "Ref": "Ref",
    "Condition": "Condition",
    "And": "Fn::And",
    "Base64": "Fn::Base64",
    "Cidr": "Fn::Cidr",
    "Equals": "Fn::Equals",
    "FindInMap": "Fn::FindInMap",
    "GetAtt": "Fn::GetAtt",
    "GetAZs": "Fn::GetAZs",
    "If": "Fn::If",
    "ImportValue": "Fn::ImportValue",
    "Join": "Fn::Join",
    "Length": "Fn::Length",
    "Not": "Fn::Not",
    "Or": "Fn::Or",
    "Select": "Fn::Select",
    "Split": "Fn::Split",
    "Sub": "Fn::Sub",
    "ToJsonString": "Fn::ToJsonString",
    "Transform": "Fn::Transform",
}


class CfnYamlLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation short-form intrinsic functions."""


def _construct_intrinsic(long_name: str):
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
            if long_name == "Fn::GetAtt":
                # `!GetAtt Resource.Attribute` (the attribute may itself contain dots).
                resource, _, attribute = str(value).partition(".")
                value = [resource, attribute]
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {long_name: value}

    return construct


for _short, _long in _INTRINSICS.items():
    CfnYamlLoader.add_constructor(f"!{_short}", _construct_intrinsic(_long))


def _no_timestamps() -> None:
    # CloudFormation treats unquoted dates (e.g. a schedule StartDate) as strings, not datetimes.
    # Build a new dict for this class only: mutating the inherited one would change yaml.SafeLoader globally.
    CfnYamlLoader.yaml_implicit_resolvers = {
        first_char: [(tag, regexp) for tag, regexp in entries if tag != "tag:yaml.org,2002:timestamp"]
        for first_char, entries in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_no_timestamps()


def loads(text: str) -> dict[str, Any]:
    """Parse CloudFormation YAML text into a dict."""
    return yaml.load(text, Loader=CfnYamlLoader)  # noqa: S506 - SafeLoader subclass


def load_template(path: str | Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML file into a dict."""
    return loads(Path(path).read_text(encoding="utf-8"))
